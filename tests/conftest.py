"""Shared fixtures: a small sample face set and Hydra configs for tiny, fast runs."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

import facefd.utils.hydra  # noqa: F401  (resolvers)
from facefd.data.sample_faces import generate_sample_faces

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# A DINO small enough for a CPU test: timm's 96-d test_resnet, 32 px crops, tiny head, 3 batches of 8.
TINY_TRAIN = [
    # the quick recipe on a tiny ResNet (the default backbone is a ViT; a test that picks its own
    # backbone group drops this choice, see compose_train)
    "backbone=resnet18",
    "backbone.model_name=test_resnet",
    "model.head.out_dim=128",
    "model.head.hidden_dim=64",
    "model.head.bottleneck_dim=32",
    "data.train_transform.global_crop_size=32",
    "data.train_transform.local_crop_size=16",
    "data.train_transform.local_crops_number=2",
    "data.batch_size=8",
    "data.num_workers=0",
    # float32: the default preset's auto-bf16 would autocast on a CPU with native bf16, and oneDNN's bf16
    # weight gradient of a stride-2 conv on 1x1 maps (16 px crops here) is intermittently non-finite
    "precision=32-true",
    "data.num_images=120",
    "data.image_size=32",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=3",
    "trainer.log_every_n_steps=1",
    "callbacks.rich_progress_bar=null",
    "callbacks.model_summary=null",
]


@pytest.fixture(scope="session")
def sample_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data") / "sample_faces"
    return generate_sample_faces(root, num_images=120, image_size=32, seed=0, progress=False)


@pytest.fixture(scope="session")
def probe_root(tmp_path_factory) -> Path:
    """600 sample faces (480/60/60 train/val/test): enough for probe accuracies to mean something."""
    root = tmp_path_factory.mktemp("data") / "probe_faces"
    return generate_sample_faces(root, num_images=600, image_size=32, seed=1, progress=False)


def compose_train(tmp_path: Path, overrides: list[str], sample_root: Path | None = None,
                  tiny_run: bool = True) -> DictConfig:
    """Compose conf/train.yaml as the CLI would, with outputs under ``tmp_path`` (and the TINY_TRAIN
    overrides first unless ``tiny_run`` is False)."""
    GlobalHydra.instance().clear()
    extra = [f"data.root={sample_root}"] if sample_root is not None else []
    tiny = TINY_TRAIN if tiny_run else []
    if any(o.startswith("backbone=") for o in overrides):  # the test's own backbone group, not the tiny ResNet
        tiny = [o for o in tiny if not o.startswith(("backbone=", "backbone.model_name="))]
    if any(o.startswith("data=") for o in overrides):  # a real folder: drop the sample-set generator settings
        tiny = [o for o in tiny if not o.startswith(("data.num_images", "data.image_size"))]
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose(config_name="train", overrides=tiny + extra + overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
        cfg.paths.log_dir = str(tmp_path)
        cfg.hydra.runtime.output_dir = str(tmp_path)
    HydraConfig().set_config(cfg)
    return cfg


@pytest.fixture(autouse=True)
def _quiet_env(monkeypatch):
    monkeypatch.setenv("PYTHONHASHSEED", "0")
    monkeypatch.setenv("WANDB_MODE", "offline")
    yield
    GlobalHydra.instance().clear()


def pytest_configure(config):
    os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def fid_weights(tmp_path_factory) -> Path:
    """The FID Inception architecture with random weights (torch-fidelity's layout), saved as a plain state
    dict under a name of its own (a file named like the standard weights must hash to them)."""
    import torch
    import torch_fidelity.feature_extractor_inceptionv3 as tfi

    patch = pytest.MonkeyPatch()
    patch.setattr(tfi, "load_state_dict_from_url", lambda *a, **k: {})
    patch.setattr(tfi.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd, *a, **k: None)
    torch.manual_seed(0)
    net = tfi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    patch.undo()
    path = tmp_path_factory.mktemp("fid") / "random_inception.pth"
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture
def known_inception(fid_weights, tmp_path, monkeypatch):
    """The table of known weights pointed at the random Inception, served from 127.0.0.1, with an empty
    torch.hub cache: ``feature=2048`` without a file fetches, verifies and caches it as users' runs do."""
    from facefd.utils import weights
    from facefd.utils.files import file_sha256
    from weights_server import WeightsServer

    served = tmp_path / "served"
    served.mkdir()
    spec = weights.KNOWN_WEIGHTS["inception"]
    (served / spec.filename).write_bytes(fid_weights.read_bytes())
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    for variable in (*weights.OFFLINE_VARIABLES, weights.MIRROR_VARIABLE):
        monkeypatch.delenv(variable, raising=False)
    with WeightsServer(served) as server:
        monkeypatch.setitem(weights.KNOWN_WEIGHTS, "inception", weights.KnownWeights(
            url=f"{server.url}/{spec.filename}", sha256=file_sha256(fid_weights), filename=spec.filename,
            aliases=spec.aliases, description=spec.description))
        yield server
