"""DINO self-supervised training (Caron et al. 2021) as a Lightning module."""
from facefd.utils.lazy import lazy_names

__getattr__, __dir__, __all__ = lazy_names(__name__, {
    "DINOHead": "facefd.models.dino.head", "WeightNormLinear": "facefd.models.dino.head",
    "DINOLoss": "facefd.models.dino.loss", "teacher_temperature_schedule": "facefd.models.dino.loss",
    "DINOModule": "facefd.models.dino.module", "cosine_schedule": "facefd.models.dino.schedules",
})
