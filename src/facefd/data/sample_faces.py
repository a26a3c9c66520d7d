"""The embedded default data set: cartoon faces drawn in code, with CelebA-named labels.

This is a smoke-test set, not photographs of people: it lets training, probes and prompt building
run with nothing downloaded, and its labels are ground truth because the drawing follows them.
Output layout (CelebA conventions): ``images/000000.png``, ``list_attr_celeba.txt`` (-1/1),
``list_eval_partition.txt`` (0 train, 1 val, 2 test, split by person), ``identity_CelebA.txt`` (person
of each image: several views per person, varying pose, expression, hat, glasses, framing and light),
``facefd_sample.json`` (generation settings).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from tqdm.auto import tqdm

SAMPLE_ATTRIBUTES: tuple[str, ...] = (
    "Bangs", "Black_Hair", "Blond_Hair", "Brown_Hair", "Eyeglasses", "Gray_Hair", "Male",
    "Mustache", "No_Beard", "Pale_Skin", "Smiling", "Wearing_Hat", "Young",
)
_HAIR_COLOURS = {
    "Black_Hair": (25, 20, 18), "Blond_Hair": (225, 195, 110), "Brown_Hair": (105, 65, 35), "Gray_Hair": (165, 165, 160),
}
_SKIN_TONES = [(240, 210, 190), (224, 172, 135), (198, 134, 92), (160, 105, 70), (110, 70, 45)]
_PALE_SKIN = (252, 232, 222)
_IRIS_COLOURS = [(60, 40, 20), (40, 90, 160), (60, 120, 60), (30, 30, 30)]
_VERSION = 2
#: plain: one colour per photo; clutter: random shapes behind the person (see :func:`sample_clutter`).
BACKGROUNDS = ("plain", "clutter")


def _jitter(colour: Sequence[float], rng: np.random.Generator, sd: float) -> tuple[int, ...]:
    return tuple(int(np.clip(c + rng.normal(0, sd), 0, 255)) for c in colour)


def sample_identity(rng: np.random.Generator) -> dict[str, Any]:
    """One person: the attributes that stay with them (sex, age, hair, skin, facial hair, glasses) with
    CelebA-like correlations (grey hair mostly when old, facial hair only on men), and the face geometry
    and colours that make their views look alike."""
    male, young = bool(rng.random() < 0.45), bool(rng.random() < 0.7)
    hair_p = np.array([0.3, 0.25, 0.35, 0.1]) if young else np.array([0.2, 0.1, 0.25, 0.45])
    hair = list(_HAIR_COLOURS)[rng.choice(4, p=hair_p / hair_p.sum())]
    pale = bool(rng.random() < 0.15)
    return {
        "Male": male, "Young": young, "hair": hair, "Pale_Skin": pale,
        "Mustache": male and bool(rng.random() < 0.3), "No_Beard": not (male and rng.random() < 0.35),
        "Bangs": bool(rng.random() < (0.1 if male else 0.3)), "glasses": bool(rng.random() < 0.22),
        "skin": _jitter(_PALE_SKIN if pale else _SKIN_TONES[rng.integers(len(_SKIN_TONES))], rng, 6),
        "hair_rgb": _jitter(_HAIR_COLOURS[hair], rng, 8),
        "iris": _IRIS_COLOURS[rng.integers(len(_IRIS_COLOURS))],
        "frame": [(20, 20, 20), (120, 40, 40), (40, 40, 120)][rng.integers(3)],
        "width": rng.uniform(0.28, 0.33) * (1.08 if male else 1.0), "height": rng.uniform(0.36, 0.41),
        "eye_dx": rng.uniform(0.38, 0.46), "eye_r": rng.uniform(0.10, 0.14), "nose": rng.uniform(0.18, 0.28),
        "mouth_w": rng.uniform(0.32, 0.44),
    }


def sample_clutter(rng: np.random.Generator, shapes: int = 8) -> list[tuple[str, list[float], tuple[int, ...]]]:
    """A busy background: random rectangles and ellipses (unit-square boxes) in random colours, so that two
    crops of one photo see different backgrounds, as in real photos."""
    out = []
    for _ in range(shapes):
        w, h = rng.uniform(0.15, 0.5, 2)
        x, y = rng.uniform(-0.1, 1.0 - w + 0.1), rng.uniform(-0.1, 1.0 - h + 0.1)
        out.append((["rect", "ellipse"][rng.integers(2)], [x, y, x + w, y + h],
                    tuple(int(c) for c in rng.integers(20, 236, 3))))
    return out


def sample_view(identity: dict[str, Any], rng: np.random.Generator, background: str = "plain") -> dict[str, Any]:
    """One photo of a person: expression, hat, glasses on or off, pose, framing, background, light."""
    view = _sample_view(identity, rng)
    view["clutter"] = sample_clutter(rng) if background == "clutter" else []
    return view


def _sample_view(identity: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    return {
        "Smiling": bool(rng.random() < 0.5), "Wearing_Hat": bool(rng.random() < 0.15),
        "Eyeglasses": identity["glasses"] and bool(rng.random() < 0.85),
        "yaw": rng.uniform(-0.3, 0.3), "pitch": rng.uniform(-0.12, 0.12), "roll": rng.normal(0, 7),
        "scale": rng.uniform(0.88, 1.08), "shift": rng.normal(0, 0.03, 2),
        "background": tuple(int(c) for c in rng.integers(40, 220, 3)), "light": rng.uniform(0.8, 1.15),
        "hat": tuple(int(c) for c in rng.integers(0, 255, 3)), "blur": rng.uniform(0, 1.5),
    }


def face_attributes(identity: dict[str, Any], view: dict[str, Any]) -> dict[str, bool]:
    """CelebA-named labels of one view (ground truth: the drawing follows them)."""
    attrs = {name: False for name in SAMPLE_ATTRIBUTES}
    attrs[identity["hair"]] = True
    attrs.update({k: identity[k] for k in ("Male", "Young", "Pale_Skin", "Mustache", "No_Beard", "Bangs")})
    attrs.update({k: view[k] for k in ("Smiling", "Wearing_Hat", "Eyeglasses")})
    return attrs


def draw_face(identity: dict[str, Any], view: dict[str, Any], rng: np.random.Generator, size: int = 64) -> Image.Image:
    """Draw one view of a person at 4x resolution and downsample (antialiased)."""
    s = size * 4
    img = Image.new("RGB", (s, s), view["background"])
    d = ImageDraw.Draw(img)
    for kind, box, colour in view.get("clutter", []):
        (d.rectangle if kind == "rect" else d.ellipse)([v * s for v in box], fill=colour)
    male, young = identity["Male"], identity["Young"]
    scale = view["scale"]
    cx = s / 2 + view["shift"][0] * s
    cy = s / 2 + view["shift"][1] * s + s * 0.04
    fw, fh = s * identity["width"] * scale, s * identity["height"] * scale
    fw_turned = fw * (1 - 0.25 * abs(view["yaw"]))  # a turned head shows a narrower face
    fx = cx + view["yaw"] * fw * 0.45  # features move towards the side the face turns to
    fy = cy + view["pitch"] * fh
    skin, hair = identity["skin"], identity["hair_rgb"]

    if not male:  # long hair falls behind the face down to the shoulders
        d.rounded_rectangle([cx - fw * 1.25, cy - fh * 1.05, cx + fw * 1.25, cy + fh * 1.1], radius=fw * 0.6, fill=hair)
    d.rectangle([cx - fw * 0.45, cy + fh * 0.7, cx + fw * 0.45, s], fill=skin)  # neck
    d.ellipse([cx - fw_turned, cy - fh, cx + fw_turned, cy + fh], fill=skin)
    if male:  # broader jaw
        d.rounded_rectangle([cx - fw_turned * 0.92, cy, cx + fw_turned * 0.92, cy + fh * 0.95], radius=fw * 0.45, fill=skin)
    if not identity["No_Beard"]:  # beard: the lower face in hair colour, the mouth left free
        d.chord([cx - fw_turned * 0.95, cy - fh * 0.2, cx + fw_turned * 0.95, cy + fh * 1.05], 20, 160, fill=hair)
    # hair cap on top, and a fringe over the forehead
    d.chord([cx - fw * 1.08, cy - fh * 1.12, cx + fw * 1.08, cy + fh * (0.1 if male else 0.3)], 180, 360, fill=hair)
    if identity["Bangs"]:
        d.rectangle([cx - fw_turned * 0.8, cy - fh * 0.8, cx + fw_turned * 0.8, cy - fh * 0.42], fill=hair)

    eye_y, eye_dx, eye_r = fy - fh * 0.12, fw_turned * identity["eye_dx"], fw * identity["eye_r"]
    for sx in (-1, 1):
        ex = fx + sx * eye_dx
        d.ellipse([ex - eye_r * 1.4, eye_y - eye_r, ex + eye_r * 1.4, eye_y + eye_r], fill=(250, 250, 250))
        d.ellipse([ex - eye_r * 0.7, eye_y - eye_r * 0.7, ex + eye_r * 0.7, eye_y + eye_r * 0.7], fill=identity["iris"])
        brow_w = fw * 0.05 if male else fw * 0.03
        d.line([ex - eye_r * 1.6, eye_y - eye_r * 2.0, ex + eye_r * 1.6, eye_y - eye_r * 2.2], fill=hair, width=int(brow_w) + 2)
        if not young:  # wrinkles under the eyes
            d.arc([ex - eye_r * 1.5, eye_y - eye_r * 0.2, ex + eye_r * 1.5, eye_y + eye_r * 2.0], 20, 160, fill=(90, 60, 50), width=3)
    if not young and not identity["Bangs"]:  # forehead lines
        for k in range(3):
            y = fy - fh * (0.45 + 0.09 * k)
            d.arc([fx - fw * 0.6, y - fh * 0.05, fx + fw * 0.6, y + fh * 0.1], 200, 340, fill=(110, 75, 60), width=3)

    nose = fh * identity["nose"]
    d.line([fx, eye_y + eye_r, fx - fw * 0.08 + view["yaw"] * fw * 0.1, eye_y + eye_r + nose, fx + fw * 0.04,
            eye_y + eye_r + nose * 1.1], fill=(120, 80, 60), width=4)
    mouth_y, mw = fy + fh * 0.48, fw_turned * identity["mouth_w"]
    lips = (170, 60, 60) if not male else (150, 75, 65)
    if view["Smiling"]:
        d.chord([fx - mw, mouth_y - fh * 0.16, fx + mw, mouth_y + fh * 0.14], 0, 180, fill=lips)
        d.chord([fx - mw * 0.8, mouth_y - fh * 0.10, fx + mw * 0.8, mouth_y + fh * 0.04], 0, 180, fill=(245, 245, 245))
    else:
        d.line([fx - mw * 0.8, mouth_y, fx + mw * 0.8, mouth_y], fill=lips, width=6)
    if identity["Mustache"]:
        tone = hair if identity["hair"] != "Blond_Hair" else (160, 120, 60)
        d.polygon([(fx - mw, mouth_y - fh * 0.04), (fx, mouth_y - fh * 0.16), (fx + mw, mouth_y - fh * 0.04),
                   (fx, mouth_y - fh * 0.08)], fill=tone)
    if view["Eyeglasses"]:
        for sx in (-1, 1):
            ex = fx + sx * eye_dx
            d.ellipse([ex - eye_r * 2.1, eye_y - eye_r * 1.8, ex + eye_r * 2.1, eye_y + eye_r * 1.8],
                      outline=identity["frame"], width=6)
        d.line([fx - eye_dx + eye_r * 2.1, eye_y, fx + eye_dx - eye_r * 2.1, eye_y], fill=identity["frame"], width=5)
    if view["Wearing_Hat"]:
        top = cy - fh * 1.45
        d.rectangle([cx - fw * 1.35, cy - fh * 0.78, cx + fw * 1.35, cy - fh * 0.66], fill=view["hat"])  # brim
        d.rounded_rectangle([cx - fw * 0.85, top, cx + fw * 0.85, cy - fh * 0.7], radius=fw * 0.2, fill=view["hat"])

    img = img.rotate(view["roll"], resample=Image.BICUBIC, fillcolor=view["background"])
    img = img.filter(ImageFilter.GaussianBlur(radius=view["blur"]))
    img = img.resize((size, size), Image.LANCZOS)
    arr = np.asarray(img, dtype=np.float32) * view["light"] + rng.normal(0, 3, (size, size, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def generate_sample_faces(root: str | Path, num_images: int = 3000, image_size: int = 64, seed: int = 0,
                          progress: bool = True, views_per_identity: int = 5, background: str = "plain") -> Path:
    """Write the sample set to ``root`` once (atomically); an existing complete set is reused.

    Images come in runs of ``views_per_identity`` views of one person; the train/val/test partition
    (80/10/10 %) splits people, not images, as CelebA's does, so probes are scored on unseen people.
    """
    root = Path(root)
    settings = {"version": _VERSION, "num_images": num_images, "image_size": image_size, "seed": seed,
                "views_per_identity": views_per_identity}
    if background not in BACKGROUNDS:
        raise ValueError(f"background must be one of {BACKGROUNDS}, got {background!r}")
    if background != "plain":
        settings["background"] = background
    marker = root / "facefd_sample.json"
    if marker.exists():
        if json.loads(marker.read_text()) == settings:
            return root
        raise FileExistsError(
            f"{root} holds a sample set made with other settings ({marker.read_text().strip()}); "
            f"remove it or choose another data.root for {settings}"
        )
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} exists and is not a facefd sample set; choose another data.root")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    try:
        (tmp / "images").mkdir()
        rng = np.random.default_rng(seed)
        rows, identity = [], None
        for i in tqdm(range(num_images), desc="drawing sample faces", disable=not progress):
            if i % views_per_identity == 0:
                identity = sample_identity(rng)
            view = sample_view(identity, rng, background)
            name = f"{i:06d}.png"
            draw_face(identity, view, rng, image_size).save(tmp / "images" / name)
            rows.append((name, face_attributes(identity, view), i // views_per_identity))
        lines = [str(num_images), " ".join(SAMPLE_ATTRIBUTES)]
        lines += [name + " " + " ".join("1" if a[k] else "-1" for k in SAMPLE_ATTRIBUTES) for name, a, _ in rows]
        (tmp / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
        (tmp / "identity_CelebA.txt").write_text("".join(f"{name} {person}\n" for name, _, person in rows))
        people = rows[-1][2] + 1 if rows else 0
        n_train, n_val = int(math.floor(people * 0.8)), int(math.floor(people * 0.1))
        part = lambda person: 0 if person < n_train else 1 if person < n_train + n_val else 2  # noqa: E731
        (tmp / "list_eval_partition.txt").write_text("".join(f"{n} {part(p)}\n" for n, _, p in rows))
        (tmp / "README.txt").write_text(
            "facefd sample set: cartoon faces drawn by facefd.data.sample_faces (a smoke-test set, not photos of "
            "people), several views of each drawn person. Labels and identities follow CelebA's file formats and "
            "are ground truth for the drawing.\n"
        )
        (tmp / "facefd_sample.json").write_text(json.dumps(settings))
        if root.exists():
            root.rmdir()  # empty, checked above
        os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root
