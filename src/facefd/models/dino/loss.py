"""DINO cross-entropy with teacher centering and sharpening (reference ``main_dino.DINOLoss``)."""
from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from facefd.models.dino.collapse import target_entropies


def teacher_temperature_schedule(
    warmup_teacher_temp: float, teacher_temp: float, warmup_teacher_temp_epochs: int, nepochs: int
) -> np.ndarray:
    """Linear warm-up of the teacher temperature over epochs, then constant."""
    warmup = np.linspace(warmup_teacher_temp, teacher_temp, warmup_teacher_temp_epochs)
    return np.concatenate((warmup, np.ones(max(nepochs - warmup_teacher_temp_epochs, 0)) * teacher_temp))


def sinkhorn_knopp(logits: torch.Tensor, temperature: float, iterations: int = 3) -> torch.Tensor:
    """Teacher targets by Sinkhorn-Knopp (SwAV; DINOv2's alternative to DINO's EMA centering).

    ``logits`` ``[B, K]`` -> ``[B, K]`` rows that each sum to 1, alternately rescaled so that every
    prototype gets an equal share of the batch (``B / K`` rows' worth): the teacher may not pile a batch
    onto a few prototypes, so the student has to tell more images apart. Under DDP the prototype sums are
    reduced over all processes, so the equal shares hold for the global batch.

    Args:
        logits: the teacher's ``[B, K]`` scores.
        temperature: the teacher temperature the scores are divided by.
        iterations: rounds of the two normalisations (SwAV and DINOv2: 3).

    Returns:
        ``[B, K]`` float32 targets, each row summing to 1.

    Example:
        >>> q = sinkhorn_knopp(torch.tensor([[2.0, 0.0], [1.0, 0.0]]), temperature=1.0, iterations=50)
        >>> [round(float(v), 3) for v in q.sum(0)]  # both prototypes get half the batch
        [1.0, 1.0]
    """
    distributed = dist.is_available() and dist.is_initialized()
    # In the log domain: at DINO's sharp temperatures exp() of the scores underflows float32 (0 / 0 = NaN).
    # SwAV also scales every column to B/K and the total to 1; constant factors cancel in the row step that
    # ends each round, so only the two normalisations are kept (and no all-reduce of the batch size).
    log_q = logits.detach().float() / temperature
    for _ in range(iterations):
        log_q = log_q - _logsumexp_over_batch(log_q, distributed)  # every prototype the same share
        log_q = log_q - torch.logsumexp(log_q, dim=1, keepdim=True)  # every row a distribution
    return log_q.exp()


def _logsumexp_over_batch(log_q: torch.Tensor, distributed: bool) -> torch.Tensor:
    """``log sum_b exp(log_q[b, k])`` per prototype, over the rows of every process."""
    if not distributed:
        return torch.logsumexp(log_q, dim=0, keepdim=True)
    peak = log_q.max(dim=0, keepdim=True).values
    dist.all_reduce(peak, op=dist.ReduceOp.MAX)
    total = torch.exp(log_q - peak).sum(dim=0, keepdim=True)
    dist.all_reduce(total)
    return peak + torch.log(total)


class DINOLoss(nn.Module):
    """Loss between ``ncrops`` student views and the 2 global teacher views.

    ``forward`` follows the reference exactly: the loss is the mean over all (teacher view,
    student view) pairs with different views of ``sum(-q * log_softmax(s / student_temp))``.

    The center is a registered buffer (so it is checkpointed). By default it is updated at every
    ``forward`` like the reference; with ``defer_center_update=True`` the teacher batch sums are
    accumulated and applied once by :meth:`apply_center_update` -- the Lightning module does this
    after each optimizer step, so gradient accumulation does not update the center per micro-batch.

    Example:
        Uniform outputs give the cross-entropy of two uniform distributions over K prototypes, ln K:

        >>> import torch
        >>> from facefd.models.dino import DINOLoss
        >>> loss = DINOLoss(out_dim=4, ncrops=2, warmup_teacher_temp=0.04, teacher_temp=0.04,
        ...                 warmup_teacher_temp_epochs=0, nepochs=1)
        >>> round(float(loss(torch.zeros(2 * 3, 4), torch.zeros(2 * 3, 4), epoch=0)), 4)  # ln 4
        1.3863
    """

    center: torch.Tensor

    def __init__(
        self,
        out_dim: int,
        ncrops: int,
        warmup_teacher_temp: float,
        teacher_temp: float,
        warmup_teacher_temp_epochs: int,
        nepochs: int,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
        defer_center_update: bool = False,
        centering: str = "ema",
        sinkhorn_iterations: int = 3,
    ) -> None:
        super().__init__()
        if centering not in ("ema", "sinkhorn"):
            raise ValueError(f"centering must be 'ema' (DINO) or 'sinkhorn' (SwAV / DINOv2), got {centering!r}")
        if sinkhorn_iterations < 1:
            raise ValueError(f"sinkhorn_iterations must be at least 1, got {sinkhorn_iterations}")
        self.centering = centering
        self.sinkhorn_iterations = sinkhorn_iterations
        self.ncrops = ncrops
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.defer_center_update = defer_center_update
        self.register_buffer("center", torch.zeros(1, out_dim))
        self.last_entropies: tuple[torch.Tensor, torch.Tensor] | None = None
        self.register_buffer("_pending_sum", torch.zeros(1, out_dim), persistent=False)
        self._pending_count = 0  # rows accumulated on this process; a host int, so no GPU sync
        self.teacher_temp_schedule = teacher_temperature_schedule(
            warmup_teacher_temp, teacher_temp, warmup_teacher_temp_epochs, nepochs
        )

    def teacher_temp(self, epoch: int) -> float:
        return float(self.teacher_temp_schedule[min(epoch, len(self.teacher_temp_schedule) - 1)])

    def forward(self, student_output: torch.Tensor, teacher_output: torch.Tensor, epoch: int) -> torch.Tensor:
        student_out = (student_output.float() / self.student_temp).chunk(self.ncrops)
        temp = self.teacher_temp(epoch)
        if self.centering == "sinkhorn":
            teacher_out = sinkhorn_knopp(teacher_output, temp, self.sinkhorn_iterations).chunk(2)
        else:
            teacher_out = F.softmax((teacher_output.float() - self.center) / temp, dim=-1).detach().chunk(2)

        total_loss = student_output.new_zeros((), dtype=torch.float32)
        n_loss_terms = 0
        for iq, q in enumerate(teacher_out):
            for v, s in enumerate(student_out):
                if v == iq:
                    continue  # never compare a view with itself
                total_loss = total_loss + torch.sum(-q * F.log_softmax(s, dim=-1), dim=-1).mean()
                n_loss_terms += 1
        total_loss = total_loss / n_loss_terms
        with torch.no_grad():  # the teacher's targets, for the collapse diagnostics (tensors: no host sync)
            self.last_entropies = target_entropies(torch.cat(teacher_out))

        if self.centering == "ema":  # Sinkhorn-Knopp targets need no center: no sums, no all-reduce per step
            self._accumulate_center(teacher_output)
            if not self.defer_center_update:
                self.apply_center_update()
        return total_loss

    @torch.no_grad()
    def _accumulate_center(self, teacher_output: torch.Tensor) -> None:
        self._pending_sum += teacher_output.detach().float().sum(dim=0, keepdim=True)
        self._pending_count += teacher_output.shape[0]

    @torch.no_grad()
    def apply_center_update(self) -> None:
        """EMA of the (all-process) mean teacher output; a no-op when nothing is pending.

        Under DDP every process calls this once per optimizer step (a collective), and the sums
        and row counts of all processes are reduced together, so unequal batches are weighted right.
        """
        if self._pending_count == 0:
            return
        batch_sum, count = self._pending_sum, float(self._pending_count)
        if dist.is_available() and dist.is_initialized():
            # new_full is a fill kernel: no host-to-device copy, so no stream sync
            packed = torch.cat([batch_sum.flatten(), batch_sum.new_full((1,), count)])
            dist.all_reduce(packed)
            batch_center = packed[:-1].view_as(batch_sum) / packed[-1]
        else:
            batch_center = batch_sum / count
        self.center.mul_(self.center_momentum).add_(batch_center * (1 - self.center_momentum))
        self._pending_sum.zero_()
        self._pending_count = 0
