"""privacy_guard=dlib for real: the config's guard (dlib's face-identity network) on a real photo. The generator
stub first returns the original face itself (the identity kept: the guard must regenerate), then another
person (LFW, upscaled). The recorded distances are dlib's own, computed here with dlib's detector, its 5-point
shape predictor and its recognition network called directly."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

dlib = pytest.importorskip("dlib")
models = pytest.importorskip("face_recognition_models")
skimage_data = pytest.importorskip("skimage.data")


def dlib_embedding(array, rect=None):
    rect = rect or max(dlib.get_frontal_face_detector()(array, 1), key=lambda r: r.area())
    shape = dlib.shape_predictor(models.pose_predictor_five_point_model_location())(array, rect)
    net = dlib.face_recognition_model_v1(models.face_recognition_model_location())
    return np.asarray(net.compute_face_descriptor(array, shape, 0))


class OriginalThenStranger:
    """First call: the original photo's face region (what a generator that copied the face would give);
    afterwards: an LFW face of someone else."""

    def __init__(self, original, stranger):
        self.images, self.calls = [original, stranger], 0

    def __call__(self, positives, negatives, seeds):
        out = [self.images[min(self.calls, 1)] for _ in positives]
        self.calls += 1
        return out


def test_dlib_guard_regenerates_a_face_that_keeps_the_identity(tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from conftest import CONF
    from facefd.anonymize import Anonymizer
    from facefd.models.faces import DlibDetector

    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose(config_name="anonymize", overrides=["input=/in", "output=/out", "privacy_guard=dlib"])
    guard = instantiate(cfg.anonymizer.privacy_guard)
    assert guard.threshold == 0.6 and guard.max_tries == 3

    photo = skimage_data.astronaut()
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(photo).save(src / "astronaut.png")
    face = Image.fromarray(photo[20:240, 120:320]).resize((512, 512), Image.BICUBIC)
    lfw = skimage_data.lfw_subset()[0]
    stranger = Image.fromarray((np.clip(lfw, 0, 1) * 255).astype(np.uint8)).convert("RGB").resize((240, 240), Image.BICUBIC)
    generator = OriginalThenStranger(face, stranger)
    anonymizer = Anonymizer(generator, lambda f: {"Male": 0.1, "age": 40}, DlibDetector(upsample=1), privacy_guard=guard)
    anonymizer.run(src, tmp_path / "out", progress=False)
    record = json.loads((tmp_path / "out" / "manifest.jsonl").read_text().splitlines()[-1])["faces"][0]
    assert record["tries"] == 2 and generator.calls == 2
    left, top, right, bottom = record["box"]
    original = dlib_embedding(photo, dlib.rectangle(left, top, right, bottom))
    want = np.linalg.norm(original - dlib_embedding(np.asarray(stranger)))
    assert record["identity_distance"] == pytest.approx(want, abs=1e-6) and want > 0.6
    assert np.linalg.norm(original - dlib_embedding(np.asarray(face))) < 0.6  # why the first face was refused
