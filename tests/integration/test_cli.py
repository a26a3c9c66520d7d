"""The installed command: a wheel built from this checkout, installed into a fresh virtual environment,
runs `facefd train` and `facefd fd` from an empty folder; `facefd fd` against the Python API, and the
pytorch-fid / clean-fid statistics formats."""
import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT

pytestmark = pytest.mark.slow


def _folder(path: Path, n: int, seed: int, size: int = 24) -> Path:
    path.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path / f"{i}.png")
    return path


def _run(cmd, cwd, **env):
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, **env})
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])
    return proc


def test_wheel_installs_a_working_facefd_command(tmp_path):
    import shutil

    # build from a copy: an in-tree build would leave build/ and *.egg-info in the checkout
    source = tmp_path / "source"
    top_level = {".git", "data", "outputs", "multirun", "build", "dist", ".pytest_cache"}

    def skip(folder, names):
        own = top_level if Path(folder) == ROOT else set()
        return [n for n in names if n in own or n.endswith(".egg-info") or n == "__pycache__"]

    shutil.copytree(ROOT, source, symlinks=True, ignore=skip)
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
          str(source)], tmp_path)
    wheel = next(wheels.glob("facefd-*.whl"))
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    # torch & co. from the environment running the tests (a user's venv or the system's), but not its
    # facefd: a path listed in a .pth file is added to sys.path without processing the .pth files there
    # (the editable install's finder), and the new venv's own site-packages comes first
    site = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path).stdout.strip()
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site) / "facefd-test-deps.pth").write_text("\n".join(sorted(ours)) + "\n")
    _run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-compile", str(wheel)], tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    facefd = [str(env_dir / "bin" / "facefd")]  # the console script the wheel installed
    assert Path(facefd[0]).exists()
    where = _run([str(python), "-c", "import facefd, facefd.cli; print(facefd.__file__); print(facefd.cli.config_dir())"],
                 empty).stdout.split()
    assert where[0].startswith(str(env_dir)) and where[1].startswith(str(env_dir))  # not the checkout
    _run([*facefd, "train", "debug=fast", "data.num_images=60", "data.image_size=32"], empty)
    assert (empty / "data" / "sample_faces_v2" / "facefd_sample.json").exists()  # user data in the cwd
    a, b = _folder(empty / "a", 6, 0), _folder(empty / "b", 6, 1)
    out = _run([*facefd, "fd", str(a), str(b), "--extractor", "random:test_resnet", "--num-workers", "0"], empty)
    assert out.stdout.strip().startswith("FD: ")
    help_text = _run([*facefd, "evaluate", "task=fd", "--cfg", "job"], empty).stdout
    assert "task: fd" in help_text


def _facefd(argv: list[str], capsys) -> tuple[int, str, str]:
    """``facefd ARGV`` in this process (the wheel test above launches the installed command for real)."""
    from facefd.cli import main

    code = 0
    try:
        main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    assert code in (0, 1), captured.err[-3000:]
    return code, captured.out, captured.err


def test_fd_command_matches_the_api_and_writes_peer_formats(tmp_path, capsys, monkeypatch):
    import torch

    from facefd import FrechetDistance
    from facefd.evaluation.folder_stats import folder_statistics
    from facefd.metrics.extractors import timm_extractor
    from facefd.metrics.stats import GaussianStats, StatisticsFileError

    a, b = _folder(tmp_path / "a", 8, 0), _folder(tmp_path / "b", 8, 1)
    monkeypatch.chdir(tmp_path)
    cli = ["fd", "--extractor", "random:test_resnet", "--num-workers", "0"]

    def fd(*args: str) -> float:
        code, out, err = _facefd([*cli, *args], capsys)
        assert code == 0, err[-3000:]
        return float(out.split("FD:")[1])

    printed = fd(str(a), str(b))
    metric = FrechetDistance(timm_extractor("test_resnet", random_init=True), normalize=True)
    sa, sb = folder_statistics(metric, a, num_workers=0), folder_statistics(metric, b, num_workers=0)
    from references import scipy_reference

    want = scipy_reference(sa.mean.numpy(), sa.cov.numpy(), sb.mean.numpy(), sb.cov.numpy())
    assert printed == pytest.approx(want, rel=1e-6)  # scipy's sqrtm loses digits on 8 samples in 512-d
    from facefd.evaluation.folder_stats import distance

    assert printed == pytest.approx(distance(metric, a, b, num_workers=0)["fd"], rel=1e-12)  # printed in full

    # pytorch-fid format: mu/sigma as pytorch-fid reads them, our fingerprint alongside
    out = tmp_path / "a_stats.npz"
    assert _facefd([*cli, "--save-stats", str(out), "--format", "pytorch-fid", str(a)], capsys)[0] == 0
    with np.load(out) as f:  # what pytorch_fid.fid_score reads: f["mu"][:], f["sigma"][:]
        np.testing.assert_allclose(f["mu"][:], sa.mean.numpy(), rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(f["sigma"][:], sa.cov.numpy(), rtol=1e-6, atol=1e-9)
    again = fd(str(out), str(b))
    assert again == pytest.approx(printed, rel=1e-5)

    # a clean-fid / pytorch-fid file without fingerprint: refused unless the user states the extractor
    foreign = tmp_path / "clean_fid_stats.npz"
    np.savez(foreign, mu=sa.mean.numpy(), sigma=sa.cov.numpy())
    with pytest.raises(StatisticsFileError, match="assume-extractor"):
        GaussianStats.load(foreign)
    code, _, err = _facefd([*cli, str(foreign), str(b)], capsys)
    assert code == 1 and err.strip().startswith("error:") and "assume" in err
    assumed = fd("--assume-extractor", str(foreign), str(b))
    assert assumed == pytest.approx(printed, rel=1e-5)
    m = FrechetDistance(timm_extractor("test_resnet", random_init=True), normalize=True)
    m.load_reference(foreign, assume_extractor=True)
    torch.testing.assert_close(m.statistics(True).mean, sa.mean)
