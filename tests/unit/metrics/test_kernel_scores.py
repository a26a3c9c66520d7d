"""Authenticity, the Inception Score and the identity-leak score on features, each against its independent
reference: dgm-eval's authenticity written out in numpy, torch-fidelity's own ``isc_features_to_metric``,
and scipy's ``cdist`` for the nearest reference identity -- plus values worked out by hand at the ties and
boundaries where ``<`` and ``<=`` part, and every block size of the chunked loops."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from facefd.metrics.kernels import authpct, identity_leak, inception_score
from references import dgm_eval_authpct


@pytest.mark.parametrize("chunk", [1, 3, 7, 2048])
def test_authpct_equals_dgm_evals_formula_for_every_block_size(chunk):
    """Two sets where some generated samples copy a real one (a small offset) and the rest are new; every
    block size gives dgm-eval's value [numpy]."""
    rng = np.random.default_rng(chunk)
    real = rng.normal(size=(23, 4))
    copies = real[rng.choice(23, 6, replace=False)] + rng.normal(scale=0.01, size=(6, 4))
    fake = np.concatenate([copies, rng.normal(size=(11, 4)) * 1.5])
    want = dgm_eval_authpct(real, fake)
    assert 0 < want < 100  # both kinds present, so a constant answer fails
    assert authpct(torch.from_numpy(real).float(), torch.from_numpy(fake).float(), chunk=chunk) == pytest.approx(want)


@pytest.mark.parametrize("chunk", [1, 2048])
def test_authpct_ties_by_hand(chunk):
    """Worked by hand on a line, real points 0, 2 and 2.5 (nearest-other gaps 2, 0.5, 0.5):
    - a sample at 1 is equally far (1) from 0 and 2; the first real sample counts (numpy's ``argmin``),
      whose gap 2 is not below 1: copied. Had 2 been picked, its gap 0.5 < 1 would say authentic;
    - a sample at 3 is 0.5 from 2.5, whose gap is also 0.5: a tie is not authentic;
    - a sample at 4 is 1.5 from 2.5 (gap 0.5): authentic.
    """
    real = torch.tensor([[0.0], [2.0], [2.5]])
    assert authpct(real, torch.tensor([[1.0]]), chunk=chunk) == 0.0
    assert authpct(real, torch.tensor([[3.0]]), chunk=chunk) == 0.0
    assert authpct(real, torch.tensor([[4.0]]), chunk=chunk) == 100.0
    assert authpct(real, torch.tensor([[1.0], [3.0], [4.0], [9.0]]), chunk=chunk) == 50.0
    assert dgm_eval_authpct(real.numpy(), np.array([[1.0], [3.0], [4.0], [9.0]])) == 50.0


def test_authpct_needs_two_real_samples():
    with pytest.raises(RuntimeError, match="^authenticity needs at least 2 real features$"):
        authpct(torch.zeros(1, 3), torch.zeros(4, 3))


@pytest.mark.parametrize("n, splits, seed, shuffle", [(50, 10, 2020, True), (23, 10, 2020, True),
                                                      (23, 4, 7, True), (23, 4, 7, False), (5, 5, 0, True)])
def test_inception_score_equals_torch_fidelitys(n, splits, seed, shuffle):
    """torch-fidelity's ``isc_features_to_metric`` on the same logits: the shuffle, uneven parts when
    ``n`` is not a multiple of ``splits``, and the population std."""
    isc = pytest.importorskip("torch_fidelity.metric_isc")
    logits = torch.from_numpy(np.random.default_rng(n + splits).normal(scale=3.0, size=(n, 12)))
    want = isc.isc_features_to_metric(logits, splits=splits, shuffle=shuffle, rng_seed=seed)
    mean, std = inception_score(logits.float(), splits=splits, seed=seed, shuffle=shuffle)
    assert mean == pytest.approx(want["inception_score_mean"], rel=1e-6)
    assert std == pytest.approx(want["inception_score_std"], rel=1e-5, abs=1e-9)
    assert std > 0


def test_inception_score_by_hand():
    """Two parts, each of two confident predictions of different classes: p(y) is uniform over those two,
    KL = log 2 per sample, so IS = 2 in each part; a part of two equal predictions scores 1."""
    sure = 50.0
    logits = torch.tensor([[sure, 0, 0], [0, sure, 0], [0, 0, sure], [0, 0, sure]])
    mean, std = inception_score(logits, splits=2, shuffle=False)
    assert (mean, std) == (pytest.approx(1.5), pytest.approx(0.5))
    with pytest.raises(RuntimeError, match=r"^the Inception Score with 10 splits needs at least 10 samples, got 4$"):
        inception_score(logits)


def scipy_leak(reference, generated, threshold):
    """The nearest reference identity of each generated face by scipy's ``cdist``, NaN rows left out."""
    ref_rows = np.flatnonzero(~np.isnan(reference).any(axis=1))
    gen_rows = np.flatnonzero(~np.isnan(generated).any(axis=1))
    d = cdist(generated[gen_rows], reference[ref_rows])
    best = d.min(axis=1)
    order = np.argsort(best, kind="stable")
    pairs = [(int(gen_rows[i]), int(ref_rows[d[i].argmin()]), float(best[i])) for i in order]
    return float(np.mean(best < threshold)), int((best < threshold).sum()), pairs


@pytest.mark.parametrize("chunk", [1, 2, 2048])
def test_identity_leak_equals_scipys_nearest_identity(chunk):
    """Generated faces near some reference identities and far from the rest, NaN rows (no face) in both
    sets: the share, the counts and the closest pairs in original row numbers [scipy cdist]."""
    rng = np.random.default_rng(3)
    reference = rng.normal(size=(9, 5))
    generated = np.concatenate([reference[[4, 7]] + 0.05, rng.normal(size=(4, 5)) * 2 + 3])
    reference[[1, 6]] = np.nan
    generated[2] = np.nan
    value, leaked, pairs = scipy_leak(reference, generated, threshold=0.6)
    got = identity_leak(torch.from_numpy(reference).float(), torch.from_numpy(generated).float(),
                        threshold=0.6, pairs=3, chunk=chunk)
    assert (got["value"], got["leaked"], got["faces"]) == (value, leaked, 5)
    assert (got["no_face_generated"], got["no_face_reference"], got["threshold"]) == (1, 2, 0.6)
    assert leaked == 2
    assert [(g, r) for g, r, _ in got["closest"]] == [(g, r) for g, r, _ in pairs[:3]]
    assert [d for *_, d in got["closest"]] == pytest.approx([d for *_, d in pairs[:3]], rel=1e-6)


def test_identity_leak_threshold_is_strict_by_hand():
    """Distances 1 and 3 from the only reference face: with threshold 1 the first is not below it (0 leaked),
    with threshold 1.5 it is (1 of 2); 8 pairs asked, 2 exist."""
    ref, gen = torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 0.0], [0.0, 1.0]])
    assert identity_leak(ref, gen, threshold=1.0)["leaked"] == 0
    got = identity_leak(ref, gen, threshold=1.5)
    assert (got["value"], got["closest"]) == (0.5, [(1, 0, 1.0), (0, 0, 3.0)])


def test_identity_leak_without_faces_says_how_many_have_one():
    nan = torch.full((2, 3), float("nan"))
    with pytest.raises(RuntimeError, match=r"^identity_leak needs faces in both sets: 0 reference and 1 generated "
                                           r"images have one$"):
        identity_leak(nan, torch.cat([nan[:1], torch.zeros(1, 3)]))
    with pytest.raises(RuntimeError, match=r": 2 reference and 0 generated"):
        identity_leak(torch.zeros(2, 3), nan)


def test_the_defaults_are_the_fields():
    """Called with the data alone: two real samples are enough for authenticity (a gap each), the Inception
    Score is torch-fidelity's default protocol (10 splits, shuffled with seed 2020), PRDC uses the paper's
    k = 5 [the brute-force reference], and a leak is dlib's same-person rule, distance below 0.6, with the 8
    closest pairs."""
    from facefd.metrics.kernels import prdc
    from references import brute_prdc

    assert authpct(torch.tensor([[0.0], [1.0]]), torch.tensor([[5.0], [0.2]])) == 50.0  # gaps 1; 5 is 4 away
    isc = pytest.importorskip("torch_fidelity.metric_isc")
    logits = torch.from_numpy(np.random.default_rng(5).normal(scale=3.0, size=(40, 7)))
    want = isc.isc_features_to_metric(logits)
    assert inception_score(logits) == (pytest.approx(want["inception_score_mean"], rel=1e-12),
                                       pytest.approx(want["inception_score_std"], rel=1e-9))
    rng = np.random.default_rng(6)
    real, fake = rng.normal(size=(30, 3)), rng.normal(size=(25, 3)) + 0.3
    assert prdc(torch.from_numpy(real), torch.from_numpy(fake)) == pytest.approx(brute_prdc(real, fake, 5), rel=1e-12)
    ref = torch.zeros(1, 2, dtype=torch.float64)
    gen = torch.tensor([[0.59, 0.0], [0.61, 0.0]] + [[1.0 + i, 0.0] for i in range(9)], dtype=torch.float64)
    got = identity_leak(ref, gen)
    assert (got["leaked"], got["threshold"], len(got["closest"])) == (1, 0.6, 8)


def test_identity_distances_are_compared_in_float64():
    """A face 1e-12 inside the threshold is a leak: in float32 its distance would round up to the threshold
    itself [worked by hand: 0.6 - 1e-12 is below 0.6 in float64, and float32(0.6 - 1e-12) == float32(0.6)]."""
    assert np.float32(0.6 - 1e-12) == np.float32(0.6)
    ref = torch.zeros(1, 2, dtype=torch.float64)
    got = identity_leak(ref, torch.tensor([[0.6 - 1e-12, 0.0]], dtype=torch.float64), threshold=0.6)
    assert got["leaked"] == 1 and got["closest"][0][2] == 0.6 - 1e-12
