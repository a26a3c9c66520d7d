"""DINO multi-crop as batched tensor operations on the training device (the GPU when there is one).

The PIL pipeline (:class:`~facefd.data.transforms.MultiCropAugmentation` with ``device="loader"``) draws
and renders every crop of every image in the loader workers; on a fast GPU those workers cannot keep up.
Here the work is split in two:

* **plan** (loader worker, per image, cheap): read the image (or, for ``decode="device"``, only the JPEG
  header and bytes) and draw every random parameter of every crop: box, flip, colour-jitter factors and
  order, grayscale, blur sigma, solarisation. The draws happen under the dataset's per-(seed, epoch,
  index) seed, so the crops stay a function of (seed, epoch, index): resume, worker count and DDP do not
  change them.
* **render** (the device, per batch): crop and resize every box (bicubic, antialiased, as torchvision's
  ``RandomResizedCrop`` on tensors; or all boxes in one ``roi_align`` call), then flip, jitter, grayscale, blur and solarise as masked batched tensor ops, and normalise.

Parameters follow the reference recipe's distributions (torchvision ``RandomResizedCrop``,
``ColorJitter``, ``RandomGrayscale``, DINO's blur and solarisation); ``tests/test_batched_multicrop.py``
checks their statistics against torchvision's own draws and each op against torchvision's functional op
on tensors (PIL's uint8 versions of the same ops round differently).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from facefd.data.images import EXIF_ORIENTATION, _check_pixels, load_rgb

#: columns of one crop's parameter row
TOP, LEFT, HEIGHT, WIDTH, FLIP, JITTER, BRIGHTNESS, CONTRAST, SATURATION, HUE = range(10)
ORDER = slice(10, 14)  # the colour-jitter ops' order (a permutation of 0..3: brightness, contrast, saturation, hue)
GRAY, SIGMA, SOLARIZE = 14, 15, 16
NUM_PARAMS = 17
#: PIL's luma weights (ITU-R 601-2), also torchvision's rgb_to_grayscale
LUMA = (0.299, 0.587, 0.114)
#: where the reference (PIL, 8 bit) solarises: pixel values >= 128 of 255
SOLARIZE_THRESHOLD = 128 / 255
DEVICES = ("loader", "cpu", "cuda", "accelerator")
DECODES = ("loader", "device")


# --------------------------------------------------------------------------------------------- plan
def sample_crop_boxes(height: int, width: int, n: int, scale: Sequence[float],
                      ratio: Sequence[float] = (3 / 4, 4 / 3), attempts: int = 10) -> torch.Tensor:
    """``[n, 4]`` boxes ``(top, left, h, w)`` drawn as ``RandomResizedCrop`` draws them (torch's global RNG):
    up to ``attempts`` tries of area ~ U(scale) x image area and log aspect ratio ~ U(log ratio), the first
    that fits wins, else the centre crop with the ratio clamped to the range."""
    area = height * width
    target = area * torch.empty(n, attempts).uniform_(scale[0], scale[1])
    aspect = torch.exp(torch.empty(n, attempts).uniform_(math.log(ratio[0]), math.log(ratio[1])))
    w = torch.sqrt(target * aspect).round()
    h = torch.sqrt(target / aspect).round()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.int().argmax(dim=1)
    rows = torch.arange(n)
    h, w, found = h[rows, first], w[rows, first], fits.any(dim=1)
    top = torch.floor(torch.rand(n) * (height - h + 1))
    left = torch.floor(torch.rand(n) * (width - w + 1))
    if not bool(found.all()):
        in_ratio = width / height
        if in_ratio < min(ratio):
            fw, fh = width, int(round(width / min(ratio)))
        elif in_ratio > max(ratio):
            fh, fw = height, int(round(height * max(ratio)))
        else:
            fw, fh = width, height
        fallback = torch.tensor([(height - fh) // 2, (width - fw) // 2, fh, fw], dtype=torch.float32)
        boxes = torch.stack([top, left, h, w], dim=1)
        boxes[~found] = fallback
        return boxes
    return torch.stack([top, left, h, w], dim=1)


@dataclass(frozen=True)
class MultiCropRecipe:
    """The random choices of DINO's multi-crop (all reference defaults live in ``MultiCropAugmentation``)."""

    global_crops_scale: tuple[float, float]
    local_crops_scale: tuple[float, float]
    local_crops_number: int
    global_crop_size: int
    local_crop_size: int
    brightness: float
    contrast: float
    saturation: float
    hue: float
    color_jitter_p: float
    grayscale_p: float
    blur_p: tuple[float, float, float]
    global_blur_radius: tuple[float, float]
    local_blur_radius: tuple[float, float]
    solarize_p: float
    flip_p: float

    @property
    def num_crops(self) -> int:
        return 2 + self.local_crops_number


def sample_multicrop_params(height: int, width: int, recipe: MultiCropRecipe) -> torch.Tensor:
    """``[2 + local_crops_number, NUM_PARAMS]``: every random choice for the crops of one image (torch's
    global RNG, so the dataset's per-(seed, epoch, index) seeding makes them reproducible)."""
    n, r = recipe.num_crops, recipe
    params = torch.zeros(n, NUM_PARAMS)
    params[:2, :4] = sample_crop_boxes(height, width, 2, r.global_crops_scale)
    if n > 2:
        params[2:, :4] = sample_crop_boxes(height, width, n - 2, r.local_crops_scale)
    params[:, FLIP] = (torch.rand(n) < r.flip_p).float()
    params[:, JITTER] = (torch.rand(n) < r.color_jitter_p).float()
    params[:, BRIGHTNESS] = torch.empty(n).uniform_(max(0.0, 1 - r.brightness), 1 + r.brightness)
    params[:, CONTRAST] = torch.empty(n).uniform_(max(0.0, 1 - r.contrast), 1 + r.contrast)
    params[:, SATURATION] = torch.empty(n).uniform_(max(0.0, 1 - r.saturation), 1 + r.saturation)
    params[:, HUE] = torch.empty(n).uniform_(-r.hue, r.hue)
    params[:, ORDER] = torch.argsort(torch.rand(n, 4), dim=1).float()
    params[:, GRAY] = (torch.rand(n) < r.grayscale_p).float()
    blur_p = torch.tensor([r.blur_p[0], r.blur_p[1]] + [r.blur_p[2]] * (n - 2))
    lo = torch.tensor([r.global_blur_radius[0]] * 2 + [r.local_blur_radius[0]] * (n - 2))
    hi = torch.tensor([r.global_blur_radius[1]] * 2 + [r.local_blur_radius[1]] * (n - 2))
    blurred = torch.rand(n) < blur_p
    params[:, SIGMA] = torch.where(blurred, lo + torch.rand(n) * (hi - lo), torch.zeros(n))
    params[1, SOLARIZE] = float(torch.rand(()) < r.solarize_p)  # the second global crop only
    return params


def image_size(path: str | Path) -> tuple[int, int, bool]:
    """``(height, width, raw_jpeg_ok)`` from the header only; ``raw_jpeg_ok``: an RGB/grey JPEG without an
    EXIF rotation, which ``torchvision.io.decode_jpeg`` renders as PIL does (others are decoded by PIL)."""
    with Image.open(path) as img:
        _check_pixels(img, path)
        rotated = img.getexif().get(EXIF_ORIENTATION, 1) != 1
        width, height = img.size
        return height, width, img.format == "JPEG" and img.mode in ("RGB", "L") and not rotated


def pil_to_uint8(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> uint8 ``[3, H, W]``."""
    return torch.from_numpy(np.array(image.convert("RGB"), dtype=np.uint8)).permute(2, 0, 1).contiguous()


# --------------------------------------------------------------------------------------------- ops
def rgb_to_gray(x: torch.Tensor) -> torch.Tensor:
    """``[N, 3, H, W]`` -> ``[N, 1, H, W]`` luma."""
    return LUMA[0] * x[:, 0:1] + LUMA[1] * x[:, 1:2] + LUMA[2] * x[:, 2:3]


def _per_sample(v: torch.Tensor) -> torch.Tensor:
    return v.view(-1, 1, 1, 1).to(torch.float32)


def _on(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``t`` (host parameters or row indices) on ``x``'s device, without waiting for it."""
    return t.to(x.device, non_blocking=True)


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (x * _per_sample(_on(x, factor))).clamp(0, 1)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    mean = rgb_to_gray(x).mean(dim=(1, 2, 3), keepdim=True)
    f = _per_sample(_on(x, factor))
    return (f * x + (1 - f) * mean).clamp(0, 1)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    f = _per_sample(_on(x, factor))
    return (f * x + (1 - f) * rgb_to_gray(x)).clamp(0, 1)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    maxc, _ = x.max(dim=1)
    minc, _ = x.min(dim=1)
    delta = maxc - minc
    s = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc))
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    h = torch.where(maxc == r, ((g - b) / safe) % 6,
                    torch.where(maxc == g, (b - r) / safe + 2, (r - g) / safe + 4))
    h = torch.where(delta > 0, h / 6, torch.zeros_like(h)) % 1.0
    return torch.stack([h, s, maxc], dim=1)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    h, s, v = x.unbind(1)
    k = torch.stack([(5 + h * 6) % 6, (3 + h * 6) % 6, (1 + h * 6) % 6], dim=1)  # R, G, B
    vs = (v * s).unsqueeze(1)
    return v.unsqueeze(1) - vs * torch.clamp(torch.minimum(k, 4 - k), 0, 1)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    hsv = rgb_to_hsv(x)
    hue = (hsv[:, 0] + _on(x, shift).view(-1, 1, 1).to(x.dtype)) % 1.0
    return hsv_to_rgb(torch.stack([hue, hsv[:, 1], hsv[:, 2]], dim=1)).clamp(0, 1)


def solarize(x: torch.Tensor) -> torch.Tensor:
    """Values in [0, 1] from 128/255 up inverted (``1 - x``), as PIL's ``ImageOps.solarize(img, 128)`` does to
    8-bit pixels.

    Args:
        x: images with values in [0, 1], any shape.

    Returns:
        A new tensor of ``x``'s shape.

    Example:
        >>> (solarize(torch.tensor([127, 128]) / 255) * 255).round()
        tensor([127., 127.])
    """
    return torch.where(x >= SOLARIZE_THRESHOLD, 1 - x, x)


JITTER_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)
JITTER_FACTORS = (BRIGHTNESS, CONTRAST, SATURATION, HUE)


def apply_to_rows(x: torch.Tensor, flags: torch.Tensor, params: torch.Tensor, op) -> torch.Tensor:
    """``x`` (changed in place) with ``op(x[rows], params[rows])`` on the rows where the host-side ``flags``
    are set."""
    rows = torch.nonzero(flags).flatten()
    if rows.numel():
        on_device = _on(x, rows)
        x.index_copy_(0, on_device, op(x.index_select(0, on_device), params[rows]))
    return x


def color_jitter(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """ColorJitter with each row's own factors and op order, on the rows whose ``JITTER`` flag is set
    (in place: ``x`` is a fresh batch of crops). ``params`` may stay on the host: rows are chosen there,
    without a copy back from the GPU."""
    applied = params[:, JITTER] > 0
    order = params[:, ORDER].long()
    for slot in range(4):
        for op, (fn, column) in enumerate(zip(JITTER_OPS, JITTER_FACTORS)):
            x = apply_to_rows(x, applied & (order[:, slot] == op), params[:, column], fn)
    return x


def blur_kernel_size(max_sigma: float) -> int:
    """Odd kernel covering +-3 sigma of the largest blur a crop type can draw."""
    return 2 * max(1, math.ceil(3 * max_sigma)) + 1


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Separable Gaussian blur with each row's own sigma (0: unchanged), reflect padding (torchvision's)."""
    n, c, h, w = x.shape
    half = kernel_size // 2
    taps = torch.linspace(-half, half, kernel_size, device=x.device, dtype=x.dtype)
    s = sigma.to(device=x.device, dtype=x.dtype).view(-1, 1)
    kernel = torch.exp(-0.5 * (taps / torch.where(s > 0, s, torch.ones_like(s))) ** 2)
    kernel = torch.where(s > 0, kernel, (taps == 0).to(x.dtype).expand_as(kernel))
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # [n * c, K]
    mode = "reflect" if half < min(h, w) else "replicate"
    y = F.pad(x.reshape(1, n * c, h, w), (half, half, half, half), mode=mode)
    y = F.conv2d(y, kernel.view(n * c, 1, kernel_size, 1), groups=n * c)
    y = F.conv2d(y, kernel.view(n * c, 1, 1, kernel_size), groups=n * c)
    return y.view(n, c, h, w)


RESAMPLERS = ("bicubic", "roi_align")


def crop_and_resize(images: Sequence[torch.Tensor], params: torch.Tensor, owners: torch.Tensor, size: int,
                    resample: str = "bicubic") -> torch.Tensor:
    """``[K, 3, size, size]`` on the images' device: box ``params[k, :4]`` of image ``owners[k]`` (float
    ``[3, H, W]`` each, sizes may differ; ``params`` and ``owners`` on the host). ``bicubic``: each box through
    ``F.interpolate(bicubic, antialias=True)``, what torchvision's ``RandomResizedCrop(interpolation=BICUBIC)``
    does to a tensor (one call per crop); ``roi_align``: every box of a batch in one
    ``torchvision.ops.roi_align`` call (bilinear, area-averaged when shrinking)."""
    device = images[0].device
    out = torch.empty(len(params), 3, size, size, device=device, dtype=torch.float32)
    if resample == "bicubic":
        for k, ((top, left, h, w), owner) in enumerate(zip(params[:, :4].long().tolist(), owners.tolist())):
            crop = images[owner][None, :, top:top + h, left:left + w]
            out[k] = F.interpolate(crop, size=(size, size), mode="bicubic", antialias=True, align_corners=False)[0]
        return out.clamp_(0, 1)
    if resample != "roi_align":
        raise ValueError(f"resample must be one of {RESAMPLERS}, got {resample!r}")
    from torchvision.ops import roi_align

    shapes: dict[tuple[int, ...], list[int]] = {}
    for i, img in enumerate(images):
        shapes.setdefault(tuple(img.shape), []).append(i)
    for members in shapes.values():
        local = torch.full((len(images),), -1, dtype=torch.long)
        local[torch.tensor(members)] = torch.arange(len(members))
        rows = torch.nonzero(local[owners] >= 0).flatten()
        p = params[rows].float()
        boxes = torch.stack([local[owners[rows]].float(), p[:, LEFT], p[:, TOP], p[:, LEFT] + p[:, WIDTH],
                             p[:, TOP] + p[:, HEIGHT]], dim=1)
        stack = torch.stack([images[i] for i in members])
        out[_on(out, rows)] = roi_align(stack, _on(out, boxes), output_size=size, spatial_scale=1.0,
                                        sampling_ratio=-1, aligned=True)
    return out


# --------------------------------------------------------------------------------------------- the transform
class BatchedMultiCrop:
    """Plans crops per image in the loader and renders them per batch on the device (module docstring).

    ``device``: ``cpu`` renders in the main process before the batch moves; ``cuda`` / ``accelerator``
    render on the trainer's device after it moved (``cuda`` also checks that it is a GPU). ``decode="device"``
    sends baseline JPEG files undecoded and decodes them with ``torchvision.io.decode_jpeg`` on that
    device (nvJPEG on a GPU); other files are decoded in the loader. ``resample``: see :func:`crop_and_resize`.
    """

    def __init__(self, recipe: MultiCropRecipe, mean: Sequence[float], std: Sequence[float],
                 device: str = "accelerator", decode: str = "loader", resample: str = "bicubic") -> None:
        if resample not in RESAMPLERS:
            raise ValueError(f"resample must be one of {RESAMPLERS}, got {resample!r}")
        self.resample = resample
        if device not in DEVICES[1:]:
            raise ValueError(f"batched multi-crop device must be one of {DEVICES[1:]}, got {device!r}")
        if decode not in DECODES:
            raise ValueError(f"decode must be one of {DECODES}, got {decode!r}")
        self.recipe, self.device, self.decode = recipe, device, decode
        self.mean, self.std = tuple(mean), tuple(std)
        self.global_kernel = blur_kernel_size(recipe.global_blur_radius[1])
        self.local_kernel = blur_kernel_size(recipe.local_blur_radius[1])

    # ---- loader side
    def plan(self, path: str | Path) -> dict[str, Any]:
        """One image's source (uint8 pixels, or JPEG bytes for ``decode="device"``) and crop parameters."""
        if self.decode == "device":
            height, width, raw_ok = image_size(path)
            if raw_ok:
                data = torch.from_numpy(np.fromfile(str(path), dtype=np.uint8))
                return {"source": data, "source_is_jpeg": True, "path": str(path),
                        "aug": sample_multicrop_params(height, width, self.recipe)}
        pixels = pil_to_uint8(load_rgb(path))
        return {"source": pixels, "source_is_jpeg": False, "path": str(path),
                "aug": sample_multicrop_params(pixels.shape[1], pixels.shape[2], self.recipe)}

    @staticmethod
    def collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Sources stay a list (sizes differ); parameters and flags stay host-side (numpy / Python), so the
        transfer to the GPU moves only images, index and labels."""
        batch: dict[str, Any] = {
            "source": [it["source"] for it in items],
            "source_is_jpeg": [bool(it["source_is_jpeg"]) for it in items],
            "path": [it.get("path", "") for it in items],  # names a file the device cannot decode
            "aug": torch.stack([it["aug"] for it in items]).numpy(),  # numpy: stays on the host (render)
            "index": torch.tensor([it["index"] for it in items]),
        }
        if "attributes" in items[0]:
            batch["attributes"] = torch.stack([it["attributes"] for it in items])
        return batch

    # ---- device side
    def decode_sources(self, batch: dict[str, Any], device: torch.device) -> list[torch.Tensor]:
        """uint8 ``[3, H, W]`` images on ``device``: JPEG bytes decoded there, pixels moved there."""
        sources, is_jpeg = batch["source"], [bool(j) for j in batch["source_is_jpeg"]]
        jpeg_rows = [i for i, j in enumerate(is_jpeg) if j]
        out: list[Optional[torch.Tensor]] = [None if j else s.to(device, non_blocking=True) for s, j in zip(sources, is_jpeg)]
        if jpeg_rows:
            from torchvision.io import ImageReadMode, decode_jpeg

            try:
                decoded = decode_jpeg([sources[i].cpu() for i in jpeg_rows], mode=ImageReadMode.RGB, device=device)
            except RuntimeError:
                decoded = [self._decode_one(sources[i], batch, i, device) for i in jpeg_rows]
            for i, img in zip(jpeg_rows, decoded if isinstance(decoded, list) else [decoded]):
                out[i] = img
        return out  # type: ignore[return-value]

    @staticmethod
    def _decode_one(data: torch.Tensor, batch: dict[str, Any], i: int, device: torch.device) -> torch.Tensor:
        """One JPEG of a batch that failed to decode as a whole: decoded alone, or an error naming its file."""
        from torchvision.io import ImageReadMode, decode_jpeg

        try:
            return decode_jpeg(data.cpu(), mode=ImageReadMode.RGB, device=device)
        except RuntimeError as exc:
            paths = batch.get("path") or []
            name = paths[i] if i < len(paths) and paths[i] else f"item {i} of the batch"
            raise OSError(f"cannot decode JPEG {name} on {device}: {exc} (data.check_images=true finds such files "
                          "before training; data.train_transform.decode=loader decodes with PIL)") from exc

    def render(self, batch: dict[str, Any], device: Optional[torch.device] = None) -> list[torch.Tensor]:
        """The crops of a planned batch: ``[global 1, global 2, local 1, ...]``, each ``[B, 3, S, S]``, on
        ``device`` (default: where the batch's images are). The parameters stay on the host (a numpy array
        the transfer leaves alone): rows and boxes are chosen there, without a copy back from the GPU."""
        device = torch.device(device) if device is not None else batch["source"][0].device
        images = [img.to(device).float().div_(255) for img in self.decode_sources(batch, device)]
        params = torch.as_tensor(batch["aug"]).cpu()
        b, n = params.shape[:2]
        flat = params.transpose(0, 1).reshape(n * b, NUM_PARAMS)  # crop-major: crop c of image i at c * b + i
        owners = torch.arange(b).repeat(n)
        mean = torch.tensor(self.mean, device=device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=device).view(1, 3, 1, 1)
        crops = []
        for first, last, size, kernel in ((0, 2, self.recipe.global_crop_size, self.global_kernel),
                                          (2, n, self.recipe.local_crop_size, self.local_kernel)):
            if last <= first:
                continue
            p = flat[first * b:last * b]
            x = crop_and_resize(images, p, owners[first * b:last * b], size, self.resample)  # fresh: changed in place below
            x = apply_to_rows(x, p[:, FLIP] > 0, p, lambda v, q: v.flip(-1))
            x = color_jitter(x, p)
            x = apply_to_rows(x, p[:, GRAY] > 0, p, lambda v, q: rgb_to_gray(v).expand_as(v))
            x = apply_to_rows(x, p[:, SIGMA] > 0, p[:, SIGMA], lambda v, sigma, k=kernel: gaussian_blur(v, sigma, k))
            x = apply_to_rows(x, p[:, SOLARIZE] > 0, p, lambda v, q: solarize(v))
            crops.extend(((x - mean) / std).view(last - first, b, 3, size, size).unbind(0))
        return list(crops)
