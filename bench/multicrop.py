"""Milliseconds per image of DINO's multi-crop data path on the CPU: facefd's dataset item (decode,
per-(seed, epoch, index) seeding, MultiCropAugmentation) against the reference pipeline written here
from main_dino.py's DataAugmentationDINO (PIL open + the same torchvision ops on the global RNG, seeded
with the same per-image seeds so both draw the same crops and do the same work).
Same JPEG files, same crop sizes, one process. Prints both and the ratio reference / facefd (target >= 1.0).
Also times the batched tensor path (``data.train_transform.device=cpu``: parameters drawn per item, crops
rendered per batch with tensor ops) on the same files, as ms per image including its item step.

    python bench/multicrop.py                                  # paper sizes: 2 x 224 + 8 x 96 from 320 px JPEGs
    python bench/multicrop.py --images 64 --source-size 512
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image, ImageFilter

from facefd.data import MultiCropAugmentation
from facefd.data.dataset import FaceImageDataset, sample_seed


class ReferenceBlur:
    def __init__(self, p: float, lo: float = 0.1, hi: float = 2.0) -> None:
        self.p, self.lo, self.hi = p, lo, hi

    def __call__(self, img):
        if random.random() > self.p:
            return img
        return img.filter(ImageFilter.GaussianBlur(radius=random.uniform(self.lo, self.hi)))


class ReferenceDINOAugmentation:
    """DataAugmentationDINO as main_dino.py writes it."""

    def __init__(self, global_size: int, local_size: int, local_crops: int) -> None:
        flip_and_color_jitter = T.Compose([
            T.RandomHorizontalFlip(p=0.5),
            T.RandomApply([T.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1)], p=0.8),
            T.RandomGrayscale(p=0.2),
        ])
        normalize = T.Compose([T.ToTensor(), T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
        bicubic = T.InterpolationMode.BICUBIC
        self.global1 = T.Compose([T.RandomResizedCrop(global_size, scale=(0.4, 1.0), interpolation=bicubic),
                                  flip_and_color_jitter, ReferenceBlur(1.0), normalize])
        self.global2 = T.Compose([T.RandomResizedCrop(global_size, scale=(0.4, 1.0), interpolation=bicubic),
                                  flip_and_color_jitter, ReferenceBlur(0.1), T.RandomSolarize(128, p=0.2), normalize])
        self.local = T.Compose([T.RandomResizedCrop(local_size, scale=(0.05, 0.4), interpolation=bicubic),
                                flip_and_color_jitter, ReferenceBlur(0.5), normalize])
        self.local_crops = local_crops

    def __call__(self, image):
        return [self.global1(image), self.global2(image)] + [self.local(image) for _ in range(self.local_crops)]


def make_jpegs(folder: Path, n: int, size: int) -> list[Path]:
    from facefd.data.sample_faces import draw_face, sample_identity, sample_view

    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        person = sample_identity(rng)
        img = draw_face(person, sample_view(person, rng, "clutter"), rng, size=size)
        path = folder / f"{i:04d}.jpg"
        img.save(path, quality=92)
        paths.append(path)
    return paths


def time_per_image(fn, n: int, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(n):
            fn(i)
        out.append((time.perf_counter() - t0) / n * 1000)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--source-size", type=int, default=320)
    ap.add_argument("--global-size", type=int, default=224)
    ap.add_argument("--local-size", type=int, default=96)
    ap.add_argument("--local-crops", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (a data worker uses 1)")
    ap.add_argument("--batch", type=int, default=32, help="images per rendered batch (batched path)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_jpegs(Path(tmp), args.images, args.source_size)
        ours = FaceImageDataset(paths, MultiCropAugmentation(local_crops_number=args.local_crops,
                                                             global_crop_size=args.global_size,
                                                             local_crop_size=args.local_size))
        reference = ReferenceDINOAugmentation(args.global_size, args.local_size, args.local_crops)

        def ref_item(i: int):
            # the same random draws as facefd's item (so both do the same work); seeding the global RNGs
            # is all the reference does, without facefd's save/restore of the caller's RNG state
            s = sample_seed(0, 0, i)
            torch.manual_seed(s)
            random.seed(s)
            with Image.open(paths[i]) as img:
                return reference(img.convert("RGB"))

        batched_aug = MultiCropAugmentation(local_crops_number=args.local_crops, global_crop_size=args.global_size,
                                            local_crop_size=args.local_size, device="cpu")
        batched = FaceImageDataset(paths, batched_aug)

        def batched_ms() -> float:
            t0 = time.perf_counter()
            for start in range(0, args.images, args.batch):
                items = [batched[(i, 0)] for i in range(start, min(start + args.batch, args.images))]
                batched_aug.batched.render(batched_aug.batched.collate(items), torch.device("cpu"))
            return (time.perf_counter() - t0) / args.images * 1000

        time_per_image(lambda i: ours[(i, 0)], min(8, args.images), 1)  # warm-up
        batched_ms()
        ours_ms = time_per_image(lambda i: ours[(i, 0)], args.images, args.repeats)
        ref_ms = time_per_image(ref_item, args.images, args.repeats)
        batched_runs = [batched_ms() for _ in range(args.repeats)]
    best_ours, best_ref = min(ours_ms), min(ref_ms)
    result = {"images": args.images, "crops": f"2x{args.global_size} + {args.local_crops}x{args.local_size}",
              "source_size": args.source_size, "facefd_ms_per_image": round(best_ours, 2),
              "reference_ms_per_image": round(best_ref, 2), "ratio_reference_over_facefd": round(best_ref / best_ours, 3),
              "facefd_runs_ms": [round(v, 2) for v in ours_ms], "reference_runs_ms": [round(v, 2) for v in ref_ms],
              "spread_facefd": round(statistics.pstdev(ours_ms), 2),
              "batched_cpu_ms_per_image": round(min(batched_runs), 2),
              "ratio_reference_over_batched_cpu": round(best_ref / min(batched_runs), 3),
              "batched_runs_ms": [round(v, 2) for v in batched_runs], "threads": args.threads, "batch": args.batch}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
