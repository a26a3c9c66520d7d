"""Face detection (pluggable; offline by default) and the geometry of crops and paste-back masks."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


@dataclass(frozen=True)
class Box:
    left: int
    top: int
    right: int
    bottom: int
    score: float = 1.0

    @property
    def area(self) -> int:
        return max(0, self.right - self.left) * max(0, self.bottom - self.top)

    def as_list(self) -> list[int]:
        return [self.left, self.top, self.right, self.bottom]


class FaceDetector(Protocol):
    def __call__(self, image: Image.Image) -> list[Box]: ...


def _missing(extra: str, package: str) -> ImportError:
    return ImportError(f"this face detector needs {package}: pip install -e \".[{extra}]\"")


class DlibDetector:
    """dlib's HOG frontal-face detector (``dlib-bin``), run with one upsampling and threshold 0.3."""

    def __init__(self, upsample: int = 1, threshold: float = 0.3) -> None:
        try:
            import dlib
        except ImportError as exc:
            raise _missing("faces", "dlib (dlib-bin)") from exc
        self.detector = dlib.get_frontal_face_detector()
        self.upsample, self.threshold = upsample, threshold

    def more_sensitive(self) -> "DlibDetector":
        """The same detector on an image upsampled once more: it finds faces half the size."""
        return DlibDetector(self.upsample + 1, self.threshold)

    def __call__(self, image: Image.Image) -> list[Box]:
        array = np.asarray(image.convert("RGB"))
        rects, scores, _ = self.detector.run(array, self.upsample, self.threshold)
        h, w = array.shape[:2]
        return [Box(max(0, r.left()), max(0, r.top()), min(w, r.right()), min(h, r.bottom()), float(s))
                for r, s in zip(rects, scores)]


class OpenCVDetector:
    """OpenCV's Haar cascade (``opencv-python-headless<5``): light and fast, less accurate."""

    def __init__(self, cascade: str = "haarcascade_frontalface_default.xml", scale_factor: float = 1.1,
                 min_neighbors: int = 5) -> None:
        try:
            import cv2
        except ImportError as exc:
            raise _missing("faces", "opencv-python-headless<5") from exc
        self.cv2 = cv2
        self.classifier = cv2.CascadeClassifier(cv2.data.haarcascades + cascade)
        if self.classifier.empty():
            raise FileNotFoundError(f"OpenCV cascade {cascade} not found in {cv2.data.haarcascades}")
        self.scale_factor, self.min_neighbors = scale_factor, min_neighbors

    def __call__(self, image: Image.Image) -> list[Box]:
        grey = self.cv2.cvtColor(np.asarray(image.convert("RGB")), self.cv2.COLOR_RGB2GRAY)
        found = self.classifier.detectMultiScale(grey, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors)
        return [Box(int(x), int(y), int(x + w), int(y + h)) for x, y, w, h in found]


class WholeImage:
    """For sets that are already face crops (CelebA-HQ, FFHQ): the whole image is the face."""

    def __call__(self, image: Image.Image) -> list[Box]:
        return [Box(0, 0, image.width, image.height)]


def biggest_face(boxes: list[Box]) -> Optional[Box]:
    return max(boxes, key=lambda b: b.area) if boxes else None


def expand_square(box: Box, width: int, height: int, margin: float = 0.4) -> Box:
    """A square around the box, ``margin`` of its size added on each side, clipped to the image."""
    cx, cy = (box.left + box.right) / 2, (box.top + box.bottom) / 2
    side = max(box.right - box.left, box.bottom - box.top) * (1 + 2 * margin)
    side = min(side, width, height)
    left = int(round(min(max(cx - side / 2, 0), width - side)))
    top = int(round(min(max(cy - side / 2, 0), height - side)))
    return Box(left, top, left + int(side), top + int(side), box.score)


def soft_mask(size: tuple[int, int], box: Box, feather: float = 0.15) -> Image.Image:
    """An 'L' mask: an ellipse inscribed in ``box``, feathered by ``feather`` of the box size; zero outside it."""
    mask = Image.new("L", size, 0)
    w, h = box.right - box.left, box.bottom - box.top
    inset = feather * min(w, h) / 2
    ImageDraw.Draw(mask).ellipse([box.left + inset, box.top + inset, box.right - inset, box.bottom - inset], fill=255)
    radius = max(feather * min(w, h) / 4, 0.0)
    if radius > 0:
        blurred = mask.filter(ImageFilter.GaussianBlur(radius))
        mask = Image.new("L", size, 0)
        mask.paste(blurred.crop(box.as_list()), (box.left, box.top))  # the blur's tails stay inside the box
    return mask


def paste_face(original: Image.Image, generated: Image.Image, box: Box, feather: float = 0.15) -> Image.Image:
    """Blend ``generated`` (resized to ``box``) into a copy of ``original`` through a soft elliptical mask.
    Pixels outside ``box`` are the original's, unchanged."""
    out = original.convert("RGB").copy()
    patch = generated.convert("RGB").resize((box.right - box.left, box.bottom - box.top), Image.LANCZOS)
    layer = out.copy()
    layer.paste(patch, (box.left, box.top))
    return Image.composite(layer, out, soft_mask(out.size, box, feather))
