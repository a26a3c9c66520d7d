"""Standard weights fetched as the peers fetch them, from a server on 127.0.0.1: the pinned sha256
(computed here with hashlib) accepted and cached, a wrong one refused with nothing left, a cut-off
download leaving nothing, the offline switch's one line, a tampered cache refused, a peer's cached copy
reused, the mirror. References: hashlib and the server's own request log."""
import hashlib
import os
import subprocess
import sys

import pytest

from facefd.utils import weights


def _cache_files(tmp_path):
    folder = tmp_path / "torch_home" / "hub" / "checkpoints"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_right_hash_is_cached_and_the_second_run_asks_nothing(known_inception, fid_weights, tmp_path):
    path = weights.fetch_weights("inception", progress=False)
    assert path == tmp_path / "torch_home" / "hub" / "checkpoints" / weights.KNOWN_WEIGHTS["inception"].filename
    assert hashlib.sha256(path.read_bytes()).hexdigest() == hashlib.sha256(fid_weights.read_bytes()).hexdigest()
    assert len(known_inception.requests) == 1
    assert weights.fetch_weights("inception", progress=False) == path
    assert len(known_inception.requests) == 1  # verified from the cache, no request
    assert _cache_files(tmp_path) == [path.name]  # no temporary file left


def test_wrong_hash_is_refused_and_nothing_stays(known_inception, tmp_path, monkeypatch):
    spec = weights.KNOWN_WEIGHTS["inception"]
    monkeypatch.setitem(weights.KNOWN_WEIGHTS, "inception", weights.KnownWeights(
        url=spec.url, sha256="0" * 64, filename=spec.filename, description=spec.description))
    with pytest.raises(weights.WeightsError, match="not the pinned 0000000000000000"):
        weights.fetch_weights("inception", progress=False)
    assert _cache_files(tmp_path) == []


def test_a_download_cut_off_midway_leaves_nothing(known_inception, tmp_path):
    known_inception.cut_after = 1000
    with pytest.raises(weights.WeightsError, match="could not download|stopped at"):
        weights.fetch_weights("inception", progress=False)
    assert _cache_files(tmp_path) == []
    known_inception.cut_after = None
    assert weights.fetch_weights("inception", progress=False).is_file()  # the next run fetches it whole


@pytest.mark.parametrize("variable", ["FACEFD_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_is_one_line_naming_the_url_and_the_place(known_inception, tmp_path, monkeypatch, variable):
    monkeypatch.setenv(variable, "1")
    with pytest.raises(weights.WeightsError) as info:
        weights.fetch_weights("inception", progress=False)
    message = str(info.value)
    assert "\n" not in message
    assert weights.KNOWN_WEIGHTS["inception"].url in message
    assert str(tmp_path / "torch_home" / "hub" / "checkpoints") in message
    assert known_inception.requests == []


def test_a_tampered_cache_is_refused(known_inception, tmp_path):
    path = weights.fetch_weights("inception", progress=False)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(weights.WeightsError, match="delete it"):
        weights.fetch_weights("inception", progress=False)


def test_a_peers_cached_copy_is_reused_only_when_its_hash_matches(known_inception, fid_weights, tmp_path):
    folder = tmp_path / "torch_home" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    peer = folder / "pt_inception-2015-12-05-6726825d.pth"  # pytorch-fid's name for the network
    peer.write_bytes(fid_weights.read_bytes())
    assert weights.fetch_weights("inception", progress=False) == peer
    assert known_inception.requests == []
    peer.write_bytes(b"not the weights")
    with pytest.raises(weights.WeightsError, match="pt_inception"):
        weights.fetch_weights("inception", progress=False)


def test_the_mirror_serves_the_same_name_under_the_same_hash(known_inception, tmp_path, monkeypatch):
    spec = weights.KNOWN_WEIGHTS["inception"]
    monkeypatch.setitem(weights.KNOWN_WEIGHTS, "inception", weights.KnownWeights(
        url="http://127.0.0.1:9/unreachable", sha256=spec.sha256, filename=spec.filename))
    monkeypatch.setenv("FACEFD_WEIGHTS_MIRROR", known_inception.url + "/")
    assert weights.fetch_weights("inception", progress=False).is_file()
    assert known_inception.requests == [f"/{spec.filename}"]


def test_no_variable_changes_a_pinned_hash(tmp_path):
    """The pinned hash is a constant of the code: nothing in the environment reaches it."""
    env = {**os.environ, "FACEFD_WEIGHTS_MIRROR": "http://127.0.0.1:9", "FACEFD_INCEPTION_SHA256": "0" * 64}
    out = subprocess.run([sys.executable, "-c", "from facefd.utils.weights import KNOWN_WEIGHTS; "
                          "print(KNOWN_WEIGHTS['inception'].sha256)"], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
