"""Malformed statistics and heads files are one error naming the file and the field, found from the
headers before anything large is read and before any features are extracted. Reference: files built
here with numpy's and safetensors' own writers."""
import io
import json
import zipfile

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from facefd.metrics.stats import GaussianStats, StatisticsFileError
from facefd.models.probe.predictor import HeadsFileError, load_heads


def _npz(path, **arrays):
    meta = arrays.pop("metadata", json.dumps({"fingerprint": "abc"}))
    np.savez(path, metadata=meta, **arrays)
    return path


@pytest.mark.parametrize("arrays,field", [
    (dict(mean=np.float64(1.0), cov=np.eye(1), count=np.int64(5)), "mean has shape ()"),
    (dict(mean=np.zeros(4), cov=np.eye(3), count=np.int64(5)), "cov has shape (3, 3)"),
    (dict(mean=np.zeros(3), cov=np.full((3, 3), np.nan), count=np.int64(5)), "covariance holds NaN"),
    (dict(mean=np.zeros(3), cov=np.eye(3), count=np.arange(3)), "count has shape (3,)"),
    (dict(mean=np.zeros(3), cov=np.eye(3), count=np.int64(5), metadata=np.arange(2)), "metadata has shape (2,)"),
    (dict(mean=np.zeros(3), cov=np.eye(3), count=np.int64(5), metadata="[1, 2]"), "metadata is JSON list"),
])
def test_malformed_arrays_are_one_line_naming_the_field(tmp_path, arrays, field):
    path = _npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(StatisticsFileError) as info:
        GaussianStats.load(path)
    assert field in str(info.value) and str(path) in str(info.value) and "\n" not in str(info.value)


def test_a_small_file_that_decompresses_to_gigabytes_is_refused_from_its_header(tmp_path):
    """A member whose header declares a 4 GB array: refused without reading it (the file is a few KB)."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (23000, 23000)})
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("mean.npy", _npy(np.zeros(23000)))
        archive.writestr("cov.npy", header.getvalue() + bytes(1000))  # the promise, without the payload
    with pytest.raises(StatisticsFileError, match="member 'cov' declares"):
        GaussianStats.load(path)
    honest = tmp_path / "wide.npz"
    with zipfile.ZipFile(honest, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("mean.npy", _npy(np.zeros(20000)))
        archive.writestr("cov.npy", _npy(np.zeros((2, 2))))
    with pytest.raises(StatisticsFileError, match="a vector of 1 to 16384 features"):
        GaussianStats.load(honest)


def _npy(array):
    out = io.BytesIO()
    np.save(out, array)
    return out.getvalue()


def test_a_malformed_npz_stops_facefd_fd_before_the_folder_is_read(tmp_path, capsys):
    from facefd.cli import fd_main

    stats = _npz(tmp_path / "bad.npz", mean=np.zeros(4), cov=np.eye(3), count=np.int64(5))
    folder = tmp_path / "images"
    folder.mkdir()
    with pytest.raises(SystemExit):
        fd_main([str(stats), str(folder / "missing")])
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "bad.npz" in err and "cov has shape (3, 3)" in err  # before the folder


@pytest.mark.parametrize("kind", ["not safetensors", "card not JSON", "card lacks a field", "wrong weights"])
def test_malformed_heads_files_are_one_line(tmp_path, kind):
    path = tmp_path / "probe_heads.safetensors"
    if kind == "not safetensors":
        path.write_bytes(b"\x00" * 64)
    else:
        card = {"card not JSON": "{not json", "card lacks a field": json.dumps({"format": "facefd-probe-heads"}),
                "wrong weights": None}[kind]
        if card is None:
            from facefd.models.probe.heads import ProbeHeads

            card = json.dumps(ProbeHeads(8, ["Male"]).card())
        save_file({"w": torch.zeros(2)}, str(path), metadata={"card": card})
    with pytest.raises(HeadsFileError) as info:
        load_heads(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
