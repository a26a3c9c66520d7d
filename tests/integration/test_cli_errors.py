"""User errors are one line (`error: ...`, exit status 1), found before models load or features are
extracted; HYDRA_FULL_ERROR=1 still shows the traceback. evaluate.py and anonymize.py are launched for
real once each here (the exit status and the last stderr line of a new interpreter); the other cases run
the same scripts in-process."""
import os

import pytest
import torch
from PIL import Image

from facefd.metrics.stats import GaussianStats, StatisticsFileError
from facefd.utils.checks import check_writable
from facefd.utils.errors import OutputLocationError
from runs import run_inprocess, run_script


@pytest.fixture()
def folders(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    Image.new("RGB", (16, 16), (10, 20, 30)).save(one / "a.png")
    for i in range(2):
        Image.new("RGB", (16, 16), (i * 90, 20, 30)).save(two / f"{i}.png")
    (tmp_path / "a_file").write_text("not a folder")
    return one, two


def _one_line_error(proc, *needles):
    assert proc.returncode == 1, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and all(n in last for n in needles), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


# the extractor file named here does not exist: each error must come before it would be loaded
MISSING_EXTRACTOR = "metric.feature_extractor.path=/nonexistent/extractor.safetensors"


def test_single_image_folder_fails_before_the_extractor_loads(tmp_path, folders):
    one, two = folders
    proc = run_script(["evaluate.py", "task=fd", f"a={one}", f"b={two}", MISSING_EXTRACTOR], tmp_path)
    _one_line_error(proc, str(one), "1 image(s)", "at least 2")


def test_unwritable_output_fails_before_the_work(tmp_path, folders):
    _, two = folders
    out = tmp_path / "a_file" / "stats.npz"
    proc = run_inprocess(["evaluate.py", "task=stats", f"data.root={two}", f"out={out}", MISSING_EXTRACTOR], tmp_path)
    _one_line_error(proc, "a_file", "not a folder")
    proc = run_script(["anonymize.py", f"input={two}", f"output={tmp_path / 'a_file' / 'anon'}",
                 "anonymizer.generator.pipe.model=/nonexistent/model"], tmp_path)
    _one_line_error(proc, "a_file")  # about the output, not the missing model


def test_missing_folder_is_one_line_and_full_error_shows_the_traceback(tmp_path, folders):
    _, two = folders
    args = ["evaluate.py", "task=fd", f"a={tmp_path / 'nowhere'}", f"b={two}", MISSING_EXTRACTOR]
    _one_line_error(run_inprocess(args, tmp_path), "nowhere", "does not exist")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        proc = run_inprocess(args, tmp_path)
    finally:
        del os.environ["HYDRA_FULL_ERROR"]
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "ImageFolderError" in proc.stderr


def test_truncated_statistics_file_names_the_file(tmp_path):
    path = GaussianStats(torch.zeros(4, dtype=torch.float64), torch.eye(4, dtype=torch.float64), 10, "fp").save(
        tmp_path / "s.npz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(StatisticsFileError, match=r"s\.npz.*truncated or corrupt"):
        GaussianStats.load(path)


def test_check_writable_refuses_a_read_only_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # as a non-root user on a read-only folder
    with pytest.raises(OutputLocationError, match="not writable"):
        check_writable(tmp_path / "new" / "out.json")


def _images(folder, n=3, broken=False):
    import numpy as np
    from PIL import Image

    folder.mkdir()
    for i in range(n):
        Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(folder / f"{i}.png")
    if broken:
        (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    return folder


@pytest.mark.parametrize("entry,expected", [
    ("fdd", "needs its weights file: fdd@FILE"),
    ("fid:FILE", "unknown extractor 'fid:FILE'; accepted: fdd@FILE"),
    ("dino_imagenet", "needs its weights file: dino_imagenet@FILE"),
    ("timm:resnet18", "timm/resnet18.a1_in1k/model.safetensors) is not in the Hugging Face cache"),
    ("random:resnet-18", "'resnet-18' is not a timm model"),
])
def test_extractor_mistakes_are_one_line_before_anything_loads(tmp_path, capsys, monkeypatch, entry, expected):
    from huggingface_hub import constants

    from facefd.cli import fd_main

    monkeypatch.setenv("FACEFD_OFFLINE", "1")  # timm:NAME without a file is timm's hub copy: offline, the cache
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty_hub"))

    a, b = _images(tmp_path / "a"), _images(tmp_path / "b")
    with pytest.raises(SystemExit) as info:
        fd_main([str(a), str(b), "--extractor", entry])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 1 and err.startswith("error: ") and "\n" not in err and expected in err


def test_cuda_without_cuda_and_the_fd_commands_own_flag(tmp_path, capsys, monkeypatch):
    from facefd.cli import fd_main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    a, b = _images(tmp_path / "a"), _images(tmp_path / "b", broken=True)
    with pytest.raises(SystemExit):
        fd_main([str(a), str(b), "--extractor", "random:test_resnet", "--device", "cuda"])
    err = capsys.readouterr().err.strip()
    assert err == "error: device 'cuda' asked for, but this machine has no usable CUDA GPU; use cpu or auto"
    with pytest.raises(SystemExit):
        fd_main([str(a), str(b), "--extractor", "random:test_resnet", "--num-workers", "0"])
    err = capsys.readouterr().err
    assert "broken.png" in err and "--skip-bad-images" in err and "data.skip_bad_images" not in err


def test_an_output_that_is_a_file_is_one_line_before_anything_loads(tmp_path, monkeypatch):
    """train.py's paths.output_dir and task=export's out: checked before the data, model or checkpoint."""
    from conftest import compose_train
    from facefd.evaluation.tasks import export
    from facefd.train import run

    existing = tmp_path / "a_file"
    existing.write_text("x")
    cfg = compose_train(tmp_path, [])
    cfg.paths.output_dir = str(existing)
    monkeypatch.setattr("facefd.train.instantiate", lambda *a, **k: pytest.fail("something was built"))
    with pytest.raises(OutputLocationError, match="a_file is a file, not a folder"):
        run(cfg)
    from omegaconf import OmegaConf

    with pytest.raises(OutputLocationError, match="a_file is a file, not a folder"):
        export.run(OmegaConf.create({"task": "export", "ckpt_path": str(tmp_path / "never_read.ckpt"), "out": str(existing)}))
