"""Manifests are data: every path is rebuilt inside the folders the user named, a record pointing
elsewhere is refused (evaluation) or ignored (resume), and names with any bytes round-trip. Reference:
the files on disk and the paths the code asked about, recorded here."""
import json
import os

import numpy as np
import pytest
from PIL import Image

import facefd.anonymize.anonymizer as anonymizer_module
from facefd.anonymize import Anonymizer
from facefd.data.manifest import ManifestError, record_path
from facefd.evaluation.anonymization import pair_images
from facefd.models.faces import WholeImage


class Grey:
    def __call__(self, positives, negatives, seeds):
        return [Image.new("RGB", (32, 32), (128, 128, 128)) for _ in positives]


def _anonymizer():
    return Anonymizer(Grey(), lambda face: {"Male": 0.9}, WholeImage(), mode="paste", residual_detector=lambda im: [])


def _photos(folder, names):
    folder.mkdir()
    for i, name in enumerate(names):
        Image.fromarray(np.full((24, 24, 3), 30 * i, np.uint8)).save(os.path.join(os.fsencode(folder), name))
    return folder


def test_record_paths_stay_inside(tmp_path):
    assert record_path(tmp_path, "a/b.jpg", ".png") == tmp_path / "a" / "b.png"
    for key in ("/etc/passwd", "../outside.png", "a/../../x.png", "", None):
        with pytest.raises(ManifestError):
            record_path(tmp_path, key)
    (tmp_path / "link").symlink_to("/etc")
    with pytest.raises(ManifestError, match="through a link"):
        record_path(tmp_path, "link/passwd")


def test_the_evaluation_refuses_a_record_that_leaves_the_folders(tmp_path):
    original, anonymized = _photos(tmp_path / "orig", [b"a.png"]), _photos(tmp_path / "anon", [b"a.png"])
    secret = _photos(tmp_path / "secret", [b"s.png"]) / "s.png"
    (anonymized / "manifest.jsonl").write_text(json.dumps(
        {"key": "a.png", "status": "anonymized", "output": str(secret)}) + "\n")
    assert pair_images(original, anonymized) == [(original / "a.png", anonymized / "a.png")]  # output rebuilt inside
    (anonymized / "manifest.jsonl").write_text(json.dumps(
        {"key": "../secret/s.png", "status": "anonymized", "output": str(secret)}) + "\n")
    with pytest.raises(ManifestError, match=r"'\.\./secret/s\.png' is not a relative path inside"):
        pair_images(original, anonymized)


def test_resume_never_looks_outside_the_output(tmp_path, monkeypatch):
    src, out = _photos(tmp_path / "in", [b"a.png"]), tmp_path / "out"
    outside = _photos(tmp_path / "elsewhere", [b"a.png"]) / "a.png"
    out.mkdir()
    (out / "manifest.jsonl").write_text(json.dumps(
        {"key": "a.png", "status": "anonymized", "output": str(outside), "output_size": outside.stat().st_size,
         "output_sha256": "0" * 64}) + "\n")
    looked_at = []
    original = anonymizer_module.output_intact
    monkeypatch.setattr(anonymizer_module, "output_intact", lambda rec: looked_at.append(rec["output"]) or original(rec))
    counts = _anonymizer().run(src, out, progress=False)
    assert counts["anonymized"] == 1 and counts["skipped"] == 0  # the foreign record was ignored: redone
    assert str(outside) not in looked_at and (out / "a.png").is_file()


def test_names_with_any_bytes_round_trip(tmp_path):
    src, out = _photos(tmp_path / "in", [b"bad\xff.png", b"ok.png"]), tmp_path / "out"
    assert _anonymizer().run(src, out, progress=False)["anonymized"] == 2
    assert sorted(os.listdir(os.fsencode(out))) == [b"bad\xff.png", b"manifest.jsonl", b"ok.png"]
    again = _anonymizer().run(src, out, progress=False)
    assert again["skipped"] == 2 and again["anonymized"] == 0  # the manifest gave the name back, byte for byte
    pairs = pair_images(src, out)
    assert [os.fsencode(p.name) for p, _ in pairs] == [b"bad\xff.png", b"ok.png"]
