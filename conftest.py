"""Fixtures of the docstring examples (``pytest`` runs them as doctests): a tiny exported extractor,
its statistics and attribute heads, made once per session in a temporary folder."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def _doctest_files(tmp_path_factory) -> dict[str, str]:
    import timm
    import torch

    from facefd.data.transforms import IMAGENET_MEAN, IMAGENET_STD
    from facefd.metrics.frechet_metric import FrechetDistance
    from facefd.models.extractor import load_extractor, module_fingerprint, save_extractor
    from facefd.models.probe.heads import ProbeHeads
    from facefd.models.probe.predictor import save_heads

    folder = tmp_path_factory.mktemp("doctest")
    torch.manual_seed(0)
    spec = {"target": "timm.create_model", "kwargs": {"model_name": "test_resnet", "num_classes": 0}}
    backbone = timm.create_model(**spec["kwargs"])
    path = save_extractor(backbone, spec, folder / "extractor.safetensors", 96, 32, IMAGENET_MEAN, IMAGENET_STD)
    extractor = load_extractor(path)
    metric = FrechetDistance(extractor, normalize=True)
    metric.update(torch.rand(8, 3, 32, 32), real=True)
    stats = metric.save_reference(folder / "reference.npz")
    heads = ProbeHeads(96, ["Male", "Young"])
    card = heads.card(extractor_fingerprint=module_fingerprint(extractor))
    heads_path = save_heads(heads, folder / "probe_heads.safetensors", card)
    return {"tiny_extractor": str(path), "tiny_stats": str(stats), "tiny_heads": str(heads_path)}


@pytest.fixture(autouse=True)
def _doctest_names(request, doctest_namespace) -> None:
    """Only doctests get the files (building them costs a second)."""
    if isinstance(request.node, pytest.DoctestItem):
        doctest_namespace.update(request.getfixturevalue("_doctest_files"))
