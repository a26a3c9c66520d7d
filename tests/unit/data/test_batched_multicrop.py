"""The batched (device-side) multi-crop: its random draws have the reference's distributions (checked
against torchvision's own draws), each op equals torchvision's functional op, crops are a function of
(seed, epoch, index) whatever the worker count, and training runs and resumes exactly through Lightning."""
import math
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image, ImageOps
from scipy import stats
from torch.utils.data import DataLoader

from conftest import compose_train
from facefd.data import MultiCropAugmentation
from facefd.data import batched_multicrop as bm
from facefd.data.dataset import FaceImageDataset
from facefd.data.sample_faces import draw_face, sample_identity, sample_view

N_DRAWS = 4000


def _reference_boxes(height, width, scale, n, seed=1):
    torch.manual_seed(seed)
    img = torch.zeros(3, height, width)
    return torch.tensor([T.RandomResizedCrop.get_params(img, list(scale), [3 / 4, 4 / 3]) for _ in range(n)],
                        dtype=torch.float64)


def _box_statistics(boxes, height, width):
    top, left, h, w = boxes.double().unbind(1)
    return {"area": (h * w / (height * width)).numpy(), "log_ratio": torch.log(w / h).numpy(),
            "centre_x": ((left + w / 2) / width).numpy(), "centre_y": ((top + h / 2) / height).numpy()}


@pytest.mark.parametrize("height,width,scale", [(64, 80, (0.05, 0.4)), (64, 80, (0.4, 1.0)),
                                                (40, 100, (0.9, 1.0))])  # the last mostly falls back
def test_crop_boxes_have_torchvision_distribution(height, width, scale):
    torch.manual_seed(0)
    ours = _box_statistics(bm.sample_crop_boxes(height, width, N_DRAWS, scale), height, width)
    ref = _box_statistics(_reference_boxes(height, width, scale, N_DRAWS), height, width)
    for key in ours:
        p = stats.ks_2samp(ours[key], ref[key]).pvalue
        assert p > 1e-3, (key, p, ours[key].mean(), ref[key].mean())
    # every box lies inside the image
    boxes = bm.sample_crop_boxes(height, width, N_DRAWS, scale)
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 0] + boxes[:, 2] <= height).all() and (boxes[:, 1] + boxes[:, 3] <= width).all()


def test_crop_statistics_test_can_fail():
    """The KS test above notices a plausible bug: area drawn uniformly in side length instead of area."""
    torch.manual_seed(0)
    ours = bm.sample_crop_boxes(64, 80, N_DRAWS, (0.05, 0.4))
    side = torch.empty(N_DRAWS).uniform_(math.sqrt(0.05), math.sqrt(0.4)) ** 2
    ref = _box_statistics(_reference_boxes(64, 80, (0.05, 0.4), N_DRAWS), 64, 80)["area"]
    assert stats.ks_2samp(side.numpy(), ref).pvalue < 1e-6
    assert stats.ks_2samp(_box_statistics(ours, 64, 80)["area"], ref).pvalue > 1e-3


def _default_recipe(**kw) -> bm.MultiCropRecipe:
    return MultiCropAugmentation(device="cpu", **kw).batched.recipe


def _binomial_ok(rate, p, n):
    return abs(rate - p) <= 4.5 * math.sqrt(max(p * (1 - p), 1e-12) / n) + 1e-12


def test_crop_parameters_have_reference_rates_and_factors():
    recipe = _default_recipe()  # 2 x 224 + 8 x 96, the reference's probabilities and strengths
    torch.manual_seed(0)
    params = torch.stack([bm.sample_multicrop_params(256, 256, recipe) for _ in range(N_DRAWS // 4)])
    n_img = params.shape[0]
    glob1, glob2, local = params[:, 0], params[:, 1], params[:, 2:].reshape(-1, bm.NUM_PARAMS)
    every = params.reshape(-1, bm.NUM_PARAMS)
    n = every.shape[0]
    assert _binomial_ok(every[:, bm.FLIP].mean().item(), 0.5, n)
    assert _binomial_ok(every[:, bm.JITTER].mean().item(), 0.8, n)
    assert _binomial_ok(every[:, bm.GRAY].mean().item(), 0.2, n)
    assert (glob1[:, bm.SIGMA] > 0).all()  # DINO: the first global view is always blurred
    assert _binomial_ok((glob2[:, bm.SIGMA] > 0).float().mean().item(), 0.1, n_img)
    assert _binomial_ok((local[:, bm.SIGMA] > 0).float().mean().item(), 0.5, local.shape[0])
    assert _binomial_ok(glob2[:, bm.SOLARIZE].mean().item(), 0.2, n_img)
    assert glob1[:, bm.SOLARIZE].sum() == 0 and local[:, bm.SOLARIZE].sum() == 0
    sig = local[local[:, bm.SIGMA] > 0, bm.SIGMA].numpy()
    assert stats.kstest(sig, "uniform", args=(0.1, 1.9)).pvalue > 1e-3
    # DINO's GaussianBlur(radius_min=0.1, radius_max=2.0) for the global views too
    assert stats.kstest(glob1[:, bm.SIGMA].numpy(), "uniform", args=(0.1, 1.9)).pvalue > 1e-3

    # colour-jitter factors and op order against torchvision ColorJitter's own draws
    torch.manual_seed(1)
    ref = [T.ColorJitter.get_params([0.6, 1.4], [0.6, 1.4], [0.8, 1.2], [-0.1, 0.1]) for _ in range(n)]
    ref_factors = np.array([[b, c, s, h] for _, b, c, s, h in ref])
    for j, column in enumerate((bm.BRIGHTNESS, bm.CONTRAST, bm.SATURATION, bm.HUE)):
        assert stats.ks_2samp(every[:, column].numpy(), ref_factors[:, j]).pvalue > 1e-3, column
    ours_orders = [tuple(r) for r in every[:, bm.ORDER].long().tolist()]
    ref_orders = [tuple(int(v) for v in fn_idx) for fn_idx, *_ in ref]
    perms = sorted(set(ref_orders) | set(ours_orders))
    assert len(perms) == 24
    table = np.array([[ours_orders.count(q) for q in perms], [ref_orders.count(q) for q in perms]])
    assert stats.chi2_contingency(table).pvalue > 1e-3


@pytest.mark.parametrize("locals_", [0, 1])
def test_few_local_crops_get_boxes_of_their_own(locals_):
    """One local crop is drawn like any other (a box inside the image, local scale); none leaves two globals."""
    recipe = _default_recipe(local_crops_number=locals_)
    torch.manual_seed(0)
    params = bm.sample_multicrop_params(64, 80, recipe)
    assert params.shape == (2 + locals_, bm.NUM_PARAMS)
    top, left, h, w = params[:, :4].T
    assert (h > 0).all() and (w > 0).all() and (top + h <= 64).all() and (left + w <= 80).all()


def test_blur_radius_scales_with_crop_size():
    recipe = _default_recipe(global_crop_size=64, local_crop_size=32, scale_blur=True)
    assert recipe.global_blur_radius == pytest.approx((0.1 * 64 / 224, 2.0 * 64 / 224))
    assert recipe.local_blur_radius == pytest.approx((0.1 * 32 / 96, 2.0 * 32 / 96))


# ------------------------------------------------------------------------------------------- ops
def _images(n=4, size=32, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        person = sample_identity(rng)
        out.append(TF.to_tensor(draw_face(person, sample_view(person, rng), rng, size=size)))
    return torch.stack(out)


def test_colour_ops_equal_torchvision_functional():
    x = _images()
    factors = torch.tensor([0.6, 0.9, 1.2, 1.4])
    hues = torch.tensor([-0.1, -0.03, 0.02, 0.1])
    for ours, theirs in ((bm.adjust_brightness, TF.adjust_brightness), (bm.adjust_contrast, TF.adjust_contrast),
                         (bm.adjust_saturation, TF.adjust_saturation)):
        expect = torch.stack([theirs(img, float(f)) for img, f in zip(x, factors)])
        # 1e-4: PIL's luma weight for red (0.299, used here) against torchvision's tensor one (0.2989)
        torch.testing.assert_close(ours(x, factors), expect, atol=1e-4, rtol=0)
    expect = torch.stack([TF.adjust_hue(img, float(h)) for img, h in zip(x, hues)])
    torch.testing.assert_close(bm.adjust_hue(x, hues), expect, atol=1e-4, rtol=0)
    torch.testing.assert_close(bm.rgb_to_gray(x), TF.rgb_to_grayscale(x), atol=2e-4, rtol=0)
    torch.testing.assert_close(bm.hsv_to_rgb(bm.rgb_to_hsv(x)), x, atol=1e-5, rtol=0)


def test_colour_jitter_follows_each_rows_order_and_flag():
    x = _images()
    recipe = _default_recipe()
    torch.manual_seed(3)
    params = torch.stack([bm.sample_multicrop_params(32, 32, recipe)[2] for _ in range(4)])
    params[:, bm.JITTER] = torch.tensor([1.0, 1.0, 1.0, 0.0])
    params[0, bm.ORDER] = torch.tensor([0.0, 1, 2, 3])
    params[1, bm.ORDER] = torch.tensor([3.0, 2, 1, 0])
    ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    cols = (bm.BRIGHTNESS, bm.CONTRAST, bm.SATURATION, bm.HUE)
    expect = []
    for img, p in zip(x, params):
        if p[bm.JITTER] > 0:
            for op in p[bm.ORDER].long().tolist():
                img = ops[op](img, float(p[cols[op]]))
        expect.append(img)
    torch.testing.assert_close(bm.color_jitter(x.clone(), params), torch.stack(expect), atol=1e-4, rtol=0)


def test_per_row_blur_equals_torchvision_gaussian_blur():
    x = _images(3)
    sigma = torch.tensor([0.0, 0.4, 0.67])
    k = bm.blur_kernel_size(0.67)
    out = bm.gaussian_blur(x, sigma, k)
    torch.testing.assert_close(out[0], x[0])
    for i in (1, 2):
        torch.testing.assert_close(out[i], TF.gaussian_blur(x[i], [k, k], [float(sigma[i])] * 2), atol=1e-5, rtol=0)


def _params_for_boxes(boxes):
    p = torch.zeros(len(boxes), bm.NUM_PARAMS)
    p[:, :4] = torch.tensor(boxes, dtype=torch.float32)
    return p


def test_bicubic_crops_equal_torchvision_resized_crop():
    """The default resampling is torchvision's RandomResizedCrop on a tensor (bicubic, antialiased)."""
    x = _images(2, size=48)
    boxes = [(0, 0, 48, 48), (8, 4, 20, 30), (30, 10, 18, 12), (5, 5, 40, 43)]
    owners = torch.tensor([0, 1, 0, 1])
    for size in (32, 16, 64):
        out = bm.crop_and_resize(list(x), _params_for_boxes(boxes), owners, size)
        for k, ((top, left, h, w), owner) in enumerate(zip(boxes, owners.tolist())):
            ref = TF.resized_crop(x[owner], top, left, h, w, [size, size],
                                  interpolation=T.InterpolationMode.BICUBIC, antialias=True).clamp(0, 1)
            torch.testing.assert_close(out[k], ref, atol=1e-6, rtol=0)


def test_roi_align_crops_are_exact_where_the_answer_is_known():
    x = _images(2, size=32)
    # the whole image at its own size is the image; an aligned 2x shrink is a 2x2 average
    p = _params_for_boxes([(0, 0, 32, 32), (8, 4, 16, 16), (0, 0, 32, 32)])
    owners = torch.tensor([0, 1, 1])
    same = bm.crop_and_resize(list(x), p[:1], owners[:1], 32, "roi_align")
    torch.testing.assert_close(same[0], x[0], atol=1e-6, rtol=0)
    half = bm.crop_and_resize(list(x), p[2:], owners[2:], 16, "roi_align")
    torch.testing.assert_close(half[0], F.avg_pool2d(x[1:2], 2)[0], atol=1e-6, rtol=0)
    # an enlarged crop equals torchvision's bilinear resized crop (align_corners=False)
    up = bm.crop_and_resize(list(x), p[1:2], owners[1:2], 32, "roi_align")
    ref = TF.resized_crop(x[1], 8, 4, 16, 16, [32, 32], interpolation=T.InterpolationMode.BILINEAR, antialias=False)
    interior = (slice(None), slice(1, -1), slice(1, -1))  # roi_align samples past the box edge differently
    torch.testing.assert_close(up[0][interior], ref[interior], atol=1e-5, rtol=0)


def test_roi_align_crops_of_mixed_size_images_keep_their_owner():
    small, big = _images(1, size=32)[0], _images(1, size=64, seed=5)[0]
    p = _params_for_boxes([(0, 0, 64, 64), (0, 0, 32, 32)])
    out = bm.crop_and_resize([small, big], p, torch.tensor([1, 0]), 32, "roi_align")
    torch.testing.assert_close(out[1], small, atol=1e-6, rtol=0)
    torch.testing.assert_close(out[0], F.avg_pool2d(big[None], 2)[0], atol=1e-6, rtol=0)


def test_rendered_crop_equals_torchvision_ops_in_the_reference_order():
    """One whole crop: resized crop, flip, jitter (its order), grayscale, blur, solarise, normalise, each
    done by torchvision's functional op, equals the batched render."""
    aug = _aug(device="cpu")
    img = (_images(1, size=40)[0] * 255).round().to(torch.uint8)
    torch.manual_seed(11)
    params = bm.sample_multicrop_params(40, 40, aug.batched.recipe)
    params[1, [bm.FLIP, bm.JITTER, bm.GRAY, bm.SOLARIZE]] = 1.0  # exercise every op on the second global crop
    params[1, bm.SIGMA] = 0.25
    crops = aug.batched.render({"source": [img], "source_is_jpeg": torch.tensor([False]), "aug": params[None]})
    top, left, h, w = params[1, :4].long().tolist()
    x = TF.resized_crop(img.float() / 255, top, left, h, w, [32, 32], interpolation=T.InterpolationMode.BICUBIC,
                        antialias=True).clamp(0, 1).flip(-1)
    ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    for op in params[1, bm.ORDER].long().tolist():
        x = ops[op](x, float(params[1, (bm.BRIGHTNESS, bm.CONTRAST, bm.SATURATION, bm.HUE)[op]]))
    x = TF.rgb_to_grayscale(x, num_output_channels=3)
    k = bm.blur_kernel_size(aug.batched.recipe.global_blur_radius[1])
    x = TF.solarize(TF.gaussian_blur(x, [k, k], [0.25, 0.25]), bm.SOLARIZE_THRESHOLD)
    x = TF.normalize(x, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    torch.testing.assert_close(crops[1][0], x, atol=2e-3, rtol=0)


def _reference_crop(img: torch.Tensor, row: torch.Tensor, size: int, kernel: int) -> torch.Tensor:
    """One crop by torchvision's functional ops in DINO's order, each applied only when its row says so."""
    top, left, h, w = row[:4].long().tolist()
    x = TF.resized_crop(img.float() / 255, top, left, h, w, [size, size], interpolation=T.InterpolationMode.BICUBIC,
                        antialias=True).clamp(0, 1)
    if row[bm.FLIP] > 0:
        x = x.flip(-1)
    if row[bm.JITTER] > 0:
        ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
        for op in row[bm.ORDER].long().tolist():
            x = ops[op](x, float(row[(bm.BRIGHTNESS, bm.CONTRAST, bm.SATURATION, bm.HUE)[op]]))
    if row[bm.GRAY] > 0:
        x = TF.rgb_to_grayscale(x, num_output_channels=3)
    if row[bm.SIGMA] > 0:
        x = TF.gaussian_blur(x, [kernel, kernel], [float(row[bm.SIGMA])] * 2)
    if row[bm.SOLARIZE] > 0:
        x = TF.solarize(x, bm.SOLARIZE_THRESHOLD)
    return TF.normalize(x, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


def test_every_crop_of_a_batch_follows_its_own_draws():
    """Three images of two sizes, every crop as drawn (flags on for some rows and off for others): each crop
    equals torchvision's ops applied per its own row, so an op applied to rows that did not draw it, or rows
    mixed between images or crops, fails."""
    aug = _aug(device="cpu")
    recipe = aug.batched.recipe
    imgs = [(_images(1, size=s, seed=i)[0] * 255).round().to(torch.uint8) for i, s in enumerate((40, 48, 40))]
    torch.manual_seed(3)
    params = torch.stack([bm.sample_multicrop_params(img.shape[1], img.shape[2], recipe) for img in imgs])
    for flag in (bm.FLIP, bm.JITTER, bm.GRAY, bm.SOLARIZE):  # each op on in some crops and off in others
        params[:, :, flag] = (torch.arange(params.shape[1])[None] + torch.arange(3)[:, None] + flag) % 2
    params[:, :, bm.SIGMA] = torch.where(params[:, :, bm.FLIP] > 0, params[:, :, bm.SIGMA].clamp_min(0.3), 0.0)
    crops = aug.batched.render({"source": imgs, "source_is_jpeg": torch.tensor([False] * 3), "aug": params})
    assert len(crops) == params.shape[1] == 4
    for c, batch in enumerate(crops):
        size = recipe.global_crop_size if c < 2 else recipe.local_crop_size
        kernel = bm.blur_kernel_size(recipe.global_blur_radius[1] if c < 2 else recipe.local_blur_radius[1])
        for i, img in enumerate(imgs):
            torch.testing.assert_close(batch[i], _reference_crop(img, params[i, c], size, kernel), atol=2e-3, rtol=0,
                                       msg=f"image {i}, crop {c}")


@pytest.mark.parametrize("height,width,scale", [(10, 1000, (0.9, 1.0)), (1001, 9, (0.9, 1.0)), (40, 48, (1.5, 2.0)),
                                                (30, 40, (1.5, 2.0)), (40, 30, (1.5, 2.0)), (1, 1, (0.1, 0.2))])
def test_when_no_attempt_fits_the_fallback_is_torchvisions(height, width, scale):
    """Shapes and scales where no drawn box can fit: every box is RandomResizedCrop's own fallback (the centre
    crop with the ratio clamped to [3/4, 4/3]; the whole image when its ratio is in range, including the
    range's ends), which torchvision's get_params returns for these shapes every time."""
    img = torch.zeros(3, height, width)
    want = torch.tensor(T.RandomResizedCrop.get_params(img, list(scale), [3 / 4, 4 / 3]), dtype=torch.float32)
    boxes = bm.sample_crop_boxes(height, width, 6, scale)
    assert torch.equal(boxes, want.expand(6, 4))


@pytest.mark.parametrize("ratio", [(3 / 4, 3 / 4), (4 / 3, 4 / 3)])
def test_a_box_of_zero_width_or_height_never_fits(ratio):
    """On a 1x1 image at scale (0.2, 0.33) a 3:4 try rounds to 0 x 1 pixels (width sqrt(0.75 t) < 0.5, height
    sqrt(t / 0.75) >= 0.5), a 4:3 try to 1 x 0: neither fits, so every box is the fallback, as torchvision's
    get_params (``0 < w``, ``0 < h``) gives."""
    img = torch.zeros(3, 1, 1)
    torch.manual_seed(0)
    theirs = {T.RandomResizedCrop.get_params(img, [0.2, 0.33], list(ratio)) for _ in range(50)}
    ours = bm.sample_crop_boxes(1, 1, 50, (0.2, 0.33), ratio=ratio)
    assert theirs == {(0, 0, 1, 1)} and ours.tolist() == [[0.0, 0.0, 1.0, 1.0]] * 50


def test_the_fallback_comes_after_torchvisions_ten_tries():
    """A box falls back only when all of RandomResizedCrop's 10 tries miss: its rate is ``q ** 10``, with ``q``
    one try's miss rate, estimated here with numpy from torchvision's rule for one try (area ~ U(scale), log
    ratio ~ U(log ratio), sides rounded, the box inside the image). For a 40x60 image at scale (0.7, 1) ``q`` is
    about 0.85: ten tries fall back 18.7 % of the time, eleven 15.8 %, and ``attempts=1`` gives ``q`` itself."""
    height, width, scale, n = 40, 60, (0.7, 1.0), 100_000
    rng = np.random.default_rng(0)
    tries = 4_000_000
    area = height * width * rng.uniform(*scale, tries)
    aspect = np.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3), tries))
    w, h = np.round(np.sqrt(area * aspect)), np.round(np.sqrt(area / aspect))
    miss = 1.0 - float(((w > 0) & (w <= width) & (h > 0) & (h <= height)).mean())
    fallback = torch.tensor([0.0, 3.0, 40.0, 53.0])  # the centre 40x53: the 3:2 image's ratio clamped to 4:3
    torch.manual_seed(0)
    for attempts, expected in (({}, miss ** 10), ({"attempts": 1}, miss)):
        boxes = bm.sample_crop_boxes(height, width, n, scale, **attempts)
        rate = (boxes == fallback).all(dim=1).double().mean().item()
        slope = 10 * miss ** 9 if not attempts else 1.0  # the reference's own sampling error, carried to q ** 10
        spread = math.sqrt(expected * (1 - expected) / n + slope ** 2 * miss * (1 - miss) / tries)
        assert abs(rate - expected) <= 4.5 * spread, (attempts, rate, expected, miss ** 11)


def test_a_box_may_take_the_whole_width_or_height():
    """Boxes equal to the image's full width or height are allowed (``<=``), as in torchvision: with scale
    (1, 1) on a square image only the whole image fits, and it is drawn, not the fallback."""
    torch.manual_seed(0)
    boxes = bm.sample_crop_boxes(32, 32, 50, (1.0, 1.0), ratio=(1.0, 1.0))
    assert torch.equal(boxes, torch.tensor([[0.0, 0.0, 32.0, 32.0]]).expand(50, 4))
    assert bm.sample_crop_boxes(1, 1, 3, (1.0, 1.0), ratio=(1.0, 1.0)).tolist() == [[0, 0, 1, 1]] * 3
    one_pixel = bm.sample_crop_boxes(2, 2, 20, (0.25, 0.25), ratio=(1.0, 1.0))  # a 1x1 box fits and is drawn
    assert one_pixel[:, 2:].eq(1).all() and set(map(tuple, one_pixel[:, :2].tolist())) == {(0, 0), (0, 1), (1, 0), (1, 1)}


@pytest.mark.parametrize("height,width", [(40, 32), (32, 40)])
def test_a_box_of_the_full_width_or_height_slides_along_the_other_side(height, width):
    """Scale 0.8 and ratio 1 on a 40x32 image make every try a 32x32 box: it fits (``<=``), so its offset
    along the long side is drawn from all 9 positions, as torchvision's own draws are; rejecting it would leave
    only the centred fallback."""
    img = torch.zeros(3, height, width)
    torch.manual_seed(0)
    theirs = torch.tensor([T.RandomResizedCrop.get_params(img, [0.8, 0.8], [1.0, 1.0]) for _ in range(300)])
    ours = bm.sample_crop_boxes(height, width, 300, (0.8, 0.8), ratio=(1.0, 1.0)).long()
    long_side = 0 if height > width else 1
    for boxes in (theirs, ours):
        assert boxes[:, 2:].eq(32).all() and boxes[:, 1 - long_side].eq(0).all()
        assert set(boxes[:, long_side].tolist()) == set(range(9))


def test_solarize_inverts_from_128_as_pil_does():
    """Every 8-bit value through ``solarize`` equals PIL's ``ImageOps.solarize(threshold=128)``, DINO's op:
    128 and up inverted, 127 kept."""
    values = np.arange(256, dtype=np.uint8).reshape(16, 16)
    pil = np.asarray(ImageOps.solarize(Image.fromarray(values, "L"), threshold=128))
    ours = (bm.solarize(torch.from_numpy(values).float() / 255) * 255).round().to(torch.uint8).numpy()
    np.testing.assert_array_equal(ours, pil)


def test_render_with_roi_align_averages_like_avg_pool():
    """``resample="roi_align"`` reaches the render: a 64x64 image cropped whole to the 32-pixel global and
    16-pixel local crops, every other op off, is torch's 2x2 and 4x4 average pooling, normalised."""
    aug = _aug(device="cpu", resample="roi_align")
    img = (_images(1, size=64)[0] * 255).round().to(torch.uint8)
    params = torch.zeros(4, bm.NUM_PARAMS)
    params[:, :4] = torch.tensor([0.0, 0.0, 64.0, 64.0])
    crops = aug.batched.render({"source": [img], "source_is_jpeg": [False], "aug": params[None].numpy()})
    x = img.float()[None] / 255
    for crop, pool in zip(crops, (2, 2, 4, 4)):
        want = TF.normalize(F.avg_pool2d(x, pool)[0], [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
        torch.testing.assert_close(crop[0], want, atol=1e-5, rtol=0)


def test_a_planned_image_keeps_its_path_and_its_own_height(tmp_path):
    """A wide PNG (20 x 60) is planned with its file name and with boxes inside its 20 rows: the height comes
    from the pixels' first axis (PIL's size is width, height)."""
    path = tmp_path / "wide.png"
    Image.fromarray(np.full((20, 60, 3), 90, np.uint8)).save(path)
    aug = _aug(device="cpu")
    for seed in range(5):
        torch.manual_seed(seed)
        item = aug.batched.plan(path)
        assert item["path"] == str(path) and tuple(item["source"].shape) == (3, 20, 60)
        top, left, h, w = item["aug"][:, :4].unbind(1)
        assert (top + h <= 20).all() and (left + w <= 60).all() and (h >= 1).all()


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # PIL's own limit is set alongside
def test_an_image_over_the_pixel_limit_is_named_before_decoding(tmp_path):
    """The header's size against a 599-pixel limit: the error names the file, its size and the limit's setting."""
    from facefd.data.images import ImageTooLargeError, max_image_pixels, set_max_image_pixels

    path = tmp_path / "big.png"
    Image.new("RGB", (30, 20)).save(path)
    default = max_image_pixels()
    try:
        set_max_image_pixels(599)
        with pytest.raises(ImageTooLargeError, match="^" + re.escape(f"{path}: 30x20 = 600 pixels is over the limit of 599 (raise it "
                                                       "with max_image_pixels=N, or 0 for none)") + "$"):
            bm.image_size(path)
    finally:
        set_max_image_pixels(default)
    assert bm.image_size(path) == (20, 30, False)


def test_an_unknown_resampler_is_named():
    """The message lists the choices, as the constructor's does."""
    with pytest.raises(ValueError, match=r"^resample must be one of \('bicubic', 'roi_align'\), got 'nearest'$"):
        bm.crop_and_resize([torch.zeros(3, 8, 8)], _params_for_boxes([(0, 0, 8, 8)]), torch.tensor([0]), 4, "nearest")


@pytest.mark.parametrize("sigma", [0.05, 0.1, 0.5, 0.9, 1.0, 2.0, 2.4])
def test_blur_kernels_reach_three_sigma_and_no_further(sigma):
    """An odd kernel whose half-width covers 3 sigma (99.7 % of the Gaussian) by less than one tap, at least 3 taps."""
    k = bm.blur_kernel_size(sigma)
    half = (k - 1) // 2
    assert k % 2 == 1 and k >= 3 and half >= 3 * sigma and (half - 1 < 3 * sigma or half == 1)


def test_saturation_above_one_clips_like_torchvision():
    """A saturation factor of 1.8 pushes strong colours past 1: clipped to [0, 1] as torchvision's op does."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 8, 8, generator=g)
    x[:, 0] = 0.95  # a strong red channel
    factors = torch.tensor([1.8, 0.2, 1.0])
    got = bm.adjust_saturation(x, factors)
    assert float(got.max()) == 1.0
    for i, f in enumerate(factors.tolist()):
        torch.testing.assert_close(got[i], TF.adjust_saturation(x[i], f), atol=1e-4, rtol=0)  # PIL's red weight


def test_blur_of_a_crop_smaller_than_its_kernel_repeats_the_edge():
    """A 2x3 crop under a 7-tap kernel: reflection cannot pad past the edge, so the edge is repeated, as
    scipy's ``mode="nearest"`` convolution does (the reference here, separable in float64)."""
    from scipy.ndimage import correlate1d

    g = torch.Generator().manual_seed(1)
    for h, w in ((2, 3), (3, 3), (5, 4)):
        x = torch.rand(1, 3, h, w, generator=g)
        got = bm.gaussian_blur(x, torch.tensor([1.0]), 7)
        taps = np.exp(-0.5 * np.arange(-3, 4) ** 2)
        taps /= taps.sum()
        if 3 < min(h, w):  # wide enough: reflection, as torchvision pads
            want = TF.gaussian_blur(x[0], [7, 7], [1.0, 1.0]).numpy()
        else:
            want = correlate1d(correlate1d(x[0].double().numpy(), taps, axis=1, mode="nearest"), taps, axis=2,
                               mode="nearest")
        np.testing.assert_allclose(got[0].numpy(), want, atol=1e-5)


def test_roi_align_shrinks_by_three_as_an_area_average():
    """A 3x shrink samples every pixel of each 3x3 bin (the adaptive sampling ratio): the 3x3 area average."""
    x = _images(1, size=48)
    out = bm.crop_and_resize(list(x), _params_for_boxes([(0, 0, 48, 48)]), torch.tensor([0]), 16, "roi_align")
    torch.testing.assert_close(out[0], F.avg_pool2d(x, 3)[0], atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------------------- data path
@pytest.fixture(scope="module")
def jpeg_folder(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("jpegs")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(12):
        person = sample_identity(rng)
        path = folder / f"{i:02d}.jpg"
        draw_face(person, sample_view(person, rng), rng, size=40 + 8 * (i % 2)).save(path, quality=95)
        paths.append(path)
    png = folder / "12.png"
    draw_face(person, sample_view(person, rng), rng, size=40).save(png)
    return paths + [png]


def _aug(**kw):
    return MultiCropAugmentation(global_crop_size=32, local_crop_size=16, local_crops_number=2, scale_blur=True, **kw)


def test_crops_depend_on_seed_epoch_index_only(jpeg_folder):
    aug = _aug(device="cpu")
    ds = FaceImageDataset(jpeg_folder, aug, seed=7)

    def crops(workers):
        loader = DataLoader(ds, batch_size=4, num_workers=workers, collate_fn=aug.batched.collate,
                            sampler=[(i, 1) for i in range(len(ds))])
        return [torch.cat([c.flatten(1) for c in aug.batched.render(b, torch.device("cpu"))], 1) for b in loader]

    random.seed(123)
    torch.manual_seed(123)  # the caller's RNG state must not matter
    a = crops(0)
    b = crops(2)
    assert len(a) == 4 and all(torch.equal(u, v) for u, v in zip(a, b))
    other_epoch = aug.batched.collate([ds[(i, 2)] for i in range(4)])
    assert not np.array_equal(other_epoch["aug"], aug.batched.collate([ds[(i, 1)] for i in range(4)])["aug"])
    assert [t.shape for t in aug.batched.render(other_epoch)] == [(4, 3, 32, 32)] * 2 + [(4, 3, 16, 16)] * 2


def test_decode_on_device_matches_pil_and_falls_back(jpeg_folder, tmp_path):
    planned = _aug(device="cpu", decode="device").batched
    pil = _aug(device="cpu").batched

    def plans(transform):
        out = []
        for i, p in enumerate(jpeg_folder):
            torch.manual_seed(i)
            out.append(transform.plan(p))
        return out

    a, b = plans(planned), plans(pil)
    assert [x["source_is_jpeg"] for x in a] == [True] * 12 + [False]  # the PNG is decoded in the loader
    for x, y in zip(a, b):  # where the file is decoded does not change the crops
        assert torch.equal(x["aug"], y["aug"])
    decoded = planned.decode_sources(planned.collate([dict(x, index=i) for i, x in enumerate(a)]), torch.device("cpu"))
    for img, ref in zip(decoded, b):
        assert img.shape == ref["source"].shape and img.dtype == torch.uint8
        assert (img.float() - ref["source"].float()).abs().mean() < 1.0  # two JPEG decoders, same file
    # an EXIF-rotated JPEG is decoded (and rotated) by PIL in the loader
    rotated = tmp_path / "rotated.jpg"
    img = Image.open(jpeg_folder[1])
    exif = img.getexif()
    exif[0x0112] = 6
    img.save(rotated, exif=exif.tobytes())
    item = planned.plan(rotated)
    assert not item["source_is_jpeg"] and item["source"].shape[1:] == (img.width, img.height)


def test_unrendered_batch_is_a_clear_error(jpeg_folder):
    from facefd.models.dino import DINOModule

    aug = _aug(device="cpu")
    batch = aug.batched.collate([FaceImageDataset(jpeg_folder, aug)[i] for i in range(2)])
    with pytest.raises(ValueError, match="never rendered"):
        DINOModule.training_step(object(), batch, 0)


def test_undecodable_jpeg_on_the_device_names_its_file(jpeg_folder, tmp_path):
    broken = tmp_path / "broken.jpg"
    data = jpeg_folder[0].read_bytes()
    broken.write_bytes(data[: len(data) // 2])  # header intact, image data cut off
    planned = _aug(device="cpu", decode="device").batched
    items = [dict(planned.plan(p), index=i) for i, p in enumerate([jpeg_folder[1], broken])]
    assert all(it["source_is_jpeg"] for it in items)
    with pytest.raises(OSError, match=r"cannot decode JPEG .*broken\.jpg"):
        planned.decode_sources(planned.collate(items), torch.device("cpu"))
    with pytest.raises(OSError, match=r"\(data\.check_images=true finds such files before training; "
                                      r"data\.train_transform\.decode=loader decodes with PIL\)$"):
        planned.decode_sources(planned.collate(items), torch.device("cpu"))
    unnamed = [dict(it, path="") for it in items]  # a batch built without paths: the item is named instead
    with pytest.raises(OSError, match=r"cannot decode JPEG item 1 of the batch on cpu"):
        planned.decode_sources(planned.collate(unnamed), torch.device("cpu"))


def test_bad_settings_are_clear_errors():
    with pytest.raises(ValueError, match="device must be one of"):
        _aug(device="tpu")
    with pytest.raises(ValueError, match="decode=device needs"):
        _aug(decode="device")
    recipe = _default_recipe()
    for kw, message in ((dict(resample="nearest"), r"^resample must be one of \('bicubic', 'roi_align'\), got 'nearest'$"),
                        (dict(device="tpu"), r"^batched multi-crop device must be one of \('cpu', 'cuda', 'accelerator'\), got 'tpu'$"),
                        (dict(decode="gpu"), r"^decode must be one of \('loader', 'device'\), got 'gpu'$")):
        with pytest.raises(ValueError, match=message):
            bm.BatchedMultiCrop(recipe, (0.5,) * 3, (0.5,) * 3, **kw)
    default = bm.BatchedMultiCrop(recipe, (0.5,) * 3, (0.5,) * 3)  # renders on the trainer's device, PIL decodes
    assert (default.device, default.decode, default.resample) == ("accelerator", "loader", "bicubic")


def test_collate_keeps_sources_paths_indices_and_labels():
    """By hand: sources stay a list, parameters become one host array, a missing path is "", labels stack."""
    a = {"source": torch.zeros(3, 4, 5, dtype=torch.uint8), "source_is_jpeg": 0, "aug": torch.ones(4, bm.NUM_PARAMS),
         "index": 7, "path": "a.png", "attributes": torch.tensor([1.0, 0.0])}
    b = {"source": torch.ones(3, 6, 6, dtype=torch.uint8), "source_is_jpeg": 1, "aug": torch.zeros(4, bm.NUM_PARAMS),
         "index": 2, "attributes": torch.tensor([0.0, 1.0])}
    batch = bm.BatchedMultiCrop.collate([a, b])
    assert batch["source"][0] is a["source"] and batch["source"][1] is b["source"]
    assert batch["source_is_jpeg"] == [False, True] and batch["path"] == ["a.png", ""]
    assert isinstance(batch["aug"], np.ndarray) and batch["aug"].shape == (2, 4, bm.NUM_PARAMS)
    assert batch["aug"][0].min() == 1 and batch["aug"][1].max() == 0
    assert torch.equal(batch["index"], torch.tensor([7, 2]))
    assert torch.equal(batch["attributes"], torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    assert "attributes" not in bm.BatchedMultiCrop.collate([{k: v for k, v in a.items() if k != "attributes"}])


def test_grey_and_palette_images_become_rgb_and_grey_jpegs_decode_raw(tmp_path):
    """PIL's own RGB conversion is the reference for grey and palette images; a greyscale JPEG is sent raw to
    the device decoder (``image_size`` says so), and decodes to PIL's pixels up to JPEG decoder rounding."""
    grey = Image.fromarray(np.arange(48, dtype=np.uint8).reshape(6, 8) * 5, mode="L")
    palette = grey.convert("P")
    for img in (grey, palette):
        want = np.asarray(img.convert("RGB")).transpose(2, 0, 1)
        got = bm.pil_to_uint8(img)
        assert got.dtype == torch.uint8 and np.array_equal(got.numpy(), want)
    path = tmp_path / "grey.jpg"
    grey.resize((40, 32)).save(path, quality=95)
    assert bm.image_size(path) == (32, 40, True)
    planned = _aug(device="cpu", decode="device").batched
    item = dict(planned.plan(path), index=0)
    assert item["source_is_jpeg"]
    (decoded,) = planned.decode_sources(planned.collate([item]), torch.device("cpu"))
    want = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"))).permute(2, 0, 1)
    assert decoded.shape == (3, 32, 40) and (decoded.float() - want.float()).abs().max() <= 2
    cmyk = tmp_path / "cmyk.jpg"
    grey.convert("CMYK").save(cmyk)
    assert bm.image_size(cmyk) == (6, 8, False)  # decoded by PIL in the loader


@pytest.mark.slow
def test_batched_path_trains_and_resumes_exactly(tmp_path, sample_root):
    """Through train.py and Lightning with 2 loader workers: rendering on the CPU before the transfer
    (device=cpu) and on the trainer's device after it (device=accelerator) give the same crops, so a run
    resumed with the other setting ends with the same weights as the uninterrupted one."""
    from facefd.train import run

    def state(folder):
        return torch.load(folder / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]

    common = ["data.num_workers=2"]
    straight = tmp_path / "straight"
    run(compose_train(straight, common + ["data.train_transform.device=cpu"], sample_root))
    interrupted = tmp_path / "interrupted"
    run(compose_train(interrupted, common + ["data.train_transform.device=cpu",
                                             "+callbacks.stop._target_=helpers.StopAfterEpoch",
                                             "+callbacks.stop.epoch=0"], sample_root))
    resumed = tmp_path / "resumed"
    run(compose_train(resumed, common + ["data.train_transform.device=accelerator",
                                         f"ckpt_path={interrupted / 'checkpoints' / 'last.ckpt'}"], sample_root))
    a, b = state(straight), state(resumed)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)
    with pytest.raises(ValueError, match="device=cuda but the trainer runs on cpu"):
        run(compose_train(tmp_path / "cuda", ["data.train_transform.device=cuda"], sample_root))
