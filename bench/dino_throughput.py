"""End-to-end DINO training throughput: train.py's real data path (a folder of JPEGs through
FaceImageDataModule, DataLoader workers and MultiCropAugmentation into DINOModule under Lightning)
against the model-only step on crops of the same shapes already on the device (bench/dino_step.py's
Lightning loop). Prints images/s of both and the ratio end-to-end / model-only (target on a GPU >= 0.95:
the data path must keep the accelerator fed).

    python bench/dino_throughput.py                                       # CPU-sized
    python bench/dino_throughput.py --device cuda --backbone resnet50 --batch 64 --global-size 224 \
        --local-size 96 --local-crops 8 --out-dim 65536 --precision bf16 --workers 14 --images 2048
    # ... the same with the crops made on the GPU (and JPEGs decoded there):
    #     --augment-device cuda --decode device
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dino_step import StepTimer, add_step_arguments, bench_module, bench_trainer, lightning_loop, make_crops, sync  # noqa: E402,E501
from multicrop import make_jpegs  # noqa: E402

from facefd.data import FaceImageDataModule, MultiCropAugmentation  # noqa: E402


class GlobalStepTimer(StepTimer):
    """Starts at optimizer step ``warmup`` whatever the epoch (a small folder spans several epochs)."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.warmup and not self.t0:
            sync(self.device)
            self.t0 = time.perf_counter()


def end_to_end(args, device, folder: Path) -> float:
    module = bench_module(args)
    data = FaceImageDataModule(
        root=str(folder), batch_size=args.batch, num_workers=args.workers, val_fraction=0.0, test_fraction=0.0,
        check_images=False, train_transform=MultiCropAugmentation(
            local_crops_number=args.local_crops, global_crop_size=args.global_size, local_crop_size=args.local_size,
            device=args.augment_device, decode=args.decode))
    timer = GlobalStepTimer(args.warmup, device)
    trainer = bench_trainer(args, device, timer, max_epochs=1000, limit_val_batches=0,
                            use_distributed_sampler=False)
    trainer.fit(module, datamodule=data)
    return args.steps * args.batch / (timer.t1 - timer.t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_step_arguments(p)
    p.add_argument("--images", type=int, default=256, help="JPEGs in the folder (drawn faces)")
    p.add_argument("--source-size", type=int, default=256, help="side of the JPEGs")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--augment-device", default="loader", choices=("loader", "cpu", "cuda", "accelerator"),
                   help="where the multi-crop runs (data.train_transform.device): PIL in the workers, or batched")
    p.add_argument("--decode", default="loader", choices=("loader", "device"),
                   help="device: JPEGs decoded on the training device (needs a batched --augment-device)")
    args = p.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        make_jpegs(Path(tmp), args.images, args.source_size)
        drawn = time.perf_counter() - t0
        e2e = end_to_end(args, device, Path(tmp))
        model_only = lightning_loop(args, device, make_crops(args, device))
    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "config": vars(args), "end_to_end_img_per_s": e2e, "model_only_img_per_s": model_only,
              "ratio_end_to_end_over_model_only": e2e / model_only, "jpeg_folder_drawn_s": drawn}
    print(f"multi-crop: {args.augment_device}, decode: {args.decode}")
    print(f"end to end (JPEG folder -> DataModule -> DINOModule): {e2e:9.1f} img/s")
    print(f"model only (crops on the device)                    : {model_only:9.1f} img/s")
    print(f"ratio (GPU target >= 0.95)                          : {e2e / model_only:.3f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
