"""Code written against torchmetrics' FrechetInceptionDistance runs on facefd's class: the ``inception``
attribute, the state names code and checkpoints read, a torchmetrics checkpoint loaded, ``antialias``
with torchmetrics' meaning and default, ``normalize=True``'s conversion, ``forward``'s batch value, and
the error types. Reference: torchmetrics' own metric on the same network weights and images."""
import pytest
import torch
from torch import nn

from facefd import FrechetDistance

tm_fid = pytest.importorskip("torchmetrics.image.fid")


def _uint8(n, seed, size=48, scale=255.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, size, size, generator=g) * scale).to(torch.uint8)


class MeanColour(nn.Module):
    """Mean colour in [0, 1] of uint8 (as torchmetrics hands them over) or float images (as facefd does)."""

    num_features = 3

    def forward(self, x):
        x = x.float() / 255 if x.dtype == torch.uint8 else x
        return x.mean(dim=(2, 3))


def _fill(metric, real, fake):
    metric.update(real, real=True)
    metric.update(fake, real=False)
    return metric


def test_states_and_attribute_read_as_torchmetrics_names_them():
    """Two batches a set with different means (so each process's shift differs from the later batches)."""
    ours, theirs = FrechetDistance(feature_extractor=MeanColour()), tm_fid.FrechetInceptionDistance(MeanColour())
    for metric in (ours, theirs):
        _fill(metric, _uint8(10, 0), _uint8(12, 1, scale=180))
        _fill(metric, _uint8(7, 2, scale=90), _uint8(5, 3, scale=250))
    assert ours.inception is ours.extractor
    for name in ("real_features_sum", "real_features_cov_sum", "real_features_num_samples",
                 "fake_features_sum", "fake_features_cov_sum", "fake_features_num_samples"):
        mine, reference = getattr(ours, name), getattr(theirs, name)
        assert mine.dtype == reference.dtype, name
        torch.testing.assert_close(mine, reference, rtol=1e-12, atol=1e-6, msg=name)
    assert float(ours.compute()) == pytest.approx(float(theirs.compute()), rel=1e-6)


@pytest.mark.parametrize("antialias", [True, False])
def test_antialias_and_normalize_follow_torchmetrics(fid_weights, antialias):
    real, fake = torch.rand(6, 3, 48, 40), torch.rand(6, 3, 48, 40) * 0.7  # not 299: the resize matters
    kwargs = dict(feature=64, normalize=True, feature_extractor_weights_path=str(fid_weights), antialias=antialias)
    ours, theirs = FrechetDistance(**kwargs), tm_fid.FrechetInceptionDistance(**kwargs)
    for m in (ours, theirs):
        _fill(m, real, fake)
    assert float(ours.compute()) == pytest.approx(float(theirs.compute()), rel=1e-5)


def test_the_default_is_torchmetrics_antialias(fid_weights):
    real, fake = _uint8(6, 2), _uint8(6, 3, scale=150)
    ours = _fill(FrechetDistance(64, feature_extractor_weights_path=fid_weights), real, fake)
    theirs = _fill(tm_fid.FrechetInceptionDistance(64, feature_extractor_weights_path=str(fid_weights)), real, fake)
    tf_like = _fill(FrechetDistance(64, feature_extractor_weights_path=fid_weights, antialias=False), real, fake)
    assert float(ours.compute()) == pytest.approx(float(theirs.compute()), rel=1e-5)
    assert float(tf_like.compute()) != pytest.approx(float(ours.compute()), rel=1e-6)  # the option matters here


def test_a_torchmetrics_checkpoint_loads_and_gives_the_same_value(fid_weights):
    theirs = tm_fid.FrechetInceptionDistance(64, feature_extractor_weights_path=str(fid_weights))
    theirs.persistent(True)
    _fill(theirs, _uint8(8, 4), _uint8(8, 5, scale=200))
    checkpoint = theirs.state_dict()
    assert any(k.startswith("inception.") for k in checkpoint) and "real_features_cov_sum" in checkpoint
    ours = FrechetDistance(64, feature_extractor_weights_path=fid_weights)
    ours.load_state_dict(checkpoint)
    assert int(ours.real_features_num_samples) == 8
    assert float(ours.compute()) == pytest.approx(float(theirs.compute()), rel=1e-6)
    ours.update(_uint8(4, 6, scale=200), real=False)  # and it goes on accumulating
    theirs.update(_uint8(4, 6, scale=200), real=False)
    assert float(ours.compute()) == pytest.approx(float(theirs.compute()), rel=1e-6)


def test_forward_returns_the_batch_value():
    real, first, second = _uint8(10, 7), _uint8(6, 8, scale=200), _uint8(6, 9, scale=120)
    metric = FrechetDistance(MeanColour(), reset_real_features=False)
    metric.update(real, real=True)
    batch_value = metric(first, real=False)
    alone = _fill(FrechetDistance(MeanColour()), real, first)  # the batch against the real set
    assert float(batch_value) == pytest.approx(float(alone.compute()), rel=1e-9)
    metric(second, real=False)
    everything = _fill(FrechetDistance(MeanColour()), real, torch.cat([first, second]))
    assert float(metric.compute()) == pytest.approx(float(everything.compute()), rel=1e-9)  # nothing counted twice
    with pytest.raises(RuntimeError):  # torchmetrics: a batch state without 2 images in each set cannot compute
        FrechetDistance(MeanColour())(real, real=True)


def test_update_count_is_torchmetrics():
    """``update_count`` (what torchmetrics' warnings and user code read) moves as torchmetrics' own FID's
    does: one per ``update``, one per ``forward``; ``reset`` leaves it, as torchmetrics does."""
    real, fake = _uint8(6, 1), _uint8(6, 2, scale=200)
    counts = []
    for metric in (FrechetDistance(MeanColour(), reset_real_features=False),
                   tm_fid.FrechetInceptionDistance(MeanColour(), reset_real_features=False)):
        metric.update(real, real=True)
        metric.update(fake, real=False)
        seen = [metric.update_count]
        metric(fake, real=False)
        seen.append(metric.update_count)
        metric.compute()
        metric.reset()
        seen.append(metric.update_count)
        counts.append(seen)
    assert counts[0] == counts[1] and counts[1][0] == 2


def test_errors_are_torchmetrics_type_and_text():
    """The same type and message as torchmetrics' FID for the same mistake (facefd may add a clause after it)."""
    mistakes = [dict(feature=MeanColour(), normalize=1), dict(feature=MeanColour(), reset_real_features="no"),
                dict(feature=100), dict(feature="inception")]
    for kwargs in mistakes:
        with pytest.raises((ValueError, TypeError)) as theirs:
            tm_fid.FrechetInceptionDistance(**kwargs)
        with pytest.raises(theirs.type) as ours:
            FrechetDistance(**kwargs)
        assert str(ours.value).startswith(str(theirs.value)), kwargs
    assert str(ours.value) == "Got unknown input to argument `feature`: 64/192/768/2048 (the FID Inception) or an " \
                              "nn.Module, not str"
    with pytest.raises(RuntimeError) as theirs:
        tm_fid.FrechetInceptionDistance(MeanColour()).compute()
    with pytest.raises(RuntimeError, match=r"\(the real set has 0\)$") as ours:
        FrechetDistance(MeanColour()).compute()
    assert str(ours.value).startswith(str(theirs.value))


def test_constructor_defaults_are_torchmetrics(known_inception, fid_weights):
    """Every argument the two constructors share has torchmetrics' default [inspect.signature of theirs], and
    the metric made with no argument at all (the standard weights fetched, here from 127.0.0.1) gives the value
    of torchmetrics' default FID on those weights."""
    import inspect

    ours = inspect.signature(FrechetDistance).parameters
    theirs = inspect.signature(tm_fid.FrechetInceptionDistance).parameters
    shared = [name for name, p in theirs.items() if name in ours and p.default is not inspect.Parameter.empty]
    assert {"feature", "reset_real_features", "normalize", "input_img_size", "antialias"} <= set(shared)
    assert {name: ours[name].default for name in shared} == {name: theirs[name].default for name in shared}
    default = _fill(FrechetDistance(), _uint8(3, 30, size=32), _uint8(3, 31, size=32, scale=160))
    reference = _fill(tm_fid.FrechetInceptionDistance(feature_extractor_weights_path=str(fid_weights)),
                      _uint8(3, 30, size=32), _uint8(3, 31, size=32, scale=160))
    assert default.num_features == 2048
    assert float(default.compute()) == pytest.approx(float(reference.compute()), rel=1e-5)


def test_a_checkpoint_of_one_image_on_a_module_of_its_own_resumes():
    """torchmetrics' FID on a module of the user's (``inception.conv.*`` keys) after one real image: the weights
    load into the extractor, and streaming on from the checkpoint gives torchmetrics' value."""
    theirs = tm_fid.FrechetInceptionDistance(Uint8Only(), input_img_size=(3, 16, 16))
    theirs.persistent(True)
    _fill(theirs, _uint8(1, 20, size=16), _uint8(3, 21, size=16, scale=150))
    mine = Uint8Only()
    torch.nn.init.normal_(mine.conv.weight)  # other weights, replaced by the checkpoint's
    ours = FrechetDistance(mine, input_img_size=(3, 16, 16))
    ours.load_state_dict(theirs.state_dict())
    torch.testing.assert_close(ours.extractor.conv.weight, theirs.inception.conv.weight, rtol=0, atol=0)
    for metric in (ours, theirs):
        _fill(metric, _uint8(6, 22, size=16, scale=60) + 150, _uint8(4, 23, size=16, scale=200))
    assert int(ours.real_features_num_samples) == 7
    assert float(ours.compute()) == pytest.approx(float(theirs.compute()), rel=1e-6)


class Uint8Only(nn.Module):
    """A module written for torchmetrics' ``feature=``: it refuses anything but uint8 and declares nothing."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        if x.dtype != torch.uint8:
            raise TypeError("uint8 images only")
        return self.conv(x.float() / 127.5 - 1).mean(dim=(2, 3))


class FloatOnly(Uint8Only):
    """The same for a module that takes floats (torchmetrics hands floats over with normalize=True)."""

    def forward(self, x):
        if x.dtype != torch.float32:
            raise TypeError("float images only")
        return self.conv(x * 2 - 1).mean(dim=(2, 3))


@pytest.mark.parametrize("module,normalize", [(Uint8Only, False), (FloatOnly, True)])
def test_a_module_written_for_torchmetrics_gets_what_torchmetrics_gives(module, normalize):
    real, fake = _uint8(12, 10, size=16), _uint8(12, 11, size=16, scale=150)
    if normalize:
        real, fake = real.float() / 255, fake.float() / 255
    kwargs = dict(normalize=normalize, input_img_size=(3, 16, 16))
    ours = _fill(FrechetDistance(module(), **kwargs), real, fake)
    theirs = _fill(tm_fid.FrechetInceptionDistance(module(), **kwargs), real, fake)
    assert ours.num_features == theirs.real_features_sum.shape[0] == 4
    assert float(ours.compute()) == pytest.approx(float(theirs.compute()), rel=1e-6)


def test_set_dtype_reaches_the_network_and_parent_casts_do_not(fid_weights):
    """torchmetrics' rule: only set_dtype changes the network's dtype."""
    holder = nn.Module()
    holder.fid = FrechetDistance(64, feature_extractor_weights_path=fid_weights)
    holder.half()
    assert all(p.dtype == torch.float32 for p in holder.fid.extractor.parameters())
    holder.fid.set_dtype(torch.float64)
    out = holder.fid.inception(_uint8(1, 12, size=64))
    assert out.dtype == torch.float64
    assert holder.fid.real_moments.dtype == torch.float64  # the moments stay float64 either way
