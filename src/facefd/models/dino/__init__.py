"""DINO self-supervised training (Caron et al. 2021) as a Lightning module."""
from facefd.models.dino.head import DINOHead, WeightNormLinear
from facefd.models.dino.loss import DINOLoss, teacher_temperature_schedule
from facefd.models.dino.module import DINOModule
from facefd.models.dino.schedules import cosine_schedule

__all__ = ["DINOHead", "DINOLoss", "DINOModule", "WeightNormLinear", "cosine_schedule", "teacher_temperature_schedule"]
