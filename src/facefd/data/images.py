"""Finding, checking and loading image files as RGB, with errors that name the file."""
from __future__ import annotations

import logging
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image, ImageOps
from tqdm.auto import tqdm

from facefd.utils.errors import UserError
from facefd.utils.settings import (  # noqa: F401  (re-exported: the settings images are read with)
    ALPHA_MODES, DEFAULT_MAX_IMAGE_PIXELS, alpha_mode, max_image_pixels, set_alpha_mode, set_max_image_pixels)

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
EXIF_ORIENTATION = 0x0112
class ImageFolderError(UserError, ValueError):
    """A folder that cannot be used as an image dataset (missing, empty, bad files)."""


class ImageTooLargeError(ImageFolderError):
    """An image with more pixels than ``max_image_pixels``: refused before it is decoded."""


def _check_pixels(img: Image.Image, path: str | Path) -> None:
    limit = max_image_pixels()
    if limit and img.width * img.height > limit:
        raise ImageTooLargeError(f"{path}: {img.width}x{img.height} = {img.width * img.height} pixels is over the "
                                 f"limit of {limit} (raise it with max_image_pixels=N, or 0 for none)")


class BadImagesError(ImageFolderError):
    """Unreadable or truncated images; carries the full ``[(path, reason), ...]`` list."""

    def __init__(self, bad: Sequence[tuple[str, str]], skip_option: str = "data.skip_bad_images=true"):
        self.bad = list(bad)
        shown = "\n".join(f"  {p}: {r}" for p, r in self.bad[:20])
        more = f"\n  ... and {len(self.bad) - 20} more" if len(self.bad) > 20 else ""
        super().__init__(
            f"{len(self.bad)} unreadable image file(s):\n{shown}{more}\n"
            f"Fix or remove them, or set {skip_option} to skip them."
        )


def list_images(root: str | Path, extensions: Iterable[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """All image files under ``root`` (recursive, sorted, hidden folders ignored)."""
    root = Path(root).expanduser()
    if not root.exists():
        raise ImageFolderError(f"image folder {root} does not exist")
    if not root.is_dir():
        raise ImageFolderError(f"{root} is not a folder")
    exts = {e.lower() for e in extensions}
    files = sorted(
        p for p in root.rglob("*")
        if p.suffix.lower() in exts and p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    if not files:
        raise ImageFolderError(f"no images ({', '.join(sorted(exts))}) found under {root} (searched recursively)")
    return files


def seeded_sample(paths: Sequence[Path], num: int | None, seed: int = 0) -> list[Path]:
    """At most ``num`` of ``paths``: a seeded uniform sample without replacement, kept in the listing's order.
    The one meaning of ``num_samples`` in every facefd task and command.

    Args:
        paths: the listing (sorted, as :func:`list_images` gives it).
        num: how many to keep; ``None``, 0 or at least ``len(paths)``: all of them.
        seed: the sample's seed (numpy's ``default_rng``).

    Returns:
        The kept paths, in their listing order.

    Example:
        >>> [p.name for p in seeded_sample([Path(f"{i}.png") for i in range(6)], 3, seed=0)]
        ['3.png', '4.png', '5.png']
    """
    if not num or num >= len(paths):
        return list(paths)
    keep = np.sort(np.random.default_rng(seed).choice(len(paths), size=num, replace=False))
    return [paths[i] for i in keep]


def load_rgb(path: str | Path) -> Image.Image:
    """Open any supported image as 8-bit RGB.

    EXIF orientation is applied. 16-bit images are scaled by the type's range (65535 -> 255, the same
    for every image: never a per-image contrast stretch); float images are taken as [0, 1].
    Transparency follows :func:`alpha_mode` (default ``drop``, as pytorch-fid and clean-fid).
    Images over :func:`max_image_pixels` raise :class:`ImageTooLargeError` after reading the header only.
    """
    with Image.open(path) as img:
        _check_pixels(img, path)
        if img.getexif().get(EXIF_ORIENTATION, 1) != 1:  # transpose (a copy) only when the photo asks for it
            img = ImageOps.exif_transpose(img)
        img.load()
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        scale = 255.0 if img.mode == "F" else 255.0 / 65535.0  # 16-bit PNG/TIFF open as I;16 or I
        img = Image.fromarray(np.clip(arr * scale, 0, 255).round().astype(np.uint8), mode="L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA") and alpha_mode() == "white":
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img if img.mode == "RGB" else img.convert("RGB")


def check_image(path: str | Path) -> str | None:
    """Decode the whole file; return the reason it cannot be used, or None when it is fine."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                _check_pixels(img, path)
                if img.format == "JPEG":
                    img.draft("RGB", (64, 64))  # decode at reduced scale: still reads every byte
                img.load()
                if img.width == 0 or img.height == 0:
                    return "image has zero size"
    except Exception as exc:  # noqa: BLE001 -- any decoder error means the file is unusable
        return f"{type(exc).__name__}: {exc}"
    return None


def find_bad_images(paths: Sequence[Path], num_threads: int = 4, progress: bool = True) -> list[tuple[str, str]]:
    """Check every file (threads: PIL releases the GIL while decoding)."""
    with ThreadPoolExecutor(max_workers=max(num_threads, 1)) as pool:
        reasons = list(
            tqdm(pool.map(check_image, paths), total=len(paths), desc="checking images", disable=not progress, leave=False)
        )
    return [(str(p), r) for p, r in zip(paths, reasons) if r is not None]


def drop_bad_images(paths: Sequence[Path], skip_bad_images: bool = False, progress: bool = True) -> list[Path]:
    """``paths`` without unreadable files. Any bad file stops the task with the list of paths, unless
    ``skip_bad_images``: then they are logged and left out."""
    bad = find_bad_images(paths, progress=progress)
    if not bad:
        return list(paths)
    if not skip_bad_images:
        raise BadImagesError(bad)
    logging.getLogger(__name__).warning("skipping %d unreadable image(s) (first: %s: %s)", len(bad), *bad[0])
    skip = {p for p, _ in bad}
    return [p for p in paths if str(p) not in skip]


def check_statistics_source(source: str | Path, min_images: int = 2) -> None:
    """A folder with at least ``min_images`` images, or an existing ``.npz`` (read and checked later)."""
    source = Path(source).expanduser()
    if source.suffix == ".npz":
        if not source.is_file():
            raise ImageFolderError(f"statistics file {source} does not exist")
        return
    count = len(list_images(source))
    if count < min_images:
        raise ImageFolderError(f"{source} holds {count} image(s); a mean and covariance need at least {min_images}")
