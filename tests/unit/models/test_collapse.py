"""A run that names its collapse: the teacher's per-sample entropy, batch-mean entropy and KL(teacher ||
student), measured by DINOLoss on constructed outputs of each kind and checked against scipy's entropy of
the targets computed by hand; the module's warning for each kind; a healthy run that does not warn."""
from __future__ import annotations

import math

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from scipy.stats import entropy

from facefd.models.dino import DINOLoss
from facefd.models.dino.collapse import diagnose
from runs import crops_loader, tiny_module

K, B, TEMP = 16, 16, 0.04


def measured(teacher: torch.Tensor, student: torch.Tensor) -> tuple[float, float, float]:
    """(per-sample entropy, batch-mean entropy, KL) from one DINOLoss call (2 global crops)."""
    loss_fn = DINOLoss(out_dim=K, ncrops=2, warmup_teacher_temp=TEMP, teacher_temp=TEMP,
                       warmup_teacher_temp_epochs=0, nepochs=1)
    loss = loss_fn(student, teacher, epoch=0)
    h, hb = (float(v) for v in loss_fn.last_entropies)
    return h, hb, float(loss) - h


def by_hand(teacher: torch.Tensor) -> tuple[float, float]:
    """scipy's entropies of the teacher targets softmax(t / temperature) (the center starts at zero)."""
    q = torch.softmax(teacher.double() / TEMP, dim=1).numpy()
    return float(np.mean([entropy(row) for row in q])), float(entropy(q.mean(axis=0)))


def test_uniform_outputs_are_the_uniform_collapse():
    teacher, student = torch.zeros(2 * B, K), torch.zeros(2 * B, K)
    h, hb, kl = measured(teacher, student)
    assert (h, hb) == pytest.approx(by_hand(teacher)) and h == pytest.approx(math.log(K))
    assert kl == pytest.approx(0.0, abs=1e-5)
    assert diagnose(h, hb, kl, K) == "uniform"


def test_one_prototype_for_every_image_is_the_dominant_collapse():
    teacher = torch.zeros(2 * B, K)
    teacher[:, 3] = 1.0  # every image, both views: prototype 3
    student = teacher * 2.0  # the student agrees (its temperature is 0.1)
    h, hb, kl = measured(teacher, student)
    assert (h, hb) == pytest.approx(by_hand(teacher), abs=1e-6)
    assert hb < 0.1 and kl < 0.01
    assert diagnose(h, hb, kl, K) == "dominant"


def test_a_sharp_teacher_that_tells_images_apart_is_healthy():
    teacher = torch.zeros(2 * B, K)
    teacher[torch.arange(2 * B), torch.arange(2 * B) % K] = 1.0  # sharp, a different prototype per image
    student = teacher * 2.0
    h, hb, kl = measured(teacher, student)
    assert (h, hb) == pytest.approx(by_hand(teacher), abs=1e-6)
    assert h < 0.01 and hb == pytest.approx(math.log(K), rel=1e-3)  # low per-sample entropy alone is not collapse
    assert diagnose(h, hb, kl, K) is None


@pytest.mark.parametrize("kind, values, words", [
    ("uniform", (math.log(64) * 0.999, math.log(64), 0.0), "uniform outputs"),
    ("dominant", (0.01, 0.02, 0.001), "one prototype"),
])
def test_the_module_warns_for_each_kind_after_patience(kind, values, words, caplog):
    m = tiny_module(collapse_patience_epochs=2)
    assert m.out_dim == 64
    with caplog.at_level("WARNING"):
        for epoch in range(2):
            m._diagnostics_sum, m._diagnostics_count = torch.tensor(values), 1
            m.on_train_epoch_end()
            assert (words in caplog.text) == (epoch == 1)  # the second collapsed epoch warns, not the first
    assert words in m.collapse_warning


def test_a_healthy_run_logs_the_diagnostics_and_does_not_warn(caplog):
    m = tiny_module(collapse_patience_epochs=1)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=2, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    with caplog.at_level("WARNING"):
        trainer.fit(m, crops_loader(3))
    metrics = trainer.callback_metrics
    h, hb, kl = (float(metrics[f"train/{k}"]) for k in ("teacher_entropy", "teacher_batch_entropy", "kl"))
    assert 0 <= h < 0.99 * math.log(m.out_dim) and hb >= h - 1e-4 and kl > 0.01
    assert float(metrics["train/loss"]) == pytest.approx(h + kl, rel=1e-4)  # the cross-entropy is H + KL
    assert "collapse" not in caplog.text and m.collapse_warning is None


def test_thresholds_are_strict_and_the_messages_carry_the_numbers():
    """"Above" 0.99 ln K and "under" 0.1 nats / 0.01 KL, as CollapseThresholds documents: the limits
    themselves are healthy. The warnings print the measured values, the margin and the epoch count."""
    from facefd.models.dino.collapse import message

    ln_k = math.log(64)
    assert diagnose(0.99 * ln_k, ln_k, 0.5, 64) is None
    assert diagnose(0.1 - 1e-12, 0.1, 0.001, 64) is None and diagnose(0.05, 0.05, 0.01, 64) is None
    assert diagnose(0.05, 0.05, 0.01 - 1e-12, 64) == "dominant"
    text = message("uniform", 4.1, 4.15, 0.0, 64, 3)
    assert f"entropy 4.100 has stayed within 1% of ln(out_dim)={ln_k:.3f} for 3 epochs" in text
    from facefd.models.dino.collapse import CollapseThresholds

    assert "within 70% of ln(out_dim)" in message("uniform", 4.1, 4.15, 0.0, 64, 3, CollapseThresholds(uniform_fraction=0.3))
    text = message("dominant", 0.01, 0.05, 0.002, 64, 4)
    assert f"batch-mean entropy 0.050 nats (about {math.exp(0.05):.1f} prototypes in use) with KL 0.0020 for 4 " \
        "epochs" in text


def test_the_module_averages_each_epoch_counts_runs_of_one_kind_and_says_the_numbers(caplog):
    """Seven epochs of two steps each (uniform, dominant x 3, healthy, uniform x 2) with non-default thresholds and a
    patience of 2: each epoch's diagnosis is the mean of its two steps, only the second and third epochs in a row
    of one kind warn, and each warning is ``collapse.message`` with that epoch's means and run length [the means
    and run lengths worked by hand]."""
    from facefd.models.dino.collapse import CollapseThresholds, message

    m = tiny_module(collapse_patience_epochs=2, collapse_tolerance=0.05, collapse_dominant_entropy=0.2,
                    collapse_dominant_kl=0.02)
    thresholds = CollapseThresholds(uniform_fraction=0.95, dominant_entropy=0.2, dominant_kl=0.02, patience_epochs=2)
    ln_k = math.log(m.out_dim)
    uniform, dominant, healthy = (0.96 * ln_k, ln_k, 0.004), (0.01, 0.15, 0.015), (1.0, 3.5, 0.5)
    # (values, the kind by hand: 0.96 ln K > 0.95 ln K is uniform; 0.15 < 0.2 nats with KL 0.015 < 0.02 is
    # dominant; the run length when it warns)
    epochs = [(uniform, "uniform", None), (dominant, "dominant", None), (dominant, "dominant", 2),
              (dominant, "dominant", 3), (healthy, None, None), (uniform, "uniform", None), (uniform, "uniform", 2)]
    for values, kind, run in epochs:
        m.on_train_epoch_start()
        for sign in (-1, 1):  # two steps whose mean is ``values``
            h, hb, kl = (v * (1 + sign * 0.002) for v in values)
            m.criterion.last_entropies = (torch.tensor(h), torch.tensor(hb))
            m._track_collapse(torch.tensor(h + kl), batch_size=4)
        m.collapse_warning = None
        m.on_train_epoch_end()
        want = None if run is None else message(kind, *values, m.out_dim, run, thresholds)  # its texts: tested above
        assert m.collapse_warning == want, (values, run)
