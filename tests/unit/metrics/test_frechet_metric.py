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
    assert m.extractor.weight.dtype == torch.float16
    assert m.set_dtype("float64") is m  # torchmetrics' set_dtype also takes a dtype's name
    assert m.extractor.weight.dtype == torch.float64


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


def _gaussian_rows(n, seed, offsets):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, len(offsets))) + np.asarray(offsets)


def test_states_reference_and_buffer_follow_the_metric_to_another_device(tmp_path):
    """``.to(device)`` moves the moments, a loaded reference with its cached factor, and the reused update
    buffer: after a move to PyTorch's ``meta`` device (shapes without data, so the check runs without a
    GPU) every tensor is there and an update runs there [torch's device of each tensor]."""
    x = torch.from_numpy(_gaussian_rows(10, 0, [0.0] * 6))
    donor = FrechetDistance(LinearFeatures())
    donor.update_features(x, real=True)
    m = FrechetDistance(LinearFeatures())
    m.use_reference(donor.statistics(True))
    m.update_features(x + 1, real=False)  # the buffer is made on the CPU
    assert m.to("meta") is m
    moved = {"fake_moments": m.fake_moments, "reference mean": m.statistics(True).mean,
             "reference cov": m.statistics(True).cov, "reference factor": m._reference_factor}
    assert {k: v.device.type for k, v in moved.items()} == dict.fromkeys(moved, "meta")
    m.update_features(torch.zeros(3, 6, device="meta"), real=False)  # the buffer follows
    assert m.fake_moments.device.type == "meta"
    m.half()  # a parent's dtype cast leaves the metric as it is
    assert m.fake_moments.dtype == torch.float64 and m.fake_moments.device.type == "meta"


def test_the_width_probe_runs_on_the_modules_device():
    """A module without ``num_features`` on another device gets its dummy batch there (as torchmetrics
    probes); on ``meta`` a CPU batch would fail inside ``linear`` [torch's own device check]."""
    from types import SimpleNamespace

    from facefd.metrics.frechet_metric import feature_width_of

    class OnDevice(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(3, 7)

        def forward(self, x):
            assert x.device == self.linear.weight.device, (x.device, self.linear.weight.device)
            return self.linear(x.float().mean(dim=(2, 3)))

    as_float = SimpleNamespace(uint8_input=False, passes_images_through=False, normalize=True)
    assert feature_width_of(OnDevice().to("meta"), (3, 4, 4), as_float) == 7
    assert feature_width_of(OnDevice(), (3, 4, 4), as_float) == 7


def test_precision_with_columns_far_apart_and_after_reset(tmp_path):
    """Columns centred at 1e8, 0 and -3e7 with unit spread: the covariance equals numpy's two-pass ``np.cov``
    only if every column is centred on its own mean before the outer products, in the first stream and again
    after ``reset()`` (the shift is taken anew from the first batch after a reset)."""
    offsets = [1e8, 0.0, -3e7, 5e7, 1.0, -1e8]
    m = FrechetDistance(LinearFeatures())
    for seed in (1, 2):
        real, fake = _gaussian_rows(300, seed, offsets), _gaussian_rows(200, seed + 10, offsets)
        m.update_features(torch.from_numpy(real), real=True)
        m.update_features(torch.from_numpy(fake), real=False)
        for got, rows in ((m.statistics(True), real), (m.statistics(False), fake)):
            np.testing.assert_allclose(got.cov.numpy(), np.cov(rows, rowvar=False), rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(got.mean.numpy(), rows.mean(0), rtol=1e-12)
        m.reset()


def test_reservoirs_of_one_row_and_kept_real_reservoirs():
    """``reservoir_size=1`` keeps one row per set; with ``reset_real_features=False`` a reset keeps the real
    reservoir's rows and clears the generated one [the rows streamed, compared by value]."""
    x = torch.from_numpy(_gaussian_rows(12, 3, [0.0] * 6))
    one = FrechetDistance(LinearFeatures(), reservoir_size=1)
    one.update_features(x, real=True)
    assert one.features(True).shape == (1, 6)
    assert any(torch.equal(one.features(True)[0], row.float()) for row in x)
    keep = FrechetDistance(LinearFeatures(), reservoir_size=20, reset_real_features=False)
    keep.update_features(x, real=True)
    keep.update_features(x[:5] + 1, real=False)
    keep.reset()
    assert sorted(keep.features(True)[:, 0].tolist()) == sorted(x[:, 0].float().tolist())
    assert keep.features(False).shape[0] == 0


def test_messages_name_the_problem_exactly(tmp_path):
    """Each refusal says what is wrong and what to do, in one sentence [the documented texts]."""
    from facefd.metrics.stats import GaussianStats

    class ReturnsList(nn.Module):
        def forward(self, x):
            return [x.float().mean()]

    with pytest.raises(ValueError, match=r"^ReturnsList returned <class 'list'> on a dummy batch of \(2, 3, 4, 4\); "):
        FrechetDistance(ReturnsList(), input_img_size=(3, 4, 4))
    x = torch.from_numpy(_gaussian_rows(10, 4, [0.0] * 6))
    m = FrechetDistance(LinearFeatures(), reservoir_size=10)
    m.update_features(x, real=True)
    m.use_reference(m.statistics(True))
    with pytest.raises(RuntimeError, match=r"^reference statistics are loaded: there are no real features for this "
                                           r"\(stream real images with a reservoir instead\)$"):
        m.features(True)
    nan = FrechetDistance(LinearFeatures())
    nan.update_features(torch.full((3, 6), float("nan")), real=False)
    with pytest.raises(ValueError, match=r"^NaN/inf features were accumulated in the fake set; check the images and "
                                         r"the extractor weights \(reset\(\) clears the metric\)$"):
        nan.statistics(False)
    unmarked = GaussianStats(torch.zeros(6, dtype=torch.float64), torch.eye(6, dtype=torch.float64), 5, "")
    with pytest.raises(StatisticsFileError, match=r"^the statistics was computed with another extractor \(fingerprint "
                                                  r"none\.\.\., this one is "):
        FrechetDistance(LinearFeatures()).use_reference(unmarked)


def test_statistics_carry_the_extractor_and_a_reference_keeps_its_metadata(tmp_path):
    """``statistics()`` is stamped with the metric's fingerprint; a reference keeps the file's fingerprint and
    metadata; a pytorch-fid file (``mu``/``sigma`` written here with numpy) is refused unless the caller
    states the extractor, and then gives scipy's distance."""
    from references import scipy_reference

    rows = _gaussian_rows(30, 5, [0.0] * 6)
    m = FrechetDistance(LinearFeatures())
    m.update_features(torch.from_numpy(rows), real=True)
    assert m.statistics(True).fingerprint == m.fingerprint
    path = m.save_reference(tmp_path / "ref.npz", metadata={"dataset": "lfw"})
    fresh = FrechetDistance(LinearFeatures())
    fresh.load_reference(path)
    assert fresh.statistics(True).fingerprint == m.fingerprint
    assert fresh.statistics(True).metadata["dataset"] == "lfw"

    mu, sigma = rows.mean(0) + 0.5, np.cov(rows, rowvar=False) * 2
    np.savez(tmp_path / "pytorch_fid.npz", mu=mu, sigma=sigma)
    with pytest.raises(StatisticsFileError, match="has no facefd extractor fingerprint"):
        FrechetDistance(LinearFeatures()).load_reference(tmp_path / "pytorch_fid.npz")
    assumed = FrechetDistance(LinearFeatures())
    assumed.load_reference(tmp_path / "pytorch_fid.npz", assume_extractor=True)
    fake = _gaussian_rows(40, 6, [0.2] * 6)
    assumed.update_features(torch.from_numpy(fake), real=False)
    want = scipy_reference(mu, sigma, fake.mean(0), np.cov(fake, rowvar=False))
    assert float(assumed.compute()) == pytest.approx(want, rel=1e-8)


def test_train_follows_nn_module_and_the_extractor_stays_in_eval():
    """``metric.train()`` with no argument means training mode, as ``nn.Module.train`` does; the extractor
    stays in eval mode either way [torch's nn.Module semantics]."""
    m = FrechetDistance(nn.Sequential(nn.Flatten(), nn.Linear(48, 4), nn.Dropout(0.5)), normalize=True,
                        input_img_size=(3, 4, 4))
    m.eval()
    assert m.train() is m and m.training
    assert not any(module.training for module in m.extractor.modules())
