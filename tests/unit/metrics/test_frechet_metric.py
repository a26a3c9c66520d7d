"""FrechetDistance: streamed statistics vs numpy, invariances, reference files, errors, dtypes."""
import numpy as np
import pytest
import torch
from torch import nn

from facefd import FrechetDistance, frechet_distance
from facefd.metrics import StatisticsFileError
from references import LinearFeatures, numpy_features




def images(n, seed, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, 4, 4, generator=g) * 0.5 + shift).clamp(0, 1)




def test_statistics_equal_numpy_and_distance_equals_formula():
    ext = LinearFeatures()
    m = FrechetDistance(ext, normalize=True)
    real, fake = images(50, 0), images(40, 1, shift=0.2)
    for chunk in real.split(7):
        m.update(chunk, real=True)
    for chunk in fake.split(9):
        m.update(chunk, real=False)
    fr, ff = numpy_features(ext, real), numpy_features(ext, fake)
    stats = m.statistics(True)
    np.testing.assert_allclose(stats.mean.numpy(), fr.mean(0), rtol=1e-5)  # features made in float32
    np.testing.assert_allclose(stats.cov.numpy(), np.cov(fr, rowvar=False), rtol=1e-4, atol=1e-6)
    assert stats.count == 50 and m.statistics(False).count == 40
    want = frechet_distance(fr.mean(0), np.cov(fr, rowvar=False), ff.mean(0), np.cov(ff, rowvar=False))
    assert m.compute().item() == pytest.approx(want, rel=1e-4)
    assert m.last_counts == {"real": 50, "fake": 40}


def test_large_feature_offsets_keep_precision():
    # Features around 1e5 with unit spread: raw float32 moments lose the covariance entirely.
    ext = LinearFeatures(offset=1e5)
    m = FrechetDistance(ext, normalize=True)
    real = images(200, 3)
    m.update(real, real=True)
    m.update(images(200, 4), real=False)
    feats = ext(real).double().numpy()  # exactly what the metric saw
    np.testing.assert_allclose(m.statistics(True).cov.numpy(), np.cov(feats, rowvar=False), rtol=1e-7, atol=1e-9)


def test_batch_order_and_size_do_not_matter():
    ext = LinearFeatures()
    real, fake = images(60, 5), images(60, 6, shift=0.1)
    values = []
    for sizes, perm_seed in [((60,), 0), ((7, 13, 40), 1), ((1,) * 5 + (55,), 2)]:
        m = FrechetDistance(ext, normalize=True)
        perm = torch.randperm(60, generator=torch.Generator().manual_seed(perm_seed))
        for part in real[perm].split(list(sizes)):
            m.update(part, real=True)
        for part in fake.split(list(sizes)):
            m.update(part, real=False)
        values.append(m.compute().item())
    # the float32 extractor itself rounds differently per batch size (~1e-7 on features)
    assert values[0] == pytest.approx(values[1], rel=1e-7) == pytest.approx(values[2], rel=1e-7)


def test_accumulation_is_exactly_batch_invariant_in_float64():
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(300, 6)) * 3 + 50, rng.normal(size=(200, 6)) + 49
    values = []
    for sizes in [(300,), (1, 299), (17, 83, 200)]:
        m = FrechetDistance(LinearFeatures())
        for part in np.split(real, np.cumsum(sizes)[:-1]):
            m.update_features(torch.from_numpy(part), real=True)
        m.update_features(torch.from_numpy(fake), real=False)
        values.append(m.compute().item())
    want = frechet_distance(real.mean(0), np.cov(real, rowvar=False), fake.mean(0), np.cov(fake, rowvar=False))
    assert values == pytest.approx([want] * 3, rel=1e-10)


def test_uint8_and_normalised_float_agree():
    ext = LinearFeatures()
    u8 = (images(30, 7) * 255).round().to(torch.uint8)
    a, b = FrechetDistance(ext), FrechetDistance(ext, normalize=True)
    a.update(u8, real=True), a.update(u8.flip(0)[:20], real=False)
    b.update(u8.float() / 255, real=True), b.update(u8.flip(0)[:20].float() / 255, real=False)
    assert a.compute().item() == pytest.approx(b.compute().item(), rel=1e-9)
    with pytest.raises(ValueError, match="normalize=True"):
        a.update(u8.float() / 255, real=True)


def test_reference_round_trip_and_fingerprint(tmp_path):
    ext = LinearFeatures()
    streamed = FrechetDistance(ext, normalize=True)
    streamed.update(images(80, 8), real=True)
    path = streamed.save_reference(tmp_path / "ref.npz")
    fake = images(30, 9, shift=0.3)
    streamed.update(fake, real=False)

    loaded = FrechetDistance(ext, normalize=True)
    loaded.load_reference(path)
    loaded.update(fake, real=False)
    assert loaded.compute().item() == pytest.approx(streamed.compute().item(), rel=1e-10)
    assert loaded.counts == {"real": 80, "fake": 30}
    loaded.reset()
    with pytest.raises(RuntimeError, match="fake set has 0"):
        loaded.compute()
    with pytest.raises(RuntimeError, match="reference statistics are loaded"):
        loaded.update(fake, real=True)

    other = FrechetDistance(LinearFeatures(seed=1), normalize=True)
    with pytest.raises(StatisticsFileError, match="another extractor"):
        other.load_reference(path)
    with pytest.raises(StatisticsFileError, match="does not exist"):
        other.load_reference(tmp_path / "missing.npz")


def test_reset_real_features_false_keeps_real_statistics():
    ext = LinearFeatures()
    m = FrechetDistance(ext, normalize=True, reset_real_features=False)
    m.update(images(40, 10), real=True)
    m.update(images(40, 11), real=False)
    first = m.compute().item()
    m.reset()
    assert m.counts == {"real": 40, "fake": 0}
    m.update(images(40, 11), real=False)
    assert m.compute().item() == pytest.approx(first, rel=1e-12)


def test_errors_for_bad_shapes_nan_and_too_few_samples():
    ext = LinearFeatures()
    m = FrechetDistance(ext, normalize=True)
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        m.update(torch.rand(3, 4, 4), real=True)
    nan_ext = LinearFeatures(offset=float("nan"))
    nan_metric = FrechetDistance(nan_ext, normalize=True)
    nan_metric.update(images(3, 0), real=True)
    nan_metric.update(images(3, 1), real=False)
    with pytest.raises(ValueError, match="NaN/inf features were accumulated in the real set"):
        nan_metric.compute()

    class Wrong(nn.Module):
        num_features = 6

        def forward(self, x):
            return torch.zeros(x.shape[0], 5)

    with pytest.raises(ValueError, match="expected"):
        FrechetDistance(Wrong(), normalize=True).update(images(2, 0), real=True)
    m.update(images(1, 0), real=True)
    m.update(images(5, 1), real=False)
    with pytest.raises(RuntimeError, match="More than one sample is required"):
        m.compute()
    with pytest.raises(ValueError, match="num_features"):
        FrechetDistance(nn.Identity())


def test_half_and_set_dtype_leave_states_in_float64():
    m = FrechetDistance(LinearFeatures(), normalize=True)
    m.half()
    m.set_dtype(torch.float16)
    assert m.real_moments.dtype == torch.float64 and m.fake_shift.dtype == torch.float64


def test_feature_share_attribute():
    m = FrechetDistance(LinearFeatures(), normalize=True)
    assert getattr(m, m.feature_network) is m.extractor


def test_compute_is_not_stale_after_update_features():
    m = FrechetDistance(LinearFeatures())
    rng = np.random.default_rng(0)
    m.update_features(torch.from_numpy(rng.normal(size=(20, 6))), real=True)
    m.update_features(torch.from_numpy(rng.normal(size=(20, 6))), real=False)
    first = m.compute().item()
    m.update_features(torch.from_numpy(rng.normal(size=(20, 6)) + 3), real=False)
    assert m.compute().item() > first + 1
