"""Checkpoints are data by every road: ``train.py ckpt_path=`` (local file and URL) and
``DINOModule.load_from_checkpoint`` never run a pickled payload, also with
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` (how a torch older than 2.6 behaves by default). Reference: the
payload's own marker file, which a plain ``torch.load(weights_only=False)`` does write (checked here)."""
import os

import pytest
import torch

from conftest import compose_train
from facefd.models.checkpoints import CheckpointError
from facefd.models.dino import DINOModule
from facefd.train import run
from weights_server import WeightsServer


class Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _evil_checkpoint(tmp_path):
    marker, path = tmp_path / "marker", tmp_path / "served" / "evil.ckpt"
    path.parent.mkdir()
    torch.save({"state_dict": {}, "epoch": 0, "hyper_parameters": Payload(marker)}, path)
    return marker, path


def test_the_payload_is_live(tmp_path):
    marker, path = _evil_checkpoint(tmp_path)
    torch.load(path, weights_only=False)
    assert marker.exists()  # so the tests below can fail


@pytest.mark.parametrize("unsafe_default", [False, True])
def test_load_from_checkpoint_never_runs_it(tmp_path, monkeypatch, unsafe_default):
    if unsafe_default:
        monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker, path = _evil_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="refused"):
        DINOModule.load_from_checkpoint(path)
    with pytest.raises(CheckpointError, match="weights_only=False is not offered"):
        DINOModule.load_from_checkpoint(path, weights_only=False)
    assert not marker.exists()


@pytest.mark.parametrize("by_url", [False, True])
def test_resume_never_runs_it(tmp_path, sample_root, monkeypatch, by_url):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker, path = _evil_checkpoint(tmp_path)
    with WeightsServer(path.parent) as server:
        ckpt = f"{server.url}/{path.name}" if by_url else str(path)
        cfg = compose_train(tmp_path / "run", [f"ckpt_path={ckpt}", "callbacks.knn_probe=null"], sample_root)
        with pytest.raises(CheckpointError, match="refused"):
            run(cfg)
        if by_url:
            assert server.requests and set(server.requests) == {f"/{path.name}"}  # it was fetched, and refused
    assert not marker.exists()
