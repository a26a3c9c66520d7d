"""OpenCVDetector (detector=opencv) on a real photo: scikit-image's astronaut(), whose face dlib's HOG detector
(an independent detector) locates; the Haar cascade's box must overlap it, and a photo without a face
(scikit-image's coffee()) gives no box."""
import pytest
from PIL import Image

skimage_data = pytest.importorskip("skimage.data")
pytest.importorskip("cv2")


def iou(a, b):
    left, top = max(a[0], b[0]), max(a[1], b[1])
    right, bottom = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, right - left) * max(0, bottom - top)
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def test_haar_cascade_finds_the_astronauts_face_where_dlib_does():
    dlib = pytest.importorskip("dlib")
    import numpy as np

    from facefd.models.faces import OpenCVDetector

    photo = skimage_data.astronaut()
    reference = dlib.get_frontal_face_detector()(photo, 0)
    assert len(reference) == 1
    r = reference[0]
    boxes = OpenCVDetector()(Image.fromarray(photo))
    assert len(boxes) >= 1
    best = max(iou(b.as_list(), [r.left(), r.top(), r.right(), r.bottom()]) for b in boxes)
    assert best > 0.4
    assert OpenCVDetector()(Image.fromarray(np.asarray(skimage_data.coffee()))) == []
