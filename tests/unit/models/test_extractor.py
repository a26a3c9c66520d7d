"""Exported extractors: round trip, preprocessing, and clear errors for missing/mismatching files."""
import functools
import json

import pytest
import timm
import torch
import torch.nn.functional as F

from facefd import load_extractor
from facefd.models.backbone import factory_spec
from facefd.models.extractor import ExtractorFileError, save_extractor

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture()
def exported(tmp_path):
    torch.manual_seed(0)
    factory = functools.partial(timm.create_model, model_name="test_resnet", pretrained=False, num_classes=0)
    backbone = factory().eval()
    path = save_extractor(backbone, factory_spec(factory), tmp_path / "ext", 96, 32, MEAN, STD)
    return backbone, path


def test_round_trip_gives_the_same_features(exported):
    backbone, path = exported
    assert path.name == "extractor.safetensors" and path.with_suffix(".json").exists()
    ext = load_extractor(path)
    assert not ext.training and ext.num_features == 96 and ext.input_size == 32
    x = torch.rand(3, 3, 32, 32)
    want = backbone((x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1))
    torch.testing.assert_close(ext(x), want)
    # uint8 input means the same as float in [0, 1]
    u8 = (x * 255).round().to(torch.uint8)
    torch.testing.assert_close(ext(u8), ext(u8.float() / 255))
    # other sizes are resized with antialiasing before the backbone
    big = torch.rand(2, 3, 64, 48)
    small = F.interpolate(big, size=(32, 32), mode="bilinear", antialias=True, align_corners=False)
    torch.testing.assert_close(ext(big), ext(small))
    # the folder and the card path load the same thing
    assert load_extractor(path.parent).fingerprint == load_extractor(path.with_suffix(".json")).fingerprint == ext.fingerprint
    ext.train()
    assert not ext.training


def test_missing_card_names_the_file(exported, tmp_path):
    _, path = exported
    path.with_suffix(".json").unlink()
    with pytest.raises(ExtractorFileError, match=r"extractor\.json"):
        load_extractor(path)


def test_missing_weights_name_the_file(exported):
    _, path = exported
    path.unlink()
    with pytest.raises(ExtractorFileError, match=r"extractor\.safetensors.*not found"):
        load_extractor(path.with_suffix(".json"))


def test_mismatching_architecture_is_reported(exported):
    _, path = exported
    card = json.loads(path.with_suffix(".json").read_text())
    card["backbone"]["kwargs"]["model_name"] = "test_vit"
    card["sha256"] = ""
    path.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(ExtractorFileError, match="does not fit the backbone"):
        load_extractor(path)


def test_modified_weights_fail_the_checksum(exported):
    _, path = exported
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ExtractorFileError, match="does not match its card"):
        load_extractor(path)
