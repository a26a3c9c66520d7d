"""Paste mode replaces every detected face by default, flags an explicit ``faces=biggest``, and checks
the composed image again for faces no generated face covers. Reference: the pixels of each box in the
input and output images, compared here."""
import json

import numpy as np
import pytest
from PIL import Image

from facefd.anonymize import Anonymizer
from facefd.models.faces import Box

BIG, SMALL, MISSED = Box(10, 10, 70, 70), Box(120, 20, 160, 60), Box(170, 60, 195, 90)


class Grey:
    """A generator stub: one flat grey 32 px image per prompt."""

    def __call__(self, positives, negatives, seeds):
        return [Image.new("RGB", (32, 32), (128, 128, 128)) for _ in positives]


class Boxes:
    def __init__(self, *boxes):
        self.boxes = list(boxes)

    def __call__(self, image):
        return list(self.boxes)


def _photo(folder):
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (100, 200, 3), dtype=np.uint8)).save(folder / "two.png")
    return folder


def _changed(src, out, box):
    a = np.asarray(Image.open(src).convert("RGB"), dtype=np.int16)[box.top:box.bottom, box.left:box.right]
    b = np.asarray(Image.open(out).convert("RGB"), dtype=np.int16)[box.top:box.bottom, box.left:box.right]
    return float((np.abs(a - b).sum(-1) > 0).mean())  # share of the box's pixels that changed


def _record(out):
    return json.loads((out / "manifest.jsonl").read_text().splitlines()[-1])


def _anonymizer(detector, **kw):
    return Anonymizer(Grey(), lambda face: {"Male": 0.9, "age": 30}, detector, mode="paste", margin=0.0,
                      feather=0.0, residual_detector=kw.pop("residual", Boxes()), **kw)


@pytest.mark.parametrize("faces", [None, "all"])  # the default in paste mode, and faces=all said explicitly
def test_paste_mode_replaces_every_detected_face_by_default(tmp_path, faces):
    src = _photo(tmp_path / "in")
    counts = _anonymizer(Boxes(BIG, SMALL), faces=faces).run(src, tmp_path / "out", progress=False)
    rec = _record(tmp_path / "out")
    assert rec["faces_mode"] == "all" and len(rec["faces"]) == 2 and rec["faces_left"] == 0
    for box in (BIG, SMALL):  # the inscribed ellipse of each box is replaced: well over half its pixels
        assert _changed(src / "two.png", tmp_path / "out" / "two.png", box) > 0.7
    outside = np.ones((100, 200), bool)
    for box in (BIG, SMALL):
        outside[box.top:box.bottom, box.left:box.right] = False
    a = np.asarray(Image.open(src / "two.png").convert("RGB"))[outside]
    b = np.asarray(Image.open(tmp_path / "out" / "two.png").convert("RGB"))[outside]
    assert np.array_equal(a, b)  # nothing outside the faces moved
    assert counts["faces_left"] == 0 and counts["anonymized"] == 1


def test_faces_biggest_in_paste_mode_is_flagged(tmp_path):
    src = _photo(tmp_path / "in")
    counts = _anonymizer(Boxes(BIG, SMALL), faces="biggest").run(src, tmp_path / "out", progress=False)
    rec = _record(tmp_path / "out")
    assert rec["faces_mode"] == "biggest" and rec["faces_left"] == 1 and counts["faces_left"] == 1
    assert _changed(src / "two.png", tmp_path / "out" / "two.png", SMALL) == 0.0  # what the flag reports


def test_a_face_found_after_composing_is_handled_as_on_no_face_says(tmp_path):
    src = _photo(tmp_path / "in")
    residual = Boxes(BIG, MISSED)  # BIG is covered by its generated face; MISSED is not
    blurred = _anonymizer(Boxes(BIG), residual=residual, on_no_face="blur").run(src, tmp_path / "b", progress=False)
    assert blurred["residual_faces"] == 1 and _record(tmp_path / "b")["residual_faces"] == [MISSED.as_list()]
    assert _changed(src / "two.png", tmp_path / "b" / "two.png", MISSED) > 0.9

    skipped = _anonymizer(Boxes(BIG), residual=residual, on_no_face="skip").run(src, tmp_path / "s", progress=False)
    assert skipped["residual_face"] == 1 and not (tmp_path / "s" / "two.png").exists()
    assert _record(tmp_path / "s")["status"] == "residual_face"

    kept = _anonymizer(Boxes(BIG), residual=residual, on_no_face="copy").run(src, tmp_path / "c", progress=False)
    rec = _record(tmp_path / "c")
    assert rec["residual_action"] == "copy" and kept["faces_left"] == 1  # the user's choice, recorded
    assert _changed(src / "two.png", tmp_path / "c" / "two.png", MISSED) == 0.0
