"""``facefd fid``: python -m pytorch_fid's command line and output line, on the fetched (here: served)
FID Inception. Reference: torch-fidelity's ``calculate_metrics`` on the same folders and weights file,
and numpy reading the saved statistics."""
import re

import numpy as np
import pytest
from PIL import Image

from facefd.cli import fid_main

torch_fidelity = pytest.importorskip("torch_fidelity")


def _folder(path, n, seed, scale=255):
    path.mkdir()
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray((rng.random((40, 40, 3)) * scale).astype(np.uint8)).save(path / f"{i}.png")
    return path


def test_fid_prints_pytorch_fids_line_with_torch_fidelitys_value(known_inception, fid_weights, tmp_path, capsys):
    a, b = _folder(tmp_path / "a", 8, 0), _folder(tmp_path / "b", 8, 1, scale=180)
    value = fid_main([str(a), str(b), "--num-workers", "0", "--batch-size", "4"])
    out = capsys.readouterr().out
    assert re.fullmatch(r"FID:  [0-9.e+-]+\n", out)  # print('FID: ', fid_value), as pytorch-fid prints it
    assert float(out.split()[-1]) == value  # how scripts parse pytorch-fid's output
    want = torch_fidelity.calculate_metrics(input1=str(a), input2=str(b), fid=True, cuda=False, verbose=False,
                                            batch_size=4, feature_extractor_weights_path=str(fid_weights))
    assert value == pytest.approx(want["frechet_inception_distance"], rel=1e-4)  # torch-fidelity's sqrtm: float32 side

    stats = tmp_path / "a_stats.npz"
    assert fid_main(["--save-stats", str(a), str(stats), "--num-workers", "0"]) is None
    with np.load(stats) as saved:  # pytorch-fid's format: mu and sigma
        assert saved["mu"].shape == (2048,) and saved["sigma"].shape == (2048, 2048)
    capsys.readouterr()
    assert fid_main([str(stats), str(b), "--num-workers", "0"]) == pytest.approx(value, rel=1e-9)
    assert len(known_inception.requests) == 1  # fetched once, then verified from the cache


def test_dims_and_a_local_weights_file(fid_weights, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FACEFD_OFFLINE", "1")  # a local file needs no network
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_cache"))
    a, b = _folder(tmp_path / "a", 6, 2), _folder(tmp_path / "b", 6, 3, scale=120)
    value = fid_main([str(a), str(b), "--dims", "64", "--weights", f"inception={fid_weights}", "--num-workers", "0"])
    want = torch_fidelity.calculate_metrics(input1=str(a), input2=str(b), fid=True, cuda=False, verbose=False,
                                            feature_layer_fid="64", feature_extractor_weights_path=str(fid_weights))
    assert value == pytest.approx(want["frechet_inception_distance"], rel=1e-4)
    with pytest.raises(SystemExit):
        fid_main([str(a), str(b), "--weights", "clip=x.pt"])
    assert "--weights takes inception=FILE" in capsys.readouterr().err
