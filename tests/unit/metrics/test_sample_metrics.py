"""Reservoir, KID, PRDC, bootstrap CI and FD∞ against brute-force references written here."""
import numpy as np
import pytest
import torch

from facefd import FrechetDistance, frechet_distance
from facefd.metrics.kernels import polynomial_mmd2_unbiased
from facefd.metrics.reservoir import empty_reservoir, reservoir_add, reservoir_merge
from references import LinearFeatures
from references import brute_prdc


def stream(metric, x, real, chunk=37):
    for part in torch.from_numpy(x).split(chunk):
        metric.update_features(part, real=real)


def test_reservoir_keeps_everything_until_full_then_a_uniform_sample():
    rows, keys = empty_reservoir(50, 1)
    data = torch.arange(30, dtype=torch.float32)[:, None]
    g = torch.Generator().manual_seed(0)
    reservoir_add(rows, keys, data, torch.rand(30, generator=g, dtype=torch.float64))
    assert sorted(reservoir_merge(rows, keys)[:, 0].tolist()) == list(range(30))
    # inclusion frequency of each of 200 items in a 50-slot reservoir over many streams: ~1/4 each
    hits = torch.zeros(200)
    for trial in range(400):
        rows, keys = empty_reservoir(50, 1)
        g = torch.Generator().manual_seed(trial)
        for part in torch.arange(200, dtype=torch.float32)[:, None].split(23):
            reservoir_add(rows, keys, part, torch.rand(len(part), generator=g, dtype=torch.float64))
        kept = reservoir_merge(rows, keys)[:, 0].long()
        assert len(kept) == 50 and len(set(kept.tolist())) == 50
        hits[kept] += 1
    freq = hits / 400
    assert abs(freq.mean() - 0.25) < 1e-6 and freq.min() > 0.15 and freq.max() < 0.35
    # early and late items are equally likely (no bias towards the start or the end of the stream)
    assert abs(freq[:100].mean() - freq[100:].mean()) < 0.02


def test_merging_gathered_reservoirs_keeps_the_smallest_keys():
    rows = torch.arange(12, dtype=torch.float32).view(2, 6, 1)
    keys = torch.tensor([[0.9, 0.1, 0.5, float("inf"), 0.3, 0.8], [0.2, 0.05, 0.7, 0.6, 0.4, 0.95]], dtype=torch.float64)
    merged = reservoir_merge(rows, keys)[:, 0].tolist()
    assert merged == [7.0, 1.0, 6.0, 4.0, 10.0, 2.0]  # keys 0.05, 0.1, 0.2, 0.3, 0.4, 0.5


def test_kid_equals_brute_force_mmd():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 5)), rng.normal(size=(30, 5)) + 0.3

    def k(a, b):
        return (a @ b.T / 5 + 1) ** 3

    m, n = len(x), len(y)
    want = ((k(x, x).sum() - np.trace(k(x, x))) / (m * (m - 1)) + (k(y, y).sum() - np.trace(k(y, y))) / (n * (n - 1))
            - 2 * k(x, y).mean())
    assert float(polynomial_mmd2_unbiased(torch.from_numpy(x), torch.from_numpy(y))) == pytest.approx(want, rel=1e-10)

    metric = FrechetDistance(LinearFeatures(), reservoir_size=100)
    stream(metric, rng.normal(size=(60, 6)), True)
    stream(metric, rng.normal(size=(60, 6)) + 1, False)
    # subsets as large as the sets: every subset is the whole set, so KID is the full unbiased MMD²
    out = metric.compute_kid(subsets=3, subset_size=60)
    full = float(polynomial_mmd2_unbiased(metric.features(True).double(), metric.features(False).double()))
    assert out["kid_mean"] == pytest.approx(full, rel=1e-9) and out["kid_std"] < 1e-9 * abs(full) + 1e-15




def test_kid_subsets_are_independent_draws():
    """Subsets of 20 of 60: the spread over subsets is the spread numpy finds over its own random subsets of
    the same features (not 0, as it would be if every subset were the same draw), and the mean over 300
    subsets is the full-set unbiased MMD² within three standard errors (each pair is equally likely in a subset)."""
    rng = np.random.default_rng(2)
    metric = FrechetDistance(LinearFeatures(), reservoir_size=100)
    stream(metric, rng.normal(size=(60, 6)), True)
    stream(metric, rng.normal(size=(60, 6)) * 1.2 + 0.5, False)
    real, fake = metric.features(True).double(), metric.features(False).double()
    out = metric.compute_kid(subsets=300, subset_size=20, seed=0)
    draws = np.random.default_rng(7)
    values = [float(polynomial_mmd2_unbiased(real[draws.choice(60, 20, replace=False)],
                                             fake[draws.choice(60, 20, replace=False)])) for _ in range(2000)]
    assert out["kid_std"] == pytest.approx(np.std(values), rel=0.15)
    full = float(polynomial_mmd2_unbiased(real, fake))
    assert abs(out["kid_mean"] - full) < 3 * out["kid_std"] / np.sqrt(300)


def test_prdc_equals_brute_force():
    rng = np.random.default_rng(1)
    real, fake = rng.normal(size=(50, 6)), rng.normal(size=(40, 6)) * 1.3 + 0.4
    metric = FrechetDistance(LinearFeatures(), reservoir_size=64)
    stream(metric, real, True)
    stream(metric, fake, False)
    got = metric.compute_prdc(k=5)
    # the reservoir holds every feature (in a shuffled order), so the sets are the same
    want = brute_prdc(metric.features(True).double().numpy(), metric.features(False).double().numpy(), 5)
    assert got == pytest.approx(want, abs=1e-12)
    assert 0 < got["precision"] < 1 and 0 < got["coverage"] <= 1


def gaussians(seed, n_real, n_fake, d=8):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(d, d)) / np.sqrt(d)
    cov_r, cov_f = a @ a.T + 0.5 * np.eye(d), a @ a.T + 0.8 * np.eye(d)
    mu_f = np.full(d, 0.3)
    real = rng.multivariate_normal(np.zeros(d), cov_r, n_real)
    fake = rng.multivariate_normal(mu_f, cov_f, n_fake)
    return real, fake, frechet_distance(np.zeros(d), cov_r, mu_f, cov_f)


class Width8(LinearFeatures):
    num_features = 8


def test_bootstrap_interval_covers_the_estimate_and_shrinks_with_n():
    widths = []
    for n in (200, 2000):
        real, fake, true_fd = gaussians(2, n, n)
        m = FrechetDistance(Width8(), reservoir_size=n)
        stream(m, real, True, chunk=500)
        stream(m, fake, False, chunk=500)
        ci = m.compute_ci(n_boot=200, alpha=0.1, seed=0)
        assert ci["low"] < ci["fd"] < ci["high"]
        widths.append(ci["high"] - ci["low"])
    assert widths[1] < widths[0] / 2  # ~1/sqrt(N)


def test_bootstrap_resamples_both_sets():
    """50 real against 4000 generated samples: the interval's width comes mostly from the small real set. A
    numpy bootstrap that resamples both sets (scipy's sqrtm in the distance) gives the reference width; an
    interval that resampled the generated set alone would be several times narrower."""
    import scipy.linalg

    real, fake, _ = gaussians(5, 50, 4000)
    m = FrechetDistance(Width8(), reservoir_size=4000)
    stream(m, real, True)
    stream(m, fake, False, chunk=500)
    ci = m.compute_ci(n_boot=300, alpha=0.1, seed=0)

    def fd(a, b):
        ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
        covmean = scipy.linalg.sqrtm(ca @ cb).real
        return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(ca + cb - 2 * covmean))

    rng = np.random.default_rng(11)
    both = [fd(real[rng.integers(0, 50, 50)], fake[rng.integers(0, 4000, 4000)]) for _ in range(300)]
    fake_only = [fd(real, fake[rng.integers(0, 4000, 4000)]) for _ in range(300)]
    width = ci["high"] - ci["low"]
    want = np.quantile(both, 0.95) - np.quantile(both, 0.05)
    assert width == pytest.approx(want, rel=0.25)
    assert width > 3 * (np.quantile(fake_only, 0.95) - np.quantile(fake_only, 0.05))


class Width32(LinearFeatures):
    num_features = 32


def test_fd_infinity_removes_the_small_sample_bias(tmp_path):
    # d=32: FD of N samples is biased upwards by ~c/N. FD∞ (15 subset sizes 250..5000, line in 1/N,
    # intercept) must land near the true distance although FD at N=250 is ~40 % too high.
    for seed in (3, 4, 5):
        real, fake, true_fd = gaussians(seed, 40000, 5000, d=32)
        m = FrechetDistance(Width32(), reservoir_size=5000)
        stream(m, real, True, chunk=10000)
        stream(m, fake, False, chunk=1000)
        out = m.compute_fd_infinity(num_points=15, min_size=250, seed=0)
        assert len(out["sizes"]) == 15 and out["sizes"][0] == 250 and out["sizes"][-1] == 5000
        assert out["slope"] > 0 and out["values"][0] > 1.3 * true_fd
        assert out["fd_infinity"] == pytest.approx(true_fd, rel=0.05)
    # with a fixed reference file, as in the callback, the same numbers come out
    m.save_reference(tmp_path / "ref.npz")
    fixed = FrechetDistance(Width32(), reservoir_size=5000)
    fixed.load_reference(tmp_path / "ref.npz")
    stream(fixed, fake, False, chunk=1000)
    assert fixed.compute_fd_infinity(num_points=15, min_size=250, seed=0)["fd_infinity"] == pytest.approx(
        out["fd_infinity"], rel=1e-9)
    with pytest.raises(RuntimeError, match="no real features"):
        fixed.compute_kid()


def test_extras_need_a_reservoir():
    m = FrechetDistance(LinearFeatures())
    stream(m, np.random.default_rng(0).normal(size=(10, 6)), True)
    with pytest.raises(RuntimeError, match="reservoir_size"):
        m.compute_prdc()


def test_prdc_in_blocks_equals_the_brute_force_reference():
    """Blocks of 7 rows (ragged edges, several blocks per side) against the numpy brute force."""
    from facefd.metrics.kernels import prdc

    rng = np.random.default_rng(3)
    real, fake = rng.normal(size=(60, 4)), rng.normal(size=(45, 4)) + 0.4
    want = brute_prdc(real, fake, 5)
    for chunk in (7, 2048):
        got = prdc(torch.from_numpy(real), torch.from_numpy(fake), k=5, chunk=chunk)
        assert got == pytest.approx(want, abs=1e-12)


def test_prdc_on_a_lattice_with_ties_uses_strict_balls():
    """Integer points: many distances equal a k-th neighbour radius exactly, so a ball that included its
    boundary would count other points. The reference is the prdc package's definition (strict <), in numpy."""
    from facefd.metrics.kernels import prdc

    rng = np.random.default_rng(5)
    real = rng.integers(0, 4, size=(40, 2)).astype(float)
    fake = rng.integers(1, 5, size=(35, 2)).astype(float)
    got = prdc(torch.from_numpy(real), torch.from_numpy(fake), k=3, chunk=16)
    assert got == pytest.approx(brute_prdc(real, fake, 3), abs=1e-12)


def test_prdc_and_kid_need_enough_samples_in_each_set():
    from facefd.metrics.kernels import kid, prdc

    ok, few = torch.randn(6, 3), torch.randn(5, 3)
    for real, fake in ((few, ok), (ok, few)):  # k = 5 needs more than 5 in *each* set
        with pytest.raises(RuntimeError, match="^PRDC with k=5 needs more than 5 features in each set$"):
            prdc(real, fake, k=5)
    prdc(ok, ok, k=5)
    one = torch.randn(1, 3)
    for real, fake in ((one, ok), (ok, one)):
        with pytest.raises(RuntimeError, match="^KID needs at least 2 features in each set$"):
            kid(real, fake)


def test_kid_on_the_smallest_sets_and_its_protocol():
    """Two samples a set: KID is the unbiased MMD² of the two sets (every subset of 2 of 2 is the whole set),
    by hand with the cubic kernel. Subsets are as large as the smaller set; the generator makes draws
    repeatable; one subset has no spread; the spread of several is the sample standard deviation (n - 1)."""
    from facefd.metrics.kernels import kid

    x = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    y = torch.tensor([[1.0, 1.0], [3.0, 0.0]], dtype=torch.float64)
    k = lambda a, b: (float(a @ b) / 2 + 1) ** 3  # noqa: E731
    want = 2 * k(x[0], x[1]) / 2 + 2 * k(y[0], y[1]) / 2 - 2 * np.mean([k(a, b) for a in x for b in y])
    mean, std = kid(x, y, subsets=3, subset_size=10)
    assert mean == pytest.approx(want, rel=1e-12) and std == pytest.approx(0.0, abs=1e-12)

    rng = np.random.default_rng(6)
    real, fake = torch.from_numpy(rng.normal(size=(30, 4))), torch.from_numpy(rng.normal(size=(12, 4)) + 0.5)
    runs = [kid(real, fake, subsets=4, subset_size=50, generator=torch.Generator().manual_seed(s)) for s in (1, 1, 2)]
    assert runs[0] == runs[1] and runs[0] != runs[2]
    assert kid(real, fake, subsets=1, subset_size=8, generator=torch.Generator().manual_seed(0))[1] == 0.0
    # the documented draws: per subset, a permutation of real, then of fake, each cut to the subset size, which is
    # at most the smaller set's (asked 50 here: 12, whichever set is the smaller)
    for a, b in ((real, fake), (fake, real)):
        g = torch.Generator().manual_seed(3)
        values = []
        for _ in range(5):
            ri, fi = torch.randperm(len(a), generator=g)[:12], torch.randperm(len(b), generator=g)[:12]
            values.append(float(polynomial_mmd2_unbiased(a[ri], b[fi])))
        mean, std = kid(a, b, subsets=5, subset_size=50, generator=torch.Generator().manual_seed(3))
        assert mean == pytest.approx(np.mean(values), rel=1e-12)
        assert std == pytest.approx(np.std(values, ddof=1), rel=1e-9)


def test_prdc_keeps_float64_distances():
    """A generated point 1e-10 inside a real point's k-NN ball: covered in float64 (numpy's reference); a float32
    buffer would round the distance to the radius and lose it."""
    from facefd.metrics.kernels import prdc

    real = np.arange(8, dtype=float)[:, None] * np.array([[1.0, 0.0]])
    fake = np.array([[1 - 1e-10, 0.0], [30, 0], [40, 0], [50, 0], [60, 0]])
    got = prdc(torch.from_numpy(real), torch.from_numpy(fake), k=1)
    want = brute_prdc(real, fake, 1)
    assert want["coverage"] > 0 and got == pytest.approx(want, abs=1e-12)


def test_kid_defaults_are_100_subsets_of_1000_and_two_subsets_have_a_spread():
    """The field's KID protocol (torch-fidelity, clean-fid): 100 subsets of 1000, drawn as documented above; and
    with two subsets the spread is |v1 - v2| / sqrt(2)."""
    from facefd.metrics.kernels import kid

    rng = np.random.default_rng(8)
    real, fake = torch.from_numpy(rng.normal(size=(1200, 3))), torch.from_numpy(rng.normal(size=(1100, 3)) + 0.2)

    def by_hand(subsets, size, seed):
        g = torch.Generator().manual_seed(seed)
        return [float(polynomial_mmd2_unbiased(real[torch.randperm(1200, generator=g)[:size]],
                                               fake[torch.randperm(1100, generator=g)[:size]])) for _ in range(subsets)]

    values = by_hand(100, 1000, 0)
    mean, std = kid(real, fake, generator=torch.Generator().manual_seed(0))
    assert mean == pytest.approx(np.mean(values), rel=1e-12) and std == pytest.approx(np.std(values, ddof=1), rel=1e-9)
    v1, v2 = by_hand(2, 50, 1)
    assert kid(real, fake, subsets=2, subset_size=50, generator=torch.Generator().manual_seed(1))[1] == pytest.approx(
        abs(v1 - v2) / np.sqrt(2), rel=1e-9)


def _moments(x: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """One process's ``[d + 1, d + 1]`` moment matrix of ``x - shift`` (sums of outer products, sums, count)."""
    c = x - shift
    d = x.shape[1]
    m = np.zeros((d + 1, d + 1))
    m[:d, :d], m[:d, d], m[d, :d], m[d, d] = c.T @ c, c.sum(0), c.sum(0), len(x)
    return m


def test_merging_per_process_moments_gives_numpys_mean_and_covariance():
    """Processes with different shifts (one of them empty, with a shift of its own) merge to numpy's mean and
    unbiased covariance of all rows; the merged shift is the first non-empty process's."""
    from facefd.metrics.frechet_metric import merge_moments

    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 4)) * 3 + 5
    for parts in ([x[:10], x[:0], x[10:25], x[25:]], [x[:0], x[:12], x[12:]], [x[:1], x[1:2], x[2:]]):
        shifts = [rng.normal(size=4) * 4 for _ in parts]
        moments = np.stack([_moments(p, s) for p, s in zip(parts, shifts)])
        shift, total, outer, n = merge_moments(torch.tensor(np.stack(shifts)), torch.tensor(moments), 4)
        first = next(i for i, p in enumerate(parts) if len(p))
        np.testing.assert_array_equal(shift.numpy(), shifts[first])
        assert float(n) == 30
        mean = shift.numpy() + total.numpy() / 30
        cov = (outer.numpy() - np.outer(total.numpy(), total.numpy()) / 30) / 29
        np.testing.assert_allclose(mean, x.mean(0), rtol=1e-12)
        np.testing.assert_allclose(cov, np.cov(x, rowvar=False), rtol=1e-10)
    empty = merge_moments(torch.stack([torch.ones(4), 2 * torch.ones(4)]), torch.zeros(2, 5, 5, dtype=torch.float64), 4)
    assert torch.equal(empty[0], torch.ones(4)) and float(empty[3]) == 0 and not empty[1].any()  # the first's shift
    alone = _moments(x, x[0])  # one process, unstacked: as it is
    shift, total, outer, n = merge_moments(torch.tensor(x[0]), torch.tensor(alone), 4)
    assert torch.equal(total, torch.tensor(alone[:4, 4])) and torch.equal(outer, torch.tensor(alone[:4, :4]))


def _fd_to(mean: np.ndarray, cov: np.ndarray, b: np.ndarray) -> float:
    """FD between (mean, cov) and the rows ``b``, with scipy's sqrtm (the pytorch-fid formula)."""
    import scipy.linalg

    cb = np.cov(b, rowvar=False)
    return float(((mean - b.mean(0)) ** 2).sum() + np.trace(cov + cb - 2 * scipy.linalg.sqrtm(cov @ cb).real))


def _bootstrap_by_hand(r: np.ndarray, f: np.ndarray, n_boot: int, seed: int) -> list[float]:
    """The bootstrap's FDs as documented: a torch Generator seeded ``seed`` draws, per resample, the generated
    rows (``randint``) and then the real rows; each FD by scipy."""
    g = torch.Generator().manual_seed(seed)
    boots = []
    for _ in range(n_boot):
        fi = torch.randint(len(f), (len(f),), generator=g).numpy()
        ri = torch.randint(len(r), (len(r),), generator=g).numpy()
        boots.append(_fd_to(r[ri].mean(0), np.cov(r[ri], rowvar=False), f[fi]))
    return boots


def test_bootstrap_and_fd_infinity_equal_their_definitions_written_here(tmp_path):
    """The same draws (a torch Generator seeded as documented: ``randint`` for the generated then the real
    resample, ``randperm`` prefixes for FD∞'s subsets), FDs by scipy, numpy's percentiles and polyfit."""
    real, fake, _ = gaussians(6, 60, 80)
    m = FrechetDistance(Width8(), reservoir_size=100)
    stream(m, real, True)
    stream(m, fake, False)
    r, f = m.features(True).double().numpy(), m.features(False).double().numpy()
    mean_r, cov_r = r.mean(0), np.cov(r, rowvar=False)
    boots = _bootstrap_by_hand(r, f, 40, 3)
    ci = m.compute_ci(n_boot=40, alpha=0.2, seed=3)
    assert ci == {"fd": pytest.approx(_fd_to(mean_r, cov_r, f), rel=1e-7), "low": pytest.approx(np.quantile(boots, 0.1), rel=1e-7),
                  "high": pytest.approx(np.quantile(boots, 0.9), rel=1e-7), "alpha": 0.2, "n_boot": 40, "n_fake_resampled": 80}
    # a fixed reference file: the generated set alone is resampled, against the file's statistics
    m.save_reference(tmp_path / "ref.npz")
    fixed = FrechetDistance(Width8(), reservoir_size=100)
    fixed.load_reference(tmp_path / "ref.npz")
    stream(fixed, fake, False)
    g = torch.Generator().manual_seed(5)
    boots = [_fd_to(mean_r, cov_r, f[torch.randint(80, (80,), generator=g).numpy()]) for _ in range(40)]
    ci = fixed.compute_ci(n_boot=40, alpha=0.2, seed=5)
    assert (ci["low"], ci["high"]) == (pytest.approx(np.quantile(boots, 0.1), rel=1e-7),
                                       pytest.approx(np.quantile(boots, 0.9), rel=1e-7))

    out = m.compute_fd_infinity(num_points=6, min_size=20, seed=4)
    sizes = sorted({int(round(1 / v)) for v in np.linspace(1 / 20, 1 / 80, 6)})
    g = torch.Generator().manual_seed(4)
    values = [_fd_to(mean_r, cov_r, f[torch.randperm(80, generator=g)[:s].numpy()]) for s in sizes]
    slope, intercept = np.polyfit(1 / np.array(sizes), values, 1)
    assert out["sizes"] == sizes and out["values"] == pytest.approx(values, rel=1e-7)
    assert (out["fd_infinity"], out["slope"]) == (pytest.approx(intercept, rel=1e-7), pytest.approx(slope, rel=1e-7))
    assert m.compute_fd_infinity(num_points=4)["sizes"][0] == 16  # default smallest subset: N / 5
    assert fixed.compute_fd_infinity(num_points=6, min_size=20, seed=4)["fd_infinity"] == pytest.approx(intercept, rel=1e-7)
    with pytest.raises(RuntimeError, match=r"^FD∞ needs a reservoir of generated features larger than min_size=80 \(has 80\)$"):
        m.compute_fd_infinity(min_size=80)
    three = FrechetDistance(Width8(), reservoir_size=10)
    stream(three, real, True)
    stream(three, fake[:3], False)
    assert three.compute_fd_infinity(num_points=2, min_size=2)["sizes"] == [2, 3]  # three samples are enough


def test_kid_is_seeded_and_feature_mistakes_are_named(tmp_path):
    """compute_kid draws its subsets from a Generator seeded with ``seed`` (kernels.kid with that generator);
    features of the wrong shape, and real features while a reference file is loaded, are refused by name."""
    from facefd.metrics.kernels import kid

    real, fake, _ = gaussians(7, 40, 50)
    m = FrechetDistance(Width8(), reservoir_size=100)
    stream(m, real, True)
    stream(m, fake, False)
    want = kid(m.features(True), m.features(False), 6, 12, torch.Generator().manual_seed(2))
    assert m.compute_kid(subsets=6, subset_size=12, seed=2) == {"kid_mean": want[0], "kid_std": want[1]}
    assert m.compute_kid(subsets=6, subset_size=12, seed=3) != m.compute_kid(subsets=6, subset_size=12, seed=2)
    for bad in (torch.zeros(8), torch.zeros(3, 7)):
        with pytest.raises(ValueError, match=rf"^features must be \[N, 8\], got {tuple(bad.shape)}$".replace("(", r"\(")
                           .replace(")", r"\)")):
            m.update_features(bad, real=False)
    m.save_reference(tmp_path / "ref.npz")
    fixed = FrechetDistance(Width8())
    fixed.load_reference(tmp_path / "ref.npz")
    with pytest.raises(RuntimeError, match=r"^reference statistics are loaded: real images are not accumulated "
                                           r"\(call clear_reference\(\) to stream real images again\)$"):
        fixed.update_features(torch.zeros(2, 8), real=True)


def test_two_samples_per_set_suffice_and_reset_follows_reset_real_features():
    """torchmetrics' rule: more than one sample per set (two compute; one raises). reset() clears the real set
    too unless ``reset_real_features=False``; the extractor never asks for gradients."""
    real, fake, _ = gaussians(8, 2, 2)
    m = FrechetDistance(Width8())
    assert not any(p.requires_grad for p in m.extractor.parameters())
    stream(m, real, True)
    stream(m, fake[:1], False)
    with pytest.raises(RuntimeError, match="More than one sample is required"):
        m.compute()
    stream(m, fake[1:], False)
    want = frechet_distance(real.mean(0), np.cov(real, rowvar=False), fake.mean(0), np.cov(fake, rowvar=False))
    assert float(m.compute()) == pytest.approx(float(want), rel=1e-6, abs=1e-9)
    m.reset()
    assert m.counts == {"real": 0, "fake": 0}
    keep = FrechetDistance(Width8(), reset_real_features=False)
    stream(keep, real, True)
    stream(keep, fake, False)
    keep.reset()
    assert keep.counts == {"real": 2, "fake": 0}


class RecordsDtype(torch.nn.Module):
    """Mean colour, remembering the dtype it was handed; it declares ``input_dtype`` uint8 or float32."""

    num_features = 3

    def __init__(self, uint8: bool) -> None:
        super().__init__()
        self.seen = []
        self.input_dtype = torch.uint8 if uint8 else torch.float32

    def forward(self, x):
        self.seen.append(x.dtype)
        return x.float().mean(dim=(2, 3))


def test_input_dtype_growing_batches_forward_and_the_image_errors():
    """A module declaring ``input_dtype = torch.uint8`` gets uint8 images, float32 floats; batches that grow
    (2 then 5 rows) give numpy's statistics; ``forward`` adds to the generated set; bad images are named."""
    imgs = (torch.rand(7, 3, 6, 6, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    for uint8 in (True, False):
        module = RecordsDtype(uint8)
        m = FrechetDistance(module)
        m.update(imgs[:2], real=True)
        m.update(imgs[2:], real=True)
        assert module.seen == [torch.uint8 if uint8 else torch.float32] * 2
        feats = imgs.double().mean(dim=(2, 3)) / (1 if uint8 else 255)
        stats = m.statistics(True)
        np.testing.assert_allclose(stats.mean.numpy(), feats.numpy().mean(0), rtol=1e-6)
        np.testing.assert_allclose(stats.cov.numpy(), np.cov(feats.numpy(), rowvar=False), rtol=1e-5, atol=1e-9)
    m = FrechetDistance(RecordsDtype(False), reset_real_features=False)
    m.update(imgs[:3], real=True)
    m(imgs[3:], real=False)  # forward: the batch's value, and the batch added to the generated set
    assert m.counts == {"real": 3, "fake": 4}
    for bad, message in ((imgs[0], r"^expected images \[N, 3, H, W\], got shape \(3, 6, 6\)$"),
                         (imgs[:, :1], r"^expected images \[N, 3, H, W\], got shape \(7, 1, 6, 6\)$"),
                         (imgs.float() / 255, r"^float images need normalize=True \(values in \[0, 1\]\); with "
                                              r"normalize=False pass uint8 images in \[0, 255\]$"),
                         (imgs.to(torch.int32), r"^images must be uint8 or float, got torch.int32$")):
        with pytest.raises(ValueError, match=message):
            FrechetDistance(RecordsDtype(False)).update(bad, real=True)
    with pytest.raises(RuntimeError, match=r"^this needs stored features: create the metric with reservoir_size > 0$"):
        m.features(True)


class NoWidth(torch.nn.Module):
    """A module that declares no width (or a tensor / zero one): the metric learns it from one dummy batch,
    and records what it was handed."""

    def __init__(self, out_shape=(5,), num_features=None):
        super().__init__()
        self.out_shape, self.seen = out_shape, []
        if num_features is not None:
            self.num_features = num_features

    def forward(self, x):
        self.seen.append((tuple(x.shape), x.dtype))
        return torch.zeros(x.shape[0], *self.out_shape)


def test_feature_width_from_the_module_or_a_dummy_batch():
    """As torchmetrics does: ``num_features`` when given (an int or a 0-d tensor), else the width of the output
    on 2 images of ``input_img_size`` (uint8 when the module gets images as given, torchmetrics' dummy);
    anything but [N, D] is one error naming the module and shapes."""
    assert FrechetDistance(NoWidth(num_features=torch.tensor(4))).num_features == 4
    probed = NoWidth(num_features=0)
    assert FrechetDistance(probed, input_img_size=(3, 8, 6)).num_features == 5
    assert probed.seen == [((2, 3, 8, 6), torch.uint8)]
    floats = NoWidth()
    floats.input_dtype = torch.float32
    FrechetDistance(floats, input_img_size=(3, 4, 4))
    assert floats.seen == [((2, 3, 4, 4), torch.float32)]
    with pytest.raises(ValueError, match=r"^NoWidth returned torch.Size\(\[2, 5, 2\]\) on a dummy batch of \(2, 3, 4, 4\); "
                                         r"a feature extractor must return \[N, D\] \(pass num_features= and "
                                         r"input_img_size= if it needs other input\)$"):
        FrechetDistance(NoWidth(out_shape=(5, 2)), input_img_size=(3, 4, 4))


def test_reference_files_carry_the_extractor_card_and_refuse_another_extractor(tmp_path):
    """The saved file records the extractor's preprocessing (the card's keys that decide the features) and the
    caller's metadata; another width or another network is refused with the file's name and fingerprints."""
    from facefd.metrics.stats import GaussianStats, StatisticsFileError

    extractor = Width8()
    extractor.card = {"backbone": "tiny", "input_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3, "resize": "bicubic",
                      "preprocessing_version": 2, "trained_on": "not recorded"}
    real, _, _ = gaussians(9, 20, 2)
    m = FrechetDistance(extractor)
    stream(m, real, True)
    path = m.save_reference(tmp_path / "ref.npz", metadata={"dataset": "faces"})
    stats = GaussianStats.load(path)
    assert stats.metadata["extractor"] == {k: v for k, v in extractor.card.items() if k != "trained_on"}
    assert stats.metadata["dataset"] == "faces"
    assert stats.fingerprint == m.fingerprint and stats.count == 20
    with pytest.raises(StatisticsFileError, match=rf"^{path} holds 8-d statistics; this extractor gives 32-d features$"):
        FrechetDistance(Width32()).load_reference(path)
    other = FrechetDistance(Width8(seed=1))  # the same width, other weights
    with pytest.raises(StatisticsFileError, match=rf"^{path} was computed with another extractor \(fingerprint "
                                                  rf"{m.fingerprint[:12]}\.\.\., this one is {other.fingerprint[:12]}\.\.\.\)"):
        other.load_reference(path)
    fresh = FrechetDistance(Width8())
    fresh.load_reference(path)
    assert fresh.counts["real"] == 20 and torch.equal(fresh.statistics(True).mean, stats.mean)


def test_the_extras_defaults_are_the_fields_protocols(tmp_path):
    """Called without arguments: KID with torchmetrics' ``KernelInceptionDistance`` defaults (100 subsets of
    1000, read from its signature; 1100 rows so the subset size is not clipped), PRDC with the paper's k = 5
    (against the brute-force reference), FD∞ with Chong & Forsyth's 15 points from N / 5, and a 95 %
    bootstrap of 100 resamples seeded 0 (re-derived as in the test above). ``compute_prdc(k=3)`` uses k = 3."""
    import inspect

    from facefd.metrics.kernels import kid

    tm_kid = pytest.importorskip("torchmetrics.image.kid")
    defaults = inspect.signature(tm_kid.KernelInceptionDistance).parameters
    rng = np.random.default_rng(11)
    real, fake = rng.normal(size=(1100, 8)), rng.normal(size=(1100, 8)) + 0.1
    m = FrechetDistance(Width8(), reservoir_size=1100)
    stream(m, real, True, chunk=500)
    stream(m, fake, False, chunk=500)
    r, f = m.features(True), m.features(False)
    want = kid(r, f, defaults["subsets"].default, defaults["subset_size"].default, torch.Generator().manual_seed(0))
    assert m.compute_kid() == {"kid_mean": want[0], "kid_std": want[1]}

    small = FrechetDistance(Width8(), reservoir_size=100)
    real, fake, _ = gaussians(12, 40, 13)
    stream(small, real, True)
    stream(small, fake, False)
    r, f = small.features(True).double().numpy(), small.features(False).double().numpy()
    for k, got in ((5, small.compute_prdc()), (3, small.compute_prdc(k=3))):
        assert got == pytest.approx(brute_prdc(r, f, k), rel=1e-12), k
    # FD∞ on 13 generated rows: the smallest subset is max(2, 13 // 5) = 2, 15 points from 1/2 to 1/13
    sizes = sorted({int(round(1 / v)) for v in np.linspace(1 / 2, 1 / 13, 15)})
    g = torch.Generator().manual_seed(0)
    mean_r, cov_r = r.mean(0), np.cov(r, rowvar=False)
    values = [_fd_to(mean_r, cov_r, f[torch.randperm(13, generator=g)[:s].numpy()]) for s in sizes]
    out = small.compute_fd_infinity()
    assert out["sizes"] == sizes and out["values"] == pytest.approx(values, rel=1e-7)
    boots = _bootstrap_by_hand(r, f, 100, 0)
    ci = small.compute_ci()
    assert (ci["low"], ci["high"], ci["alpha"], ci["n_boot"]) == (
        pytest.approx(np.quantile(boots, 0.025), rel=1e-7), pytest.approx(np.quantile(boots, 0.975), rel=1e-7), 0.05, 100)


def test_a_reference_saved_for_pytorch_fid_holds_mu_and_sigma(tmp_path):
    """``save_reference(format="pytorch-fid")`` writes the ``mu``/``sigma`` arrays pytorch-fid's
    ``calculate_frechet_distance`` reads [numpy's own loader, numpy mean/cov]."""
    real, _, _ = gaussians(13, 30, 2)
    m = FrechetDistance(Width8())
    stream(m, real, True)
    path = m.save_reference(tmp_path / "ref.npz", format="pytorch-fid")
    with np.load(path) as data:
        assert {"mu", "sigma"} <= set(data.files) and "mean" not in data.files
        np.testing.assert_allclose(data["mu"], real.mean(0), rtol=1e-10)
        np.testing.assert_allclose(data["sigma"], np.cov(real, rowvar=False), rtol=1e-8, atol=1e-12)
