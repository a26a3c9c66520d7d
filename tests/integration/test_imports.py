"""What importing facefd loads: ``import facefd`` and ``facefd --help`` load no torch, ``facefd fd`` no
Lightning (public names load their modules on first use). Checked in fresh interpreters through
``sys.modules``, the interpreter's own record of what was imported; import time is measured in
``bench/import_time.py``, not asserted here."""
import subprocess
import sys

import numpy as np
from PIL import Image

LIGHTNING = "[m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning')]"


def _python(code: str, cwd) -> str:
    proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_import_help_and_fd_load_only_what_they_need(tmp_path):
    """One fresh interpreter, in the order a user meets them: ``import facefd`` and ``facefd --help`` load
    neither torch nor Hydra; a public name loads torch on first use; ``facefd fd`` loads no Lightning; a
    Lightning name (FDDCallback) does load Lightning, so the check can fail."""
    for name, seed in (("a", 0), ("b", 1)):
        (tmp_path / name).mkdir()
        rng = np.random.default_rng(seed)
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(tmp_path / name / f"{i}.png")
    out = _python("import sys, facefd\nfrom facefd.cli import main\nmain(['--help'])\n"
                  "print('torch' in sys.modules, 'hydra' in sys.modules)\n"
                  "assert callable(facefd.frechet_distance) and 'torch' in sys.modules  # loaded on first use\n"
                  "main(['fd', 'a', 'b', '--extractor', 'random:test_resnet', '--num-workers', '0'])\n"
                  f"print('torch' in sys.modules, {LIGHTNING})\n"
                  f"facefd.FDDCallback\nprint(bool({LIGHTNING}))", tmp_path)
    lines = out.strip().splitlines()
    assert "usage: facefd" in out and "False False" in lines  # after import and --help
    fd_line = next(i for i, line in enumerate(lines) if line.startswith("FD: "))
    assert lines.index("False False") < fd_line and lines[-2:] == ["True []", "True"]
