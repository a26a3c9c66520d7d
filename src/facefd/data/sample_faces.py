"""The embedded default data set: cartoon faces drawn in code, with CelebA-named labels.

This is a smoke-test set, not photographs of people: it lets training, probes and prompt building
run with nothing downloaded, and its labels are ground truth because the drawing follows them.
Output layout (CelebA conventions): ``images/000000.png``, ``list_attr_celeba.txt`` (-1/1),
``list_eval_partition.txt`` (0 train, 1 val, 2 test), ``facefd_sample.json`` (generation settings).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from tqdm.auto import tqdm

SAMPLE_ATTRIBUTES: tuple[str, ...] = (
    "Black_Hair", "Blond_Hair", "Brown_Hair", "Eyeglasses", "Gray_Hair", "Male",
    "Mustache", "Pale_Skin", "Smiling", "Wearing_Hat", "Young",
)
_HAIR_COLOURS = {
    "Black_Hair": (25, 20, 18), "Blond_Hair": (225, 195, 110), "Brown_Hair": (105, 65, 35), "Gray_Hair": (165, 165, 160),
}
_SKIN_TONES = [(240, 210, 190), (224, 172, 135), (198, 134, 92), (160, 105, 70), (110, 70, 45)]
_PALE_SKIN = (252, 232, 222)
_VERSION = 1


def sample_attributes(rng: np.random.Generator) -> dict[str, bool]:
    """Draw one face's attributes with CelebA-like correlations (grey hair mostly when old...)."""
    male, young = rng.random() < 0.45, rng.random() < 0.7
    hair_p = np.array([0.3, 0.25, 0.35, 0.1]) if young else np.array([0.2, 0.1, 0.25, 0.45])
    hair = list(_HAIR_COLOURS)[rng.choice(4, p=hair_p / hair_p.sum())]
    attrs = {name: False for name in SAMPLE_ATTRIBUTES}
    attrs.update({
        hair: True, "Male": male, "Young": young,
        "Eyeglasses": rng.random() < 0.2, "Smiling": rng.random() < 0.5, "Wearing_Hat": rng.random() < 0.15,
        "Mustache": male and rng.random() < 0.3, "Pale_Skin": rng.random() < 0.15,
    })
    return attrs


def draw_face(attrs: dict[str, bool], rng: np.random.Generator, size: int = 64) -> Image.Image:
    """Draw a frontal cartoon face at 4x resolution and downsample (antialiased)."""
    s = size * 4
    bg = tuple(int(c) for c in rng.integers(40, 220, 3))
    img = Image.new("RGB", (s, s), bg)
    d = ImageDraw.Draw(img)
    cx, cy = s / 2 + rng.normal(0, s * 0.03), s / 2 + rng.normal(0, s * 0.03) + s * 0.04
    fw = s * rng.uniform(0.28, 0.33) * (1.08 if attrs["Male"] else 1.0)  # half width
    fh = s * rng.uniform(0.36, 0.41)
    skin = _PALE_SKIN if attrs["Pale_Skin"] else _SKIN_TONES[rng.integers(len(_SKIN_TONES))]
    skin = tuple(int(np.clip(c + rng.normal(0, 6), 0, 255)) for c in skin)
    hair = next(_HAIR_COLOURS[h] for h in _HAIR_COLOURS if attrs[h])
    hair = tuple(int(np.clip(c + rng.normal(0, 8), 0, 255)) for c in hair)

    if not attrs["Male"]:  # long hair falls behind the face down to the shoulders
        d.rounded_rectangle([cx - fw * 1.25, cy - fh * 1.05, cx + fw * 1.25, cy + fh * 1.1], radius=fw * 0.6, fill=hair)
    d.rectangle([cx - fw * 0.45, cy + fh * 0.7, cx + fw * 0.45, s], fill=skin)  # neck
    d.ellipse([cx - fw, cy - fh, cx + fw, cy + fh], fill=skin)
    if attrs["Male"]:  # broader jaw
        d.rounded_rectangle([cx - fw * 0.92, cy, cx + fw * 0.92, cy + fh * 0.95], radius=fw * 0.45, fill=skin)
    # hair cap on top
    d.chord([cx - fw * 1.08, cy - fh * 1.12, cx + fw * 1.08, cy + fh * (0.1 if attrs["Male"] else 0.3)], 180, 360, fill=hair)

    eye_y, eye_dx, eye_r = cy - fh * 0.12, fw * 0.42, fw * 0.12
    iris = tuple(int(c) for c in rng.choice([(60, 40, 20), (40, 90, 160), (60, 120, 60), (30, 30, 30)]))
    for sx in (-1, 1):
        ex = cx + sx * eye_dx
        d.ellipse([ex - eye_r * 1.4, eye_y - eye_r, ex + eye_r * 1.4, eye_y + eye_r], fill=(250, 250, 250))
        d.ellipse([ex - eye_r * 0.7, eye_y - eye_r * 0.7, ex + eye_r * 0.7, eye_y + eye_r * 0.7], fill=iris)
        brow_w = fw * 0.05 if attrs["Male"] else fw * 0.03
        d.line([ex - eye_r * 1.6, eye_y - eye_r * 2.0, ex + eye_r * 1.6, eye_y - eye_r * 2.2], fill=hair, width=int(brow_w) + 2)
        if not attrs["Young"]:  # wrinkles under the eyes and on the forehead
            d.arc([ex - eye_r * 1.5, eye_y - eye_r * 0.2, ex + eye_r * 1.5, eye_y + eye_r * 2.0], 20, 160, fill=(90, 60, 50), width=3)
    if not attrs["Young"]:
        for k in range(3):
            y = cy - fh * (0.45 + 0.09 * k)
            d.arc([cx - fw * 0.6, y - fh * 0.05, cx + fw * 0.6, y + fh * 0.1], 200, 340, fill=(110, 75, 60), width=3)

    d.line([cx, eye_y + eye_r, cx - fw * 0.08, cy + fh * 0.22, cx + fw * 0.04, cy + fh * 0.25], fill=(120, 80, 60), width=4)
    mouth_y, mw = cy + fh * 0.48, fw * 0.38
    lips = (170, 60, 60) if not attrs["Male"] else (150, 75, 65)
    if attrs["Smiling"]:
        d.chord([cx - mw, mouth_y - fh * 0.16, cx + mw, mouth_y + fh * 0.14], 0, 180, fill=lips)
        d.chord([cx - mw * 0.8, mouth_y - fh * 0.10, cx + mw * 0.8, mouth_y + fh * 0.04], 0, 180, fill=(245, 245, 245))
    else:
        d.line([cx - mw * 0.8, mouth_y, cx + mw * 0.8, mouth_y], fill=lips, width=6)
    if attrs["Mustache"]:
        d.polygon([(cx - mw, mouth_y - fh * 0.04), (cx, mouth_y - fh * 0.16), (cx + mw, mouth_y - fh * 0.04),
                   (cx, mouth_y - fh * 0.08)], fill=hair if not attrs["Blond_Hair"] else (160, 120, 60))
    if attrs["Eyeglasses"]:
        frame = tuple(int(c) for c in rng.choice([(20, 20, 20), (120, 40, 40), (40, 40, 120)]))
        for sx in (-1, 1):
            ex = cx + sx * eye_dx
            d.ellipse([ex - eye_r * 2.1, eye_y - eye_r * 1.8, ex + eye_r * 2.1, eye_y + eye_r * 1.8], outline=frame, width=6)
        d.line([cx - eye_dx + eye_r * 2.1, eye_y, cx + eye_dx - eye_r * 2.1, eye_y], fill=frame, width=5)
    if attrs["Wearing_Hat"]:
        hat = tuple(int(c) for c in rng.integers(0, 255, 3))
        top = cy - fh * 1.45
        d.rectangle([cx - fw * 1.35, cy - fh * 0.78, cx + fw * 1.35, cy - fh * 0.66], fill=hat)  # brim
        d.rounded_rectangle([cx - fw * 0.85, top, cx + fw * 0.85, cy - fh * 0.7], radius=fw * 0.2, fill=hat)

    angle = rng.normal(0, 6)
    img = img.rotate(angle, resample=Image.BICUBIC, fillcolor=bg)
    img = img.filter(ImageFilter.GaussianBlur(radius=rng.uniform(0, 1.5)))
    img = img.resize((size, size), Image.LANCZOS)
    arr = np.asarray(img, dtype=np.float32) + rng.normal(0, 3, (size, size, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def generate_sample_faces(root: str | Path, num_images: int = 3000, image_size: int = 64, seed: int = 0,
                          progress: bool = True) -> Path:
    """Write the sample set to ``root`` once (atomically); an existing complete set is reused."""
    root = Path(root)
    settings = {"version": _VERSION, "num_images": num_images, "image_size": image_size, "seed": seed}
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
        rows = []
        for i in tqdm(range(num_images), desc="drawing sample faces", disable=not progress):
            attrs = sample_attributes(rng)
            name = f"{i:06d}.png"
            draw_face(attrs, rng, image_size).save(tmp / "images" / name)
            rows.append((name, attrs))
        lines = [str(num_images), " ".join(SAMPLE_ATTRIBUTES)]
        lines += [name + " " + " ".join("1" if a[k] else "-1" for k in SAMPLE_ATTRIBUTES) for name, a in rows]
        (tmp / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
        n_train, n_val = int(math.floor(num_images * 0.8)), int(math.floor(num_images * 0.1))
        parts = [0] * n_train + [1] * n_val + [2] * (num_images - n_train - n_val)
        (tmp / "list_eval_partition.txt").write_text("".join(f"{n} {p}\n" for (n, _), p in zip(rows, parts)))
        (tmp / "README.txt").write_text(
            "facefd sample set: cartoon faces drawn by facefd.data.sample_faces (a smoke-test set, not photos of "
            "people). Labels follow CelebA's file format and are ground truth for the drawing.\n"
        )
        (tmp / "facefd_sample.json").write_text(json.dumps(settings))
        if root.exists():
            root.rmdir()  # empty, checked above
        os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root
