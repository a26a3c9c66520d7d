"""Overhead of the anonymization folder flow over a bare diffusers pipeline call, in one run.

Both generate the same number of images with the same tiny random Stable Diffusion model (built
here, as in the tests), scheduler, steps, size, batch size and prompts. The folder flow also reads
each image, finds its face, builds prompts, writes PNGs atomically and appends to the manifest.
Prints images/second of each and the ratio (target: flow >= 0.9 x bare, i.e. <= 10 % overhead).

    python bench/anonymize.py [--images 32] [--steps 10] [--size 64] [--batch 4] [--detector whole|dlib]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from tiny_sd import build_tiny_pipeline  # noqa: E402

from facefd.anonymize import Anonymizer  # noqa: E402
from facefd.anonymize.attributes import FixedAttributes  # noqa: E402
from facefd.models.faces import WholeImage  # noqa: E402
from facefd.anonymize.pipeline import TextToImage, load_pipeline  # noqa: E402
from facefd.anonymize.prompts import build_prompts  # noqa: E402

ATTRS = {"Male": 0.3, "Smiling": 0.8, "Eyeglasses": 0.1, "Wearing_Hat": 0.2, "age": 30, "ethnicity": "White"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--scheduler", default="dpmpp_sde_karras")
    ap.add_argument("--detector", choices=["whole", "dlib"], default="whole")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="facefd-bench-"))
    pipe = load_pipeline(str(build_tiny_pipeline(work / "tiny-sd")), scheduler=args.scheduler, device=args.device)
    t2i = TextToImage(pipe, steps=args.steps, size=args.size, long_prompts="truncate")
    src = work / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    if args.detector == "dlib":  # real faces, so that dlib finds one in every image (skimage's astronaut, shifted)
        from skimage import data

        photo = Image.fromarray(data.astronaut())
        for i in range(args.images):
            dx, dy = (int(v) for v in rng.integers(0, 40, 2))
            photo.crop((dx, dy, dx + 400, dy + 400)).resize((200, 200)).save(src / f"{i:04d}.png")
    else:
        for i in range(args.images):
            Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(src / f"{i:04d}.png")
    prompts = build_prompts(ATTRS)
    if args.detector == "dlib":
        from facefd.models.faces import DlibDetector

        detector = DlibDetector()
    else:
        detector = WholeImage()

    def bare() -> None:
        for start in range(0, args.images, args.batch):
            n = min(args.batch, args.images - start)
            t2i([prompts.positive] * n, [prompts.negative] * n, list(range(start, start + n)))

    def flow(k: int) -> None:
        Anonymizer(t2i, FixedAttributes(ATTRS), detector, batch_size=args.batch).run(src, work / f"out{k}", progress=False)

    bare()  # warm-up
    t_bare, t_flow = float("inf"), float("inf")
    for k in range(args.repeats):  # alternate, best of each
        t0 = time.perf_counter()
        bare()
        t_bare = min(t_bare, time.perf_counter() - t0)
        t0 = time.perf_counter()
        flow(k)
        t_flow = min(t_flow, time.perf_counter() - t0)
    done = [json.loads(line)["status"] for line in (work / "out0" / "manifest.jsonl").read_text().splitlines()]
    print(json.dumps({"images": args.images, "anonymized": done.count("anonymized"), "steps": args.steps, "size": args.size, "batch": args.batch,
                      "scheduler": type(pipe.scheduler).__name__, "detector": args.detector, "device": str(pipe.device),
                      "bare_images_per_s": args.images / t_bare, "flow_images_per_s": args.images / t_flow,
                      "ratio_flow_over_bare": t_bare / t_flow}, indent=2))


if __name__ == "__main__":
    main()
