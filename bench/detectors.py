"""Face-detector recall on real faces, and false boxes on photos without faces.

Faces: scikit-image's LFW subset (100 real face crops, 25 px, upscaled) pasted three to a scene on
texture and photo backgrounds at 32-256 px, upright, rotated +-30 deg and 90 deg; and ``astronaut()``
scaled so its face is 32-256 px, at the same rotations. Non-faces: the LFW subset's 100 non-face
patches (upscaled, tiled) and every scikit-image photo without a face. A face counts as found when a
box's centre lies inside its (rotated) bounding box and the box's area is 0.1-4x the face's.

Run (MTCNN is measured when facenet-pytorch's files are on ``--mtcnn-path``; the package pins an old torch,
so unpack its wheel rather than installing it):

    pip download --no-deps facenet-pytorch -d /tmp/fp && unzip -oq /tmp/fp/*.whl -d /tmp/fp/src
    python bench/detectors.py --mtcnn-path /tmp/fp/src --plot docs/results/detectors.png
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

import numpy as np
from PIL import Image

SIZES = (32, 48, 64, 96, 128, 256)
ANGLES = (0, 30, -30, 90)
CANVAS = 640


@dataclass
class Scene:
    image: Image.Image
    faces: list[tuple[float, float, float, float]]  # axis-aligned boxes of the (rotated) faces
    size: int
    angle: int
    source: str


def rotated_box(cx: float, cy: float, w: float, h: float, angle: float) -> tuple[float, float, float, float]:
    a = np.deg2rad(angle)
    half_w = (abs(np.cos(a)) * w + abs(np.sin(a)) * h) / 2
    half_h = (abs(np.sin(a)) * w + abs(np.cos(a)) * h) / 2
    return cx - half_w, cy - half_h, cx + half_w, cy + half_h


def backgrounds() -> list[Image.Image]:
    from skimage import data

    photos = [data.brick(), data.grass(), data.gravel(), data.coffee(), data.rocket()]
    out = []
    for array in photos:
        im = Image.fromarray(array).convert("RGB").resize((CANVAS, CANVAS), Image.BILINEAR)
        out.append(im)
    return out


def lfw_scenes(per_condition: int) -> list[Scene]:
    """Three LFW faces per scene, each condition (size, angle) drawing the faces in turn."""
    from skimage import data

    faces = data.lfw_subset()[:100]
    grounds = backgrounds()
    rng = np.random.default_rng(0)
    scenes, cursor = [], 0
    for size in SIZES:
        for angle in ANGLES:
            for k in range(per_condition):
                canvas = grounds[(cursor // 3 + k) % len(grounds)].copy()
                boxes = []
                slots = np.linspace(0, CANVAS, 4)[:3] + CANVAS / 6  # three columns
                for slot in slots:
                    face = faces[cursor % len(faces)]
                    cursor += 1
                    tile = Image.fromarray((face * 255).astype(np.uint8)).convert("RGB").resize((size, size), Image.BICUBIC)
                    rgba = tile.convert("RGBA").rotate(angle, resample=Image.BICUBIC, expand=True)
                    cx = float(slot) if size <= CANVAS / 3 else CANVAS / 2
                    cy = float(rng.uniform(rgba.height / 2, CANVAS - rgba.height / 2)) if rgba.height < CANVAS else CANVAS / 2
                    canvas.paste(rgba, (int(cx - rgba.width / 2), int(cy - rgba.height / 2)), rgba)
                    boxes.append(rotated_box(cx, cy, size, size, angle))
                    if size > CANVAS / 3:  # big faces: one per scene
                        break
                scenes.append(Scene(canvas, boxes, size, angle, "lfw"))
    return scenes


def astronaut_scenes() -> list[Scene]:
    from skimage import data

    photo = Image.fromarray(data.astronaut())
    face = (178, 60, 268, 175)  # Eileen Collins' face in the 512 px photo (all detectors agree within a few px)
    side = max(face[2] - face[0], face[3] - face[1])
    scenes = []
    for size in SIZES:
        scale = size / side
        im = photo.resize((round(photo.width * scale), round(photo.height * scale)), Image.BICUBIC)
        box = [v * scale for v in face]
        cx, cy, w, h = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, box[2] - box[0], box[3] - box[1]
        for angle in ANGLES:
            turned = im.rotate(angle, resample=Image.BICUBIC, expand=True)
            # the face centre moves with the rotation about the image centre (PIL turns counter-clockwise)
            a = np.deg2rad(angle)
            dx, dy = cx - im.width / 2, cy - im.height / 2
            ncx = turned.width / 2 + dx * np.cos(a) + dy * np.sin(a)
            ncy = turned.height / 2 - dx * np.sin(a) + dy * np.cos(a)
            scenes.append(Scene(turned, [rotated_box(ncx, ncy, w, h, angle)], size, angle, "astronaut"))
    return scenes


def non_faces() -> list[Image.Image]:
    from skimage import data

    patches = data.lfw_subset()[100:]
    out = []
    for start in range(0, 100, 25):  # 5 x 5 tiles of 96 px
        canvas = Image.new("RGB", (480, 480))
        for i, patch in enumerate(patches[start:start + 25]):
            tile = Image.fromarray((patch * 255).astype(np.uint8)).convert("RGB").resize((96, 96), Image.BICUBIC)
            canvas.paste(tile, ((i % 5) * 96, (i // 5) * 96))
        out.append(canvas)
    for name in ("coffee", "chelsea", "rocket", "coins", "horse", "hubble_deep_field", "immunohistochemistry",
                 "page", "grass", "gravel", "brick", "retina", "moon", "clock", "text", "logo", "colorwheel",
                 "motorcycle_left", "cell", "kidney", "lily"):
        try:
            array = getattr(data, name)()
        except Exception:  # noqa: BLE001 (a photo the installed scikit-image lacks or cannot read)
            continue
        array = np.asarray(array).astype(np.float64) if np.asarray(array).dtype == bool else np.asarray(array)
        if array.ndim == 3 and array.shape[-1] > 4:  # volumes (kidney) and multichannel stacks: one slice
            array = array[array.shape[0] // 2]
        if array.ndim == 3 and array.shape[-1] not in (3, 4):
            continue
        if array.dtype != np.uint8:
            array = (255 * (array - array.min()) / max(float(np.ptp(array)), 1e-8)).astype(np.uint8)
        out.append(Image.fromarray(array).convert("RGB"))
    return out


def found(box, truth) -> bool:
    cx, cy = (box.left + box.right) / 2, (box.top + box.bottom) / 2
    area = max(1.0, (truth[2] - truth[0]) * (truth[3] - truth[1]))
    return truth[0] <= cx <= truth[2] and truth[1] <= cy <= truth[3] and 0.1 <= box.area / area <= 4


class MTCNNDetector:
    """facenet-pytorch's MTCNN (the anonymization paper's face-crop protocol), measured only."""

    def __init__(self, path: str) -> None:
        sys.path.insert(0, path)
        from facenet_pytorch import MTCNN

        self.model = MTCNN(keep_all=True, device="cpu")

    def __call__(self, image):
        from facefd.models.faces import Box

        boxes, scores = self.model.detect(image.convert("RGB"))
        if boxes is None:
            return []
        return [Box(int(b[0]), int(b[1]), int(b[2]), int(b[3]), float(s)) for b, s in zip(boxes, scores)]


def detectors(args) -> dict:
    from facefd.models.faces import DlibCNNDetector, DlibDetector, OpenCVDetector, RotationSweep
    from facefd.models.retinaface import RetinaFaceDetector

    found_ = {
        "RetinaFace (ONNX, thr 0.5)": RetinaFaceDetector,
        "RetinaFace x2 upscale": lambda: RetinaFaceDetector(upscale=2.0),
        "RetinaFace + turns 0/+-90": lambda: RotationSweep(RetinaFaceDetector()),
        "RetinaFace x2 + turns 0/+-90": lambda: RotationSweep(RetinaFaceDetector(upscale=2.0)),
        "RetinaFace x2 + turns, thr 0.8": lambda: RotationSweep(RetinaFaceDetector(threshold=0.8, upscale=2.0)),
        "RetinaFace + turns, thr 0.8": lambda: RotationSweep(RetinaFaceDetector(threshold=0.8)),
        "dlib HOG (upsample 1)": DlibDetector,
        "dlib HOG x2 + turns 0/+-90": lambda: RotationSweep(DlibDetector(upsample=2)),
        "dlib HOG (upsample 2)": lambda: DlibDetector(upsample=2),
        "dlib CNN (upsample 1)": DlibCNNDetector,
        "OpenCV Haar": OpenCVDetector,
    }
    if args.mtcnn_path:
        found_["MTCNN (facenet-pytorch)"] = lambda: MTCNNDetector(args.mtcnn_path)
    return {k: v for k, v in found_.items() if not args.only or any(o.lower() in k.lower() for o in args.only)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-condition", type=int, default=3, help="LFW scenes per size and angle (3 faces each)")
    parser.add_argument("--mtcnn-path", default=None)
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--plot", default=None, help="write recall by face size as a PNG here")
    args = parser.parse_args()
    scenes = lfw_scenes(args.per_condition) + astronaut_scenes()
    negatives = non_faces()
    n_faces = sum(len(s.faces) for s in scenes)
    print(f"{len(scenes)} scenes with {n_faces} faces (LFW + astronaut), {len(negatives)} photos without faces")
    rows = {}
    for name, build in detectors(args).items():
        detector = build()
        start = time.perf_counter()
        hits: dict[tuple, list[int]] = {}
        extra = 0
        for scene in scenes:
            boxes = detector(scene.image)
            for truth in scene.faces:
                hit = any(found(b, truth) for b in boxes)
                for key in (("size", scene.size), ("angle", scene.angle), ("all",)):
                    hits.setdefault(key, []).append(int(hit))
            extra += sum(1 for b in boxes if not any(found(b, t) for t in scene.faces))
        false_boxes = sum(len(detector(im)) for im in negatives)
        seconds = time.perf_counter() - start
        rows[name] = (hits, extra, false_boxes, seconds)
        print(f"{name:28s} recall {np.mean(hits[('all',)]):.3f}  false boxes: {false_boxes} on non-face photos, "
              f"{extra} stray in face scenes  ({seconds:.0f} s)", flush=True)
    header = ["detector", "recall", *[f"{s} px" for s in SIZES], *[f"{a:+d}°" for a in ANGLES],
              "false boxes (non-face photos)", "stray boxes (face scenes)", "seconds"]
    print("\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for name, (hits, extra, false_boxes, seconds) in rows.items():
        cells = [f"{np.mean(hits[('all',)]):.2f}", *[f"{np.mean(hits[('size', s)]):.2f}" for s in SIZES],
                 *[f"{np.mean(hits[('angle', a)]):.2f}" for a in ANGLES], str(false_boxes), str(extra), f"{seconds:.0f}"]
        print(f"| {name} | " + " | ".join(cells) + " |")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
        for name, (hits, *_rest) in rows.items():
            axes[0].plot(SIZES, [np.mean(hits[("size", s)]) for s in SIZES], marker="o", label=name)
            axes[1].plot(range(len(ANGLES)), [np.mean(hits[("angle", a)]) for a in ANGLES], marker="o", label=name)
        axes[0].set(xscale="log", xlabel="face size (px)", ylabel="recall", xticks=SIZES, xticklabels=SIZES)
        axes[1].set(xticks=range(len(ANGLES)), xticklabels=[f"{a:+d}°" for a in ANGLES], xlabel="rotation")
        axes[1].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
