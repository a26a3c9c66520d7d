"""Each benchmark perturbation changes pixels as specified, checked against numpy/scipy written here."""
import numpy as np
import pytest
import torch
from scipy import ndimage

from facefd.evaluation import perturbations as P


def _image(h=48, w=40, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).random((3, h, w), dtype=np.float32))


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_flips_and_rotation_move_pixels():
    x = _image()
    a = x.numpy()
    np.testing.assert_array_equal(P.VerticalFlip()(x, _gen()).numpy(), a[:, ::-1, :])
    np.testing.assert_array_equal(P.HorizontalFlip()(x, _gen()).numpy(), a[:, :, ::-1])
    np.testing.assert_array_equal(P.Rotate90()(x, _gen()).numpy(), np.rot90(a, 1, axes=(1, 2)))
    np.testing.assert_array_equal(P.Rotate90(turns=2)(x, _gen()).numpy(), a[:, ::-1, ::-1])


def test_random_erasing_blanks_only_square_patches():
    x = _image(64, 64) * 0.5 + 0.25  # never exactly 0
    y = P.RandomErasing(num_patches=3, patch_fraction=0.125, value=0.0)(x, _gen(1))
    erased = (y == 0).all(0)
    assert 64 <= int(erased.sum()) <= 3 * 64  # three 8x8 patches, maybe overlapping
    assert torch.equal(y[:, ~erased], x[:, ~erased])  # nothing else changes
    labels, count = ndimage.label(erased.numpy())
    assert 1 <= count <= 3
    assert torch.equal(P.RandomErasing(3, 0.125)(x, _gen(1)), y)  # same seed, same patches
    assert not torch.equal(P.RandomErasing(3, 0.125)(x, _gen(2)), y)


def test_gaussian_blur_matches_scipy():
    x = _image(40, 40)
    sigma = 1.5
    y = P.GaussianBlur(sigma)(x, _gen()).numpy()
    # torchvision pads by reflection without repeating the edge: scipy's "mirror"; radius ceil(3 sigma)
    ref = np.stack([ndimage.gaussian_filter(c, sigma, mode="mirror", truncate=np.ceil(3 * sigma) / sigma)
                    for c in x.numpy()])
    np.testing.assert_allclose(y, ref, atol=2e-5)


def test_gaussian_noise_has_the_stated_std_and_is_seeded():
    x = torch.full((3, 128, 128), 0.5)
    y = P.GaussianNoise(std=0.05)(x, _gen(3))
    diff = (y - x).numpy()
    assert abs(diff.mean()) < 2e-3 and diff.std() == pytest.approx(0.05, rel=0.03)
    assert torch.equal(P.GaussianNoise(0.05)(x, _gen(3)), y)
    assert not torch.equal(P.GaussianNoise(0.05)(x, _gen(4)), y)


def test_jpeg_loses_more_at_lower_quality():
    x = _image(64, 64)
    err = {q: float((P.JPEGCompression(q)(x, _gen()) - x).abs().mean()) for q in (5, 50, 95)}
    assert err[5] > err[50] > err[95] > 0


def test_pixelate_makes_blocks_of_the_block_mean():
    x = _image(48, 40)
    y = P.Pixelate(block=8)(x, _gen()).numpy()
    blocks = x.numpy().reshape(3, 6, 8, 5, 8).mean(axis=(2, 4))
    np.testing.assert_allclose(y, np.repeat(np.repeat(blocks, 8, axis=1), 8, axis=2), atol=1e-6)


def test_grayscale_is_luma_in_every_channel():
    x = _image()
    y = P.Grayscale(1.0)(x, _gen()).numpy()
    luma = 0.299 * x[0].numpy() + 0.587 * x[1].numpy() + 0.114 * x[2].numpy()
    for c in range(3):
        np.testing.assert_allclose(y[c], luma, atol=2e-3)
    half = P.Grayscale(0.5)(x, _gen()).numpy()
    np.testing.assert_allclose(half, 0.5 * x.numpy() + 0.5 * y, atol=1e-6)


def test_center_zoom_stretches_the_middle():
    w = 64
    ramp = torch.linspace(0, 1, w).expand(3, w, w).clone()  # value = column / (w - 1)
    y = P.CenterZoom(2.0)(ramp, _gen())
    # the middle half of the columns now spans the whole width: value ~ 0.25 + 0.5 * column / w
    expected = 0.25 + 0.5 * (torch.arange(w) + 0.5) / w
    assert (y[0, w // 2] - expected).abs()[4:-4].max() < 0.02


def test_center_zoom_equals_pils_centre_crop_and_resize():
    """Random pixels (so a zoom a few % off, or a crop shifted by one pixel, changes most values): PIL crops the
    central 1/factor of each side (rounded, centred as (size - crop) // 2) and resizes it back with bilinear
    interpolation, channel by channel in float mode."""
    import numpy as np
    from PIL import Image

    image = torch.rand(3, 48, 64, generator=torch.Generator().manual_seed(3))
    for factor in (1.5, 2.0):
        got = P.CenterZoom(factor)(image, _gen())
        ch, cw = round(48 / factor), round(64 / factor)
        top, left = (48 - ch) // 2, (64 - cw) // 2
        want = [np.asarray(Image.fromarray(c.numpy(), mode="F").crop((left, top, left + cw, top + ch))
                           .resize((64, 48), Image.BILINEAR)) for c in image]
        np.testing.assert_allclose(got.numpy(), np.stack(want), atol=1e-4)


def test_color_jitter_brightness_scales_every_pixel_by_one_factor():
    x = _image() * 0.5
    y = P.ColorJitter(brightness=0.4, contrast=0.0, saturation=0.0, hue=0.0)(x, _gen(5))
    ratio = (y / x).flatten()
    assert float(ratio.std()) < 1e-5 and 0.6 <= float(ratio.mean()) <= 1.4 and abs(float(ratio.mean()) - 1) > 1e-4
    assert torch.equal(P.ColorJitter(0.4, 0.0, 0.0, 0.0)(x, _gen(5)), y)


def test_descriptions_distinguish_settings():
    assert P.GaussianBlur(1.0).describe() != P.GaussianBlur(2.0).describe()
    assert P.image_generator(0, 5).initial_seed() == P.image_generator(0, 5).initial_seed()
    assert P.image_generator(0, 5).initial_seed() != P.image_generator(0, 6).initial_seed()
