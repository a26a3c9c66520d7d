"""FD_DINOv2's and CMMD's feature extractors at a tiny depth and width with random weights, each against a
forward written here from the architecture and the reference's preprocessing (torchvision's dgm-eval
transform on real photos; a numpy Keys-cubic resize for CMMD); the full configurations' shapes on the
``meta`` device."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

timm = pytest.importorskip("timm")

from facefd.metrics.foundation import (  # noqa: E402
    CLIPImageEmbedder,
    DINOv2Features,
    dinov2_position_embedding,
)

TINY_VIT = dict(depth=2, embed_dim=128, num_heads=2)


def real_photos() -> list[Image.Image]:
    from skimage import data

    return [Image.fromarray(data.astronaut()), Image.fromarray(data.coffee()).crop((0, 0, 400, 400))]


def as_tensor(images: list[Image.Image], size: int) -> torch.Tensor:
    """What facefd's loader hands an extractor: float [0, 1] pictures (here resized to one size to batch)."""
    arrays = [np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR)) for im in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255


@pytest.fixture(scope="module")
def tiny_dinov2(tmp_path_factory):
    """A DINOv2-architecture ViT (patch 14) trained at 70 px: a 5 x 5 position-embedding grid."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0, img_size=70, **TINY_VIT)
    with torch.no_grad():
        for p in net.parameters():  # LayerScale starts near zero: give every weight a visible effect
            p.add_(torch.randn_like(p) * 0.05)
    path = tmp_path_factory.mktemp("dinov2") / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path, {k: v.clone() for k, v in net.state_dict().items()}


def reference_dinov2(state: dict, pixels: torch.Tensor, heads: int) -> torch.Tensor:
    """DINOv2's forward written from the paper and the hub model's code: patch embedding, class token, the
    learned position embeddings resampled at run time (bicubic, scale (grid + 0.1) / M, no antialias),
    pre-norm blocks with LayerScale, the final norm's class token."""
    x = F.conv2d(pixels, state["patch_embed.proj.weight"], state["patch_embed.proj.bias"], stride=14)
    b, d, g, _ = x.shape
    x = torch.cat([state["cls_token"].expand(b, -1, -1), x.flatten(2).transpose(1, 2)], dim=1)
    pos = state["pos_embed"]
    m = int(math.sqrt(pos.shape[1] - 1))
    grid = F.interpolate(pos[:, 1:].reshape(1, m, m, d).permute(0, 3, 1, 2), scale_factor=((g + 0.1) / m,) * 2,
                         mode="bicubic", antialias=False)
    x = x + torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, g * g, d)], dim=1)
    for i in range(TINY_VIT["depth"]):
        p = lambda name, i=i: state[f"blocks.{i}.{name}"]  # noqa: E731
        h = F.layer_norm(x, (d,), p("norm1.weight"), p("norm1.bias"), eps=1e-6)
        qkv = F.linear(h, p("attn.qkv.weight"), p("attn.qkv.bias")).reshape(b, -1, 3, heads, d // heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attention = (q @ k.transpose(-2, -1) / math.sqrt(d // heads)).softmax(dim=-1)
        h = F.linear((attention @ v).transpose(1, 2).reshape(b, -1, d), p("attn.proj.weight"), p("attn.proj.bias"))
        x = x + p("ls1.gamma") * h
        h = F.layer_norm(x, (d,), p("norm2.weight"), p("norm2.bias"), eps=1e-6)
        h = F.linear(F.gelu(F.linear(h, p("mlp.fc1.weight"), p("mlp.fc1.bias"))), p("mlp.fc2.weight"), p("mlp.fc2.bias"))
        x = x + p("ls2.gamma") * h
    return F.layer_norm(x, (d,), state["norm.weight"], state["norm.bias"], eps=1e-6)[:, 0]


def test_dinov2_preprocessing_is_dgm_evals_transform_on_real_photos(tiny_dinov2):
    from torchvision import transforms

    path, _ = tiny_dinov2
    extractor = DINOv2Features(path, model="vit_small_patch14_dinov2", **TINY_VIT)
    photos = [im.resize((256, 256), Image.BILINEAR) for im in real_photos()]
    dgm_eval = transforms.Compose([transforms.Resize((224, 224), interpolation=transforms.InterpolationMode.BICUBIC),
                                   transforms.ToTensor(),
                                   transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    want = torch.stack([dgm_eval(im) for im in photos])
    torch.testing.assert_close(extractor.preprocess(as_tensor(photos, 256)), want, rtol=0, atol=1e-6)


def test_dinov2_forward_equals_an_independent_forward_with_another_grid(tiny_dinov2):
    path, state = tiny_dinov2
    extractor = DINOv2Features(path)  # the architecture's size read from the file
    assert extractor.num_features == 128 and extractor.card["input_size"] == 224
    images = as_tensor(real_photos(), 256)
    want = reference_dinov2(state, extractor.preprocess(images), TINY_VIT["num_heads"])
    torch.testing.assert_close(extractor(images), want, rtol=1e-4, atol=1e-5)
    # a grid resampled another way (timm's antialiased resample) gives other features: the test can tell
    other = dict(state)
    other["pos_embed"] = torch.cat([state["pos_embed"][:, :1], timm.layers.resample_abs_pos_embed(
        state["pos_embed"], (16, 16), num_prefix_tokens=1)[:, 1:]], dim=1)
    assert not torch.allclose(reference_dinov2(other, extractor.preprocess(images), 2), want, atol=1e-4)


def test_full_dinov2_and_clip_shapes_on_the_meta_device():
    pos = dinov2_position_embedding(torch.empty(1, 1 + 37 * 37, 1024, device="meta"), 16)
    assert pos.shape == (1, 257, 1024)
    net = timm.create_model("vit_large_patch14_dinov2", pretrained=False, num_classes=0, img_size=224, device="meta")
    assert net.num_features == 1024 and net.pos_embed.shape == pos.shape
    transformers = pytest.importorskip("transformers")
    with torch.device("meta"):
        config = transformers.CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                               num_attention_heads=16, image_size=336, patch_size=14, projection_dim=768)
        clip = transformers.CLIPVisionModelWithProjection(config)
        out = clip(pixel_values=torch.empty(1, 3, 336, 336))
    assert out.image_embeds.shape == (1, 768)


def keys_cubic_resize(images: np.ndarray, size: int) -> np.ndarray:
    """Antialiased bicubic resize (Keys, a = -0.5; kernel widened by the scale when shrinking, weights
    normalised), separable, half-pixel centres: the resize the CMMD reference applies before CLIP."""
    def cubic(x):
        x = np.abs(x)
        return np.where(x <= 1, 1.5 * x**3 - 2.5 * x**2 + 1, np.where(x < 2, -0.5 * x**3 + 2.5 * x**2 - 4 * x + 2, 0.0))

    def weights(n_in, n_out):
        scale = n_in / n_out
        support = max(scale, 1.0)
        centres = (np.arange(n_out) + 0.5) * scale
        w = cubic((np.arange(n_in)[None, :] + 0.5 - centres[:, None]) / support)
        return w / w.sum(axis=1, keepdims=True)

    h, w = images.shape[-2:]
    return weights(h, size) @ images @ weights(w, size).T  # rows, then columns


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                           num_attention_heads=2, image_size=336, patch_size=48, projection_dim=16)
    model = transformers.CLIPVisionModelWithProjection(config).eval()
    folder = tmp_path_factory.mktemp("clip") / "tiny-clip"
    model.save_pretrained(folder, safe_serialization=True)
    return folder, model


def test_clip_embedder_is_the_cmmd_references_computation(tiny_clip):
    from transformers import CLIPImageProcessor

    folder, model = tiny_clip
    embedder = CLIPImageEmbedder(str(folder))
    assert embedder.num_features == 16
    images = as_tensor(real_photos(), 512)
    resized = keys_cubic_resize(images.double().numpy(), 336)
    processor = CLIPImageProcessor(do_resize=False, do_center_crop=False, do_rescale=False, do_normalize=True,
                                   image_mean=[0.48145466, 0.4578275, 0.40821073], image_std=[0.26862954, 0.26130258, 0.27577711])
    pixels = processor(images=[r.transpose(1, 2, 0).astype(np.float32) for r in resized], return_tensors="pt",
                       input_data_format="channels_last")["pixel_values"]
    torch.testing.assert_close(embedder.preprocess(images), pixels, rtol=0, atol=2e-4)
    with torch.no_grad():
        want = model(pixel_values=pixels).image_embeds
    want = want / want.norm(dim=1, keepdim=True)
    got = embedder(images)
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(got.norm(dim=1), torch.ones(2))


def test_clip_model_that_cannot_be_found_is_one_line(tmp_path, monkeypatch):
    from facefd.utils.errors import UserError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError) as info:
        CLIPImageEmbedder(str(tmp_path / "no-such-model"))
    assert "\n" not in str(info.value) and "no-such-model" in str(info.value)


def test_dinov2_offline_reads_the_hub_cache_or_says_where_it_looked(tiny_dinov2, tmp_path, monkeypatch):
    """FACEFD_OFFLINE=1: no request; the Hugging Face cache's copy is used as a local file, and without one
    the error is one line naming the repository and the cache."""
    import shutil

    from huggingface_hub import constants

    from facefd.utils.errors import UserError

    path, state = tiny_dinov2
    monkeypatch.setenv("FACEFD_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(UserError) as info:
        DINOv2Features()
    message = str(info.value)
    assert "\n" not in message and "timm/vit_large_patch14_dinov2.lvd142m" in message and str(tmp_path / "hub") in message
    repo = tmp_path / "hub" / "models--timm--vit_large_patch14_dinov2.lvd142m"
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    shutil.copy(path, repo / "snapshots" / "abc123" / "model.safetensors")
    extractor = DINOv2Features()  # the cached (here: tiny) file, its size read from it
    assert extractor.num_features == TINY_VIT["embed_dim"] and "model.safetensors" in extractor.card["backbone"]["weights"]


def test_dinov2_revision_pins_the_hub_snapshot(tiny_dinov2, tmp_path, monkeypatch):
    """revision= pins the files: offline, the pinned snapshot of the Hugging Face cache is read (not main's);
    online, timm's own hub loader is asked for the pinned revision (here with huggingface_hub forced offline,
    so it answers from the same cache; main's snapshot holds other weights)."""
    import shutil

    import torch
    from huggingface_hub import constants
    from safetensors.torch import save_file

    from facefd.utils.errors import UserError

    path, state = tiny_dinov2
    MAIN, PINNED = "a" * 40, "b" * 40  # commit hashes, as the hub names snapshots
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    repo = tmp_path / "hub" / "models--timm--vit_large_patch14_dinov2.lvd142m"
    for rev in (MAIN, PINNED):
        (repo / "snapshots" / rev).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(MAIN)
    save_file({k: torch.zeros_like(v) for k, v in state.items()}, str(repo / "snapshots" / MAIN / "model.safetensors"))
    shutil.copy(path, repo / "snapshots" / PINNED / "model.safetensors")

    monkeypatch.setenv("FACEFD_OFFLINE", "1")
    pinned = DINOv2Features(revision=PINNED)
    assert PINNED in pinned.card["backbone"]["weights"]
    main = DINOv2Features()
    assert MAIN in main.card["backbone"]["weights"]
    with pytest.raises(UserError, match="not in the Hugging Face cache"):
        DINOv2Features(revision="c" * 40)

    monkeypatch.delenv("FACEFD_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    through_timm = DINOv2Features(revision=PINNED, **TINY_VIT)
    # the pinned snapshot's weights (its position embeddings pass through timm's own 518 px resample first)
    weights = lambda m: m.net.blocks[1].mlp.fc2.weight  # noqa: E731
    torch.testing.assert_close(weights(through_timm), weights(pinned))
    assert not torch.allclose(weights(main), weights(pinned))
    assert PINNED in through_timm.card["backbone"]["weights"]
