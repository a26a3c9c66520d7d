"""A gloo process group is destroyed before the interpreter tears down (Lightning only does it for NCCL)."""
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import atexit, sys
    import torch.distributed as dist
    from facefd.utils.distributed import destroy_process_group_at_exit

    # registered first, so it runs last: what is left of the group when the interpreter tears down
    atexit.register(lambda: print("initialized at exit:", dist.is_initialized(), flush=True))
    destroy_process_group_at_exit()  # before any group: must not register (nothing to destroy)
    dist.init_process_group("gloo", init_method="file://" + sys.argv[1], rank=0, world_size=1)
    if sys.argv[2] == "register":
        destroy_process_group_at_exit()
        destroy_process_group_at_exit()  # once per process: a second call adds nothing
""")


@pytest.mark.parametrize("mode,left", [("register", "False"), ("none", "True")])
def test_gloo_group_is_destroyed_at_exit(tmp_path, mode, left):
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "store"), mode],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == f"initialized at exit: {left}"
