"""The FID Inception without a file: fetched, verified and cached, then equal to torchmetrics' own FID
on the same file (the independent reference); files that claim the standard name or hold pickled code."""
import pytest
import torch

from facefd import FrechetDistance
from facefd.metrics.extractors import WeightsFileError, build_extractor

tm_fid = pytest.importorskip("torchmetrics.image.fid")


def test_no_argument_constructor_fetches_the_standard_network(known_inception, fid_weights):
    ours = FrechetDistance()  # torchmetrics' FrechetInceptionDistance() equivalent
    theirs = tm_fid.FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(fid_weights))
    g = torch.Generator().manual_seed(0)
    real = (torch.rand(6, 3, 299, 299, generator=g) * 255).to(torch.uint8)
    fake = (real.float() * 0.8).to(torch.uint8)
    for m in (ours, theirs):
        m.update(real, real=True)
        m.update(fake, real=False)
    assert len(known_inception.requests) == 1
    assert float(ours.compute()) == pytest.approx(float(theirs.compute()), rel=1e-5)
    build_extractor("inception")  # the command line's `--extractor fid`: from the cache now
    assert len(known_inception.requests) == 1


def test_a_file_with_the_standard_name_must_have_its_hash(fid_weights, tmp_path):
    fake = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    fake.write_bytes(fid_weights.read_bytes())  # random weights under the standard name
    with pytest.raises(WeightsFileError, match="named like the FID Inception"):
        build_extractor("inception", fake)


class Payload:
    """Unpickling this runs ``touch MARKER`` (what a malicious ``.pth`` does)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, ("touch " + self.marker,))


@pytest.mark.parametrize("entry", ["inception@{}", "timm:test_resnet@{}"])
@pytest.mark.parametrize("force_unsafe_default", [False, True])
def test_a_pickled_payload_in_a_weights_file_never_runs(tmp_path, monkeypatch, force_unsafe_default, entry):
    """With ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` torch's default is the old unpickle-anything one: the
    loader passes ``weights_only=True`` itself, so the marker still never appears. The reference is
    pickle's own behaviour: the same file loaded with ``weights_only=False`` does run the payload."""
    marker, weights = tmp_path / "marker", tmp_path / "evil.pth"
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(1), "x": Payload(str(marker))}, weights)
    if force_unsafe_default:
        monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    name, _, path = entry.format(weights).partition("@")
    with pytest.raises(WeightsFileError, match="not a plain weights file"):
        build_extractor(name, path)
    assert not marker.exists()
    torch.load(weights, weights_only=False)  # the file really carries the payload
    assert marker.exists()
