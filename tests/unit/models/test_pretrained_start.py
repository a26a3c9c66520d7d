"""Runs started from released weights (``backbone.weights=``): every layout the field ships, saved by the test
with random weights, gives the run's initial (teacher) features equal to those of the saved network loaded
independently — torchvision's own ResNet for the reference ResNet layout, timm's ViT with the position
embeddings resampled by DINO's formula written out here for the ViT layout."""
from __future__ import annotations

import argparse
import functools
import hashlib
import math
import shutil

import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
from hydra.utils import instantiate

from facefd.models.dino import DINOModule
from facefd.models.pretrained import StartWeightsError

HEAD = dict(out_dim=64, hidden_dim=32, bottleneck_dim=16)
IMAGES = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def module(model_name="resnet18", **backbone):
    """A DINOModule whose backbone config carries the start keys, as backbone.weights=... on the command line."""
    factory = functools.partial(timm.create_model, model_name=model_name, num_classes=0, **backbone)
    return DINOModule(backbone=factory, optimizer=functools.partial(torch.optim.AdamW, lr=1e-3), head=HEAD,
                      local_crops_number=2).eval()


def torchvision_resnet(seed):
    torch.manual_seed(seed)
    net = torchvision.models.resnet18(weights=None)
    for m in net.modules():  # BN statistics that are not the identity, as a trained network's
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    net.fc = torch.nn.Identity()
    return net.eval()


def reference_head(seed, in_dim=512):
    """A DINO head's tensors under the reference's names (mlp.0/2/4, weight-normed last layer)."""
    g = torch.Generator().manual_seed(seed)
    shapes = {"mlp.0.weight": (32, in_dim), "mlp.0.bias": (32,), "mlp.2.weight": (32, 32), "mlp.2.bias": (32,),
              "mlp.4.weight": (16, 32), "mlp.4.bias": (16,), "last_layer.weight_g": (64, 1),
              "last_layer.weight_v": (64, 16)}
    return {k: torch.randn(*s, generator=g) for k, s in shapes.items()}


@pytest.fixture(scope="module")
def main_dino_checkpoint(tmp_path_factory):
    """A main_dino.py checkpoint: DDP-wrapped student (module. prefix), teacher, optimizer, epoch, the
    argparse.Namespace of its arguments, and the loss's centre."""
    student, teacher = torchvision_resnet(1), torchvision_resnet(2)
    checkpoint = {
        "student": {**{f"module.backbone.{k}": v for k, v in student.state_dict().items()},
                    **{f"module.head.{k}": v for k, v in reference_head(1).items()}},
        "teacher": {**{f"backbone.{k}": v for k, v in teacher.state_dict().items()},
                    **{f"head.{k}": v for k, v in reference_head(2).items()}},
        "optimizer": {"state": {}, "param_groups": []}, "epoch": 100,
        "args": argparse.Namespace(arch="resnet50", out_dim=64, epochs=100, lr=0.3),
        "dino_loss": {"center": torch.randn(1, 64, generator=torch.Generator().manual_seed(3))},
    }
    path = tmp_path_factory.mktemp("start") / "checkpoint.pth"
    torch.save(checkpoint, path)
    return path, student, teacher, checkpoint


def test_reference_resnet_layout_starts_the_run_at_torchvisions_features(tmp_path):
    """dino_resnet50_pretrain.pth is a torchvision ResNet state dict without fc: here a ResNet-18 of it."""
    net = torchvision_resnet(0)
    path = tmp_path / "dino_resnet_pretrain.pth"
    torch.save(net.state_dict(), path)
    run = module(weights=str(path))
    with torch.no_grad():
        torch.testing.assert_close(run(IMAGES), net(IMAGES), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(run.student["backbone"](IMAGES), net(IMAGES), rtol=1e-5, atol=1e-5)
    assert run.hparams.start["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert run.hparams.start["layout"] == "state_dict" and run.hparams.start["restored"] == "backbone"
    assert "weights" not in run.hparams.backbone["kwargs"]  # the checkpoint's spec never re-reads the start


def test_main_dino_checkpoint_teacher_by_default_student_on_request_head_and_centre_with_restore_all(
        main_dino_checkpoint):
    path, student, teacher, checkpoint = main_dino_checkpoint
    with pytest.raises(Exception, match="argparse.Namespace|Unsupported global"):
        torch.load(path, weights_only=True)  # why this loader allows exactly that class
    with torch.no_grad():
        torch.testing.assert_close(module(weights=str(path))(IMAGES), teacher(IMAGES), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(module(weights=str(path), weights_key="student")(IMAGES), student(IMAGES),
                                   rtol=1e-5, atol=1e-5)
    run = module(weights=str(path), restore="all")
    head = run.teacher["head"]
    for name, value in checkpoint["teacher"].items():
        if name.startswith("head."):
            torch.testing.assert_close(head.state_dict()[name[len("head."):]], value)
    torch.testing.assert_close(run.criterion.center, checkpoint["dino_loss"]["center"])
    assert run.hparams.start["key"] == "teacher" and run.hparams.start["reference_args"]["arch"] == "resnet50"
    fresh = module(weights=str(path))
    assert not torch.equal(fresh.teacher["head"].mlp[0].weight, head.mlp[0].weight)  # the head only on request
    assert torch.count_nonzero(fresh.criterion.center) == 0


def test_a_checkpoint_with_other_python_objects_is_refused_in_one_line(tmp_path):
    path = tmp_path / "odd.pth"
    torch.save({"state_dict": torchvision_resnet(0).state_dict(), "extra": argparse.ArgumentParser}, path)
    with pytest.raises(StartWeightsError) as info:
        module(weights=str(path))
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def dino_resample(pos_embed, grid):
    """DINO's interpolate_pos_encoding, written from the paper's code description: bicubic, scale (grid + 0.1) / M."""
    cls, patches = pos_embed[:, :1], pos_embed[:, 1:]
    m = int(math.sqrt(patches.shape[1]))
    out = F.interpolate(patches.reshape(1, m, m, -1).permute(0, 3, 1, 2), scale_factor=((grid + 0.1) / m,) * 2,
                        mode="bicubic", align_corners=False)
    return torch.cat([cls, out.permute(0, 2, 3, 1).reshape(1, grid * grid, -1)], dim=1)


def test_vit_checkpoint_on_another_grid_is_resampled_as_dino_does(tmp_path):
    """A reference-layout ViT trained at 112 px (7 x 7 patches of 16) started for 64 px crops (4 x 4)."""
    tiny = dict(depth=2, embed_dim=48, num_heads=2)
    torch.manual_seed(0)
    source = timm.create_model("vit_small_patch16_224", img_size=112, num_classes=0, **tiny)
    path = tmp_path / "dino_vit_pretrain.pth"
    torch.save(source.state_dict(), path)
    run = module("vit_small_patch16_224", img_size=64, weights=str(path), **tiny)
    state = dict(source.state_dict())
    state["pos_embed"] = dino_resample(state["pos_embed"], 4)
    reference = timm.create_model("vit_small_patch16_224", img_size=64, num_classes=0, **tiny).eval()
    reference.load_state_dict(state)
    with torch.no_grad():
        torch.testing.assert_close(run(IMAGES), reference(IMAGES), rtol=1e-5, atol=1e-5)
    assert run.hparams.start["position_embedding"].startswith("7x7 -> 4x4")


def test_keys_that_do_not_match_are_one_line_and_a_classifier_is_left_out(tmp_path):
    net = torchvision.models.resnet18(weights=None)  # with its fc: dropped on purpose, not an error
    path = tmp_path / "with_fc.pth"
    torch.save(net.state_dict(), path)
    assert "fc.weight" in module(weights=str(path)).hparams.start["dropped"]
    state = {k: v for k, v in net.state_dict().items() if not k.startswith("layer4.")}
    state["foo.weight"] = torch.zeros(3)
    torch.save(state, path)
    with pytest.raises(StartWeightsError) as info:
        module(weights=str(path))
    message = str(info.value)
    assert "\n" not in message and "missing layer4.0" in message and "unexpected foo.weight" in message


def test_facefd_extractor_and_checkpoint_start_and_the_card_records_the_start(tmp_path):
    from facefd.models.extractor import load_extractor

    first = module()
    extractor = first.export_extractor(tmp_path / "first")
    second = module(weights=str(extractor))
    with torch.no_grad():
        torch.testing.assert_close(second(IMAGES), first(IMAGES), rtol=1e-5, atol=1e-5)
    card = load_extractor(second.export_extractor(tmp_path / "second")).card
    assert card["source"]["start"]["sha256"] == hashlib.sha256(extractor.read_bytes()).hexdigest()
    assert card["source"]["start"]["source"] == str(extractor.resolve())
    ckpt = tmp_path / "run.ckpt"
    torch.save({"state_dict": first.state_dict(), "hyper_parameters": dict(first.hparams)}, ckpt)
    with torch.no_grad():
        torch.testing.assert_close(module(weights=str(ckpt))(IMAGES), first(IMAGES), rtol=1e-5, atol=1e-5)


def test_hub_id_through_timm_and_its_cache_with_a_pinned_revision(tmp_path, monkeypatch):
    """timm:resnet18 is timm/resnet18.a1_in1k on the hub: offline, the cache's file; with huggingface_hub
    answering from the cache, timm's own loader at the pinned revision (main holds other weights)."""
    from huggingface_hub import constants
    from safetensors.torch import save_file

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    repo = tmp_path / "hub" / "models--timm--resnet18.a1_in1k"
    main, pinned = "a" * 40, "b" * 40
    nets = {}
    for rev, seed in ((main, 1), (pinned, 2)):
        (repo / "snapshots" / rev).mkdir(parents=True)
        torch.manual_seed(seed)
        nets[rev] = timm.create_model("resnet18", num_classes=0).eval()
        save_file(nets[rev].state_dict(), str(repo / "snapshots" / rev / "model.safetensors"))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(main)
    monkeypatch.setenv("FACEFD_OFFLINE", "1")
    with torch.no_grad():
        offline = module(weights="timm:resnet18")
        torch.testing.assert_close(offline(IMAGES), nets[main](IMAGES))
        file = repo / "snapshots" / main / "model.safetensors"
        assert offline.hparams.start["sha256"] == hashlib.sha256(file.read_bytes()).hexdigest()
        monkeypatch.delenv("FACEFD_OFFLINE")
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
        online = module(weights="timm:resnet18", weights_revision=pinned)
        torch.testing.assert_close(online(IMAGES), nets[pinned](IMAGES))
    monkeypatch.setenv("FACEFD_OFFLINE", "1")
    shutil.rmtree(repo)
    with pytest.raises(Exception, match="not in the Hugging Face cache"):
        module(weights="timm:resnet18")


def test_a_stored_spec_cannot_name_weights():
    """A checkpoint or card from someone else cannot make facefd read a file or fetch a hub id."""
    from facefd.utils.errors import UntrustedCodeError

    spec = {"target": "timm.create_model", "kwargs": {"model_name": "resnet18", "num_classes": 0, "weights": "timm:resnet50"}}
    with pytest.raises(UntrustedCodeError, match="weights"):
        DINOModule(backbone=spec, optimizer={"target": "torch.optim.AdamW", "kwargs": {"lr": 1e-3}}, head=HEAD)


def test_backbone_weights_from_the_command_line(tmp_path, sample_root):
    from conftest import compose_train

    net = torchvision_resnet(0)
    path = tmp_path / "r18.pth"
    torch.save(net.state_dict(), path)
    cfg = compose_train(tmp_path, ["backbone.model_name=resnet18", f"backbone.weights={path}"], sample_root)
    run = instantiate(cfg.model).eval()
    with torch.no_grad():
        torch.testing.assert_close(run(IMAGES), net(IMAGES), rtol=1e-5, atol=1e-5)
    default = instantiate(compose_train(tmp_path, ["backbone.model_name=resnet18"], sample_root).model)
    assert default.hparams.start is None  # weights: null (with weights_key and restore set) is no start


def test_restore_all_reads_torchs_new_weight_norm_names_and_refuses_in_one_sentence(main_dino_checkpoint, tmp_path):
    """A head saved under torch's ``parametrizations`` weight norm (``original0`` = g, ``original1`` = v) loads
    with ``restore=all``; an unknown ``restore``, a backbone-only file and a head missing a key are each one
    sentence naming the file [the texts as documented; torch's own first error line for the missing key]."""
    path, _, _, checkpoint = main_dino_checkpoint
    renamed = {k.replace("last_layer.weight_g", "last_layer.parametrizations.weight.original0")
                .replace("last_layer.weight_v", "last_layer.parametrizations.weight.original1"): v
               for k, v in checkpoint["teacher"].items()}
    new_names = tmp_path / "new_names.pth"
    torch.save({**checkpoint, "teacher": renamed}, new_names)
    head = module(weights=str(new_names), restore="all").student["head"].state_dict()
    torch.testing.assert_close(head["last_layer.weight_g"], checkpoint["teacher"]["head.last_layer.weight_g"])
    torch.testing.assert_close(head["last_layer.weight_v"], checkpoint["teacher"]["head.last_layer.weight_v"])

    with pytest.raises(StartWeightsError, match=r"^backbone\.restore='head': choose backbone or all$"):
        module(weights=str(path), restore="head")
    backbone_only = tmp_path / "backbone.pth"
    torch.save(torchvision_resnet(0).state_dict(), backbone_only)
    with pytest.raises(StartWeightsError) as info:
        module(weights=str(backbone_only), restore="all")
    assert str(info.value) == (f"{backbone_only.resolve()}: backbone.restore=all needs a training checkpoint with a "
                               "DINO head and centre (main_dino.py or facefd); this file has a backbone only")
    no_centre = tmp_path / "no_centre.pth"
    torch.save({k: v for k, v in checkpoint.items() if k != "dino_loss"}, no_centre)
    with pytest.raises(StartWeightsError, match="needs a training checkpoint with a DINO head and centre"):
        module(weights=str(no_centre), restore="all")
    missing = {k: v for k, v in checkpoint["teacher"].items() if k != "head.mlp.4.bias"}  # a head without a key
    missing_key = tmp_path / "missing_key.pth"
    torch.save({**checkpoint, "teacher": missing}, missing_key)
    with pytest.raises(RuntimeError) as torch_error:
        module().student["head"].load_state_dict({k[len("head."):]: v for k, v in missing.items()
                                                  if k.startswith("head.")}, strict=True)
    with pytest.raises(StartWeightsError) as info:
        module(weights=str(missing_key), restore="all")
    assert str(info.value) == (f"{missing_key.resolve()}: its DINO head does not fit model.head "
                               f"({str(torch_error.value).splitlines()[0][:300]})")
