"""Files from others are data: cards and checkpoints cannot run code, and an extractor's identity covers
every card field that changes its features."""
import functools
import json
import sys
import textwrap

import lightning.pytorch as pl
import pytest
import timm
import torch

from facefd import FDD, UntrustedCodeError, load_extractor, trusting_code
from facefd.metrics import FrechetDistance
from facefd.metrics.stats import StatisticsFileError
from facefd.models.backbone import factory_spec
from facefd.models.dino.export import export_checkpoint
from facefd.models.extractor import ExtractorFileError, save_extractor
from facefd.models.probe.features import FeatureCache

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture()
def code_dir(tmp_path, monkeypatch):
    """A folder on sys.path with a module that leaves a marker file when imported, and a harmless
    custom backbone factory (the opt-in case)."""
    folder = tmp_path / "code"
    folder.mkdir()
    marker = tmp_path / "MARKER"
    (folder / "evil_facefd_marker.py").write_text(textwrap.dedent(f"""
        import pathlib
        pathlib.Path({str(marker)!r}).write_text("imported")
        def build(**kwargs):
            raise AssertionError("must never be called")
    """))
    (folder / "custom_facefd_backbones.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn
        def tiny(width=8):
            return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    """))
    monkeypatch.syspath_prepend(str(folder))
    yield folder, marker
    for name in ("evil_facefd_marker", "custom_facefd_backbones"):
        sys.modules.pop(name, None)


@pytest.fixture()
def exported(tmp_path):
    torch.manual_seed(0)
    factory = functools.partial(timm.create_model, model_name="test_resnet", pretrained=False, num_classes=0)
    backbone = factory().eval()
    return backbone, save_extractor(backbone, factory_spec(factory), tmp_path / "ext", 96, 32, MEAN, STD)


def edit_card(path, **changes):
    card_path = path.with_suffix(".json")
    card = json.loads(card_path.read_text())
    card.update(changes)
    card_path.write_text(json.dumps(card))


@pytest.mark.parametrize("target", ["os.system", "evil_facefd_marker.build", "builtins.eval"])
def test_card_naming_other_code_is_refused_before_import(exported, code_dir, target):
    _, path = exported
    _, marker = code_dir
    edit_card(path, backbone={"target": target, "kwargs": {"command": "touch pwned"}})
    for load in (lambda: load_extractor(path), lambda: FDD(path), lambda: FDD(path, trust_code=False)):
        with pytest.raises(UntrustedCodeError) as info:
            load()
        message = str(info.value)
        assert str(path.with_suffix(".json")) in message and target in message and "trust_code" in message
    assert not marker.exists() and "evil_facefd_marker" not in sys.modules


def test_timm_spec_that_reads_files_or_hub_is_refused(exported, tmp_path):
    _, path = exported
    edit_card(path, backbone={"target": "timm.create_model",
                              "kwargs": {"model_name": "test_resnet", "num_classes": 0,
                                         "checkpoint_path": str(tmp_path / "x.pth")}})
    with pytest.raises(UntrustedCodeError, match="checkpoint_path"):
        load_extractor(path)
    edit_card(path, backbone={"target": "timm.create_model", "kwargs": {"model_name": "hf-hub:someone/model"}})
    with pytest.raises(UntrustedCodeError, match="not a timm model"):
        load_extractor(path)


def test_opt_in_loads_a_custom_module_factory(tmp_path, code_dir):
    import custom_facefd_backbones

    torch.manual_seed(0)
    factory = functools.partial(custom_facefd_backbones.tiny, width=8)
    backbone = factory().eval()
    path = save_extractor(backbone, factory_spec(factory), tmp_path / "custom", 8, 16, MEAN, STD)
    assert json.loads(path.with_suffix(".json").read_text())["backbone"]["target"] == "custom_facefd_backbones.tiny"
    with pytest.raises(UntrustedCodeError, match="custom_facefd_backbones.tiny"):
        load_extractor(path)
    x = torch.rand(2, 3, 16, 16)
    want = backbone((x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1))
    torch.testing.assert_close(load_extractor(path, trust_code=True)(x), want)
    with trusting_code():
        torch.testing.assert_close(load_extractor(path)(x), want)
    with trusting_code(), pytest.raises(UntrustedCodeError):  # an explicit False wins over the context
        load_extractor(path, trust_code=False)


def _dino_checkpoint(tmp_path, **hparam_changes):
    from facefd.models.dino import DINOModule

    backbone = functools.partial(timm.create_model, model_name="test_resnet", pretrained=False, num_classes=0)
    optimizer = functools.partial(torch.optim.AdamW, lr=1e-3)
    module = DINOModule(backbone, optimizer, head={"out_dim": 16, "hidden_dim": 16, "bottleneck_dim": 8},
                        local_crops_number=2, input_size=32)
    hparams = dict(module.hparams)
    hparams.update(hparam_changes)
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": hparams, "epoch": 0, "global_step": 0,
                "pytorch-lightning_version": pl.__version__}, path)
    return path


def test_checkpoint_naming_other_code_is_refused(tmp_path, code_dir):
    from facefd.models.dino import DINOModule

    _, marker = code_dir
    evil = {"target": "evil_facefd_marker.build", "kwargs": {}}
    for changes in ({"backbone": evil}, {"optimizer": evil}, {"backbone": evil, "trust_code": True}):
        ckpt = _dino_checkpoint(tmp_path, **changes)
        with pytest.raises(UntrustedCodeError, match="evil_facefd_marker.build"):
            export_checkpoint(ckpt, tmp_path / "out")
        with pytest.raises(UntrustedCodeError):
            DINOModule.load_from_checkpoint(ckpt, map_location="cpu")
    assert not marker.exists() and not (tmp_path / "out").exists()
    # the reference checkpoint exports; a custom backbone exports only with the caller's opt-in
    assert export_checkpoint(_dino_checkpoint(tmp_path), tmp_path / "ok").exists()
    custom = {"target": "custom_facefd_backbones.tiny", "kwargs": {"width": 8}}
    ckpt = _dino_checkpoint(tmp_path, backbone=custom)
    with pytest.raises(UntrustedCodeError):
        export_checkpoint(ckpt, tmp_path / "custom")
    with pytest.raises(RuntimeError):  # trusted now: it gets as far as the weights, which are test_resnet's
        export_checkpoint(ckpt, tmp_path / "custom", trust_code=True)


@pytest.mark.parametrize("change", [{"input_size": 24}, {"mean": [0.5, 0.5, 0.5]}, {"std": [0.5, 0.5, 0.5]},
                                    {"backbone": {"target": "timm.create_model",
                                                  "kwargs": {"model_name": "test_resnet", "num_classes": 0,
                                                             "global_pool": "max"}}}])
def test_fingerprint_covers_every_field_that_changes_features(exported, tmp_path, change):
    _, path = exported
    before = FrechetDistance(load_extractor(path), normalize=True)
    torch.manual_seed(1)
    before.update(torch.rand(6, 3, 32, 32), real=True)
    reference = before.save_reference(tmp_path / "ref.npz")
    cache = FeatureCache(tmp_path / "cache")
    files = [tmp_path / f"{i}.png" for i in range(3)]
    for f in files:
        f.write_bytes(b"x")
    key_before = cache.key(load_extractor(path), files)

    edit_card(path, **change)
    changed = load_extractor(path)
    assert changed.fingerprint != before.fingerprint
    with pytest.raises(StatisticsFileError, match="another extractor"):
        FrechetDistance(changed).load_reference(reference)
    assert cache.key(changed, files) != key_before
    # the untouched card still matches its own statistics
    edit_card(path, **{k: json.loads(json.dumps(v)) for k, v in before.extractor.card.items() if k in change})
    FrechetDistance(load_extractor(path)).load_reference(reference)


@pytest.mark.parametrize("change,problem", [({"backbone": None}, "lacks"), ({"input_size": "32"}, "input_size"),
                                            ({"std": [0.2, 0.0, 0.2]}, "std"), ({"resize": "nearest"}, "resize"),
                                            ({"weights": "../x.safetensors"},
                                                                                 "file name")])
def test_bad_card_names_the_file_and_the_field(exported, change, problem):
    _, path = exported
    card_path = path.with_suffix(".json")
    card = json.loads(card_path.read_text())
    card.update(change)
    card = {k: v for k, v in card.items() if v is not None}
    card_path.write_text(json.dumps(card))
    with pytest.raises(ExtractorFileError, match=problem) as info:
        load_extractor(path)
    assert str(card_path) in str(info.value)


def test_truncated_weights_name_the_file(exported):
    _, path = exported
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    edit_card(path, sha256="")  # no checksum to catch it first
    with pytest.raises(ExtractorFileError, match="extractor.safetensors"):
        load_extractor(path)
