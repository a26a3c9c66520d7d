"""DINO(I), the FDD paper's ImageNet-DINO feature space: the reference's evaluation transform (torchvision's
Resize(256, bicubic) + CenterCrop(224) + Normalize on PIL images, as DINO's eval_knn.py builds it) on real
photos, and features equal to timm's network loaded independently with the checkpoint's tensors."""
from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from torchvision import transforms

from facefd.metrics.dino_imagenet import DINOImageNetFeatures, architecture_of, reference_eval_crop
from facefd.metrics.extractors import build_extractor, check_extractor_entry

skimage_data = pytest.importorskip("skimage.data")

REFERENCE = transforms.Compose([transforms.Resize(256, interpolation=transforms.InterpolationMode.BICUBIC),
                                transforms.CenterCrop(224), transforms.ToTensor(),
                                transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])


def photos():
    """astronaut() (512 x 512), chelsea() (300 x 451, landscape) and the same turned to portrait."""
    cat = skimage_data.chelsea()
    return [skimage_data.astronaut(), cat, np.ascontiguousarray(cat.transpose(1, 0, 2))]


def test_reference_evaluation_crop_on_real_photos():
    for array in photos():
        want = REFERENCE(Image.fromarray(array))
        x = torch.from_numpy(array).permute(2, 0, 1)[None].float() / 255
        torch.testing.assert_close(reference_eval_crop(x)[0], want, rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def vit_checkpoint(tmp_path_factory):
    """dino_deitsmall16_pretrain.pth's layout (timm's ViT names, no head), random weights."""
    torch.manual_seed(0)
    net = timm.create_model("vit_small_patch16_224", num_classes=0).eval()
    path = tmp_path_factory.mktemp("dino_i") / "dino_deitsmall16_pretrain.pth"
    torch.save(net.state_dict(), path)
    return path, net


def test_dino_imagenet_features_equal_the_network_on_the_reference_crop(vit_checkpoint):
    path, net = vit_checkpoint
    check_extractor_entry(f"dino_imagenet@{path}")
    extractor = build_extractor("dino_imagenet", str(path))
    assert isinstance(extractor, DINOImageNetFeatures) and extractor.num_features == 384
    array = photos()[1]
    x = torch.from_numpy(array).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        want = net(REFERENCE(Image.fromarray(array))[None])
        torch.testing.assert_close(extractor(x), want, rtol=1e-5, atol=1e-5)
    assert extractor.card["backbone"]["weights"]["layout"] == "state_dict"


def test_architecture_is_read_from_the_tensors():
    resnet = timm.create_model("resnet50", num_classes=0).state_dict()
    assert architecture_of(resnet) == ("resnet50", {})
    vit_b8 = {"patch_embed.proj.weight": torch.zeros(768, 3, 8, 8), "pos_embed": torch.zeros(1, 785, 768)}
    assert architecture_of(vit_b8) == ("vit_base_patch8_224", {})
    with pytest.raises(ValueError, match="neither a ResNet-50 nor a ViT"):
        architecture_of({"conv.weight": torch.zeros(1)})


def test_table_one_names_its_three_feature_spaces():
    from facefd.evaluation.probe_table import ProbeResult, table_rows

    results = [ProbeResult(name, "linear", {"Male": 0.9}) for name in ("fid", "dino_imagenet", "fdd")]
    _, rows = table_rows(results)
    assert [r[0] for r in rows] == ["Inception", "DINO(I)", "DINO(F)"]
