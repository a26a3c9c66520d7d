"""Naming a DINO run's collapse from the teacher's outputs, as the DINO and DINOv2 threads diagnose it.

Three numbers per epoch (means over its steps):

* the **per-sample entropy** of the teacher's targets, ``mean_b H(q_b)``: near ln K when every image gets
  the uniform distribution (the *uniform* collapse: centering won over sharpening); low for a healthy,
  sharp teacher;
* the **batch-mean entropy**, ``H(mean_b q_b)``: how many prototypes the batch uses (e^H of them); near 0
  when every image goes to the same prototype;
* the **KL divergence** between teacher and student, ``CE(q, p) - H(q)``: near 0 when the student has
  nothing left to learn.

A *dominant* collapse (one prototype takes every image) shows as a batch-mean entropy near 0 **with** a KL
near 0; a low per-sample entropy alone is a sharp teacher, which is what training wants.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch


def target_entropies(q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean per-sample entropy, entropy of the batch mean)`` of target rows ``q`` ``[B, K]`` (nats, 0-d
    tensors on ``q``'s device: reading them is left to the caller, once an epoch).

    Example:
        >>> [round(float(h), 4) + 0.0 for h in target_entropies(torch.eye(4))]  # four images, each sure of its own
        [0.0, 1.3863]
    """
    q = q.detach().float().clamp_min(0)
    per_sample = -(q * q.clamp_min(1e-30).log()).sum(dim=1).mean()
    mean = q.mean(dim=0)
    return per_sample, -(mean * mean.clamp_min(1e-30).log()).sum()


@dataclass(frozen=True)
class CollapseThresholds:
    """When an epoch counts as collapsed.

    Args:
        uniform_fraction: per-sample entropy above this fraction of ln K is the uniform collapse.
        dominant_entropy: batch-mean entropy (nats) under this, with the KL under ``dominant_kl``, is the
            dominant collapse (0.1 nats: fewer than ~1.1 prototypes in use).
        dominant_kl: the KL (nats) under which the student has stopped learning.
        patience_epochs: consecutive epochs before the warning.
    """

    uniform_fraction: float = 0.99
    dominant_entropy: float = 0.1
    dominant_kl: float = 0.01
    patience_epochs: int = 3


def diagnose(per_sample_entropy: float, batch_entropy: float, kl: float, out_dim: int,
             thresholds: CollapseThresholds = CollapseThresholds()) -> Optional[str]:
    """``"uniform"``, ``"dominant"`` or ``None`` (healthy) for one epoch's means.

    Args:
        per_sample_entropy: mean entropy of the teacher's per-image targets.
        batch_entropy: entropy of the batch-mean target.
        kl: mean KL(teacher || student).
        out_dim: K, the number of prototypes.
        thresholds: the limits.

    Returns:
        The kind of collapse, or ``None``.

    Example:
        >>> diagnose(math.log(1024) * 0.999, math.log(1024), 0.0, 1024)
        'uniform'
        >>> diagnose(0.01, 0.02, 0.001, 1024)
        'dominant'
        >>> diagnose(0.01, 5.0, 0.001, 1024) is None  # sharp but diverse: healthy
        True
    """
    if per_sample_entropy > thresholds.uniform_fraction * math.log(out_dim):
        return "uniform"
    if batch_entropy < thresholds.dominant_entropy and kl < thresholds.dominant_kl:
        return "dominant"
    return None


MESSAGES = {
    "uniform": ("DINO has collapsed to uniform outputs: the teacher's per-image entropy {h:.3f} has stayed within "
                "{pct:.0f}% of ln(out_dim)={ln_k:.3f} for {n} epochs (centering beats sharpening). Lower "
                "teacher_temp, raise center_momentum, or lower the learning rate."),
    "dominant": ("DINO has collapsed to one prototype: the teacher's batch-mean entropy {hb:.3f} nats (about "
                 "{used:.1f} prototypes in use) with KL {kl:.4f} for {n} epochs (sharpening beats centering). Raise "
                 "teacher_temp's warm-up, lower center_momentum, use model.centering=sinkhorn or koleo_weight."),
}


def message(kind: str, per_sample_entropy: float, batch_entropy: float, kl: float, out_dim: int, epochs: int,
            thresholds: CollapseThresholds = CollapseThresholds()) -> str:
    """The warning for ``kind``, with the numbers that made it."""
    return MESSAGES[kind].format(h=per_sample_entropy, pct=100 * (1 - thresholds.uniform_fraction),
                                 ln_k=math.log(out_dim), n=epochs, hb=batch_entropy, used=math.exp(batch_entropy),
                                 kl=kl)
