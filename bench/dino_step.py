"""Images/second of a DINO training step: facefd's DINOModule under a Lightning Trainer vs a plain
PyTorch loop written from the reference recipe (main_dino.py's train_one_epoch), in one process,
with the same backbone, head, batch and crops. Data loading is excluded from both: each step
reuses one batch of crops already on the device. Prints both rates and their ratio (target >= 1.0).

    python bench/dino_step.py                       # CPU-sized default
    python bench/dino_step.py --device cuda --backbone resnet50 --batch 64 --global-size 224 \
        --local-size 96 --local-crops 8 --out-dim 65536 --precision bf16
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import time
from contextlib import nullcontext

import lightning.pytorch as pl
import numpy as np
import timm
import torch
from torch.utils.data import DataLoader, IterableDataset

from facefd.models.dino import DINOHead, DINOLoss, DINOModule, cosine_schedule
from facefd.models.optim import clip_gradients_per_parameter, regularization_groups


def make_crops(args, device) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    sizes = [args.global_size] * 2 + [args.local_size] * args.local_crops
    return [torch.randn(args.batch, 3, s, s, generator=g).to(device) for s in sizes]


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def plain_loop(args, device, crops) -> float:
    """The reference loop, step by step: schedules, forward, loss, backward, clip, step, EMA."""
    torch.manual_seed(0)
    factory = functools.partial(timm.create_model, model_name=args.backbone, pretrained=False, num_classes=0)
    head_kw = dict(out_dim=args.out_dim)

    def build():
        bb = factory()
        return torch.nn.ModuleDict({"backbone": bb, "head": DINOHead(bb.num_features, **head_kw)}).to(device)

    student, teacher = build(), build()
    teacher.load_state_dict(student.state_dict())
    teacher.requires_grad_(False)
    loss_fn = DINOLoss(args.out_dim, 2 + args.local_crops, 0.04, 0.04, 0, 100).to(device)
    opt = torch.optim.AdamW(regularization_groups([student]), lr=5e-4, weight_decay=0.04)
    total = args.warmup + args.steps
    lr_s = cosine_schedule(5e-4 * args.batch / 256, 1e-6, 1, total, warmup_epochs=0)
    wd_s = cosine_schedule(0.04, 0.4, 1, total)
    m_s = cosine_schedule(0.996, 1.0, 1, total)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if args.precision == "bf16" else nullcontext())

    def forward(model, views):
        sizes = torch.tensor([v.shape[-1] for v in views])
        ends = torch.cumsum(torch.unique_consecutive(sizes, return_counts=True)[1], 0).tolist()
        start, feats = 0, []
        for end in ends:
            feats.append(model["backbone"](torch.cat(views[start:end])))
            start = end
        return model["head"](torch.cat(feats))

    student.train(), teacher.train()
    t0 = 0.0
    for it in range(total):
        if it == args.warmup:
            sync(device)
            t0 = time.perf_counter()
        for i, group in enumerate(opt.param_groups):
            group["lr"] = lr_s[it]
            if i == 0:
                group["weight_decay"] = wd_s[it]
        with autocast:
            teacher_out = forward(teacher, crops[:2])
            student_out = forward(student, crops)
            loss = loss_fn(student_out, teacher_out, 0)
        if not math.isfinite(loss.item()):
            raise RuntimeError("loss is not finite")
        opt.zero_grad()
        loss.backward()
        clip_gradients_per_parameter(student.parameters(), 3.0)
        opt.step()
        with torch.no_grad():
            m = m_s[it]
            for ps, pt in zip(student.parameters(), teacher.parameters()):
                pt.mul_(m).add_((1 - m) * ps.detach())
    sync(device)
    return args.steps * args.batch / (time.perf_counter() - t0)


class RepeatBatch(IterableDataset):
    def __init__(self, crops, n):
        self.crops, self.n = crops, n

    def __iter__(self):
        for _ in range(self.n):
            yield {"crops": self.crops}


class StepTimer(pl.Callback):
    def __init__(self, warmup: int, device) -> None:
        self.warmup, self.device, self.t0, self.t1 = warmup, device, 0.0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.warmup:
            sync(self.device)
            self.t0 = time.perf_counter()

    def on_train_end(self, trainer, pl_module):
        sync(self.device)
        self.t1 = time.perf_counter()


def bench_module(args) -> DINOModule:
    """The DINOModule both benches time (seeded, no warm-up epochs, nothing frozen)."""
    torch.manual_seed(0)
    return DINOModule(
        backbone=functools.partial(timm.create_model, model_name=args.backbone, pretrained=False, num_classes=0),
        optimizer=functools.partial(torch.optim.AdamW, lr=5e-4, weight_decay=0.04),
        head=dict(out_dim=args.out_dim), local_crops_number=args.local_crops, batch_size=args.batch,
        warmup_epochs=0, freeze_last_layer=0, input_size=args.global_size,
    )


def bench_trainer(args, device, timer: pl.Callback, **kwargs) -> pl.Trainer:
    """A quiet Trainer for ``warmup + steps`` optimizer steps with ``timer`` attached."""
    return pl.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu", devices=1, max_steps=args.warmup + args.steps,
        precision="bf16-mixed" if args.precision == "bf16" else "32-true", logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[timer],
        log_every_n_steps=50, num_sanity_val_steps=0, **kwargs,
    )


def lightning_loop(args, device, crops) -> float:
    module = bench_module(args)
    total = args.warmup + args.steps
    timer = StepTimer(args.warmup, device)
    trainer = bench_trainer(args, device, timer, max_epochs=1)
    trainer.fit(module, DataLoader(RepeatBatch(crops, total), batch_size=None))
    return args.steps * args.batch / (timer.t1 - timer.t0)


def add_step_arguments(p: argparse.ArgumentParser) -> None:
    """The model and crop settings shared with bench/dino_throughput.py."""
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--global-size", type=int, default=64)
    p.add_argument("--local-size", type=int, default=32)
    p.add_argument("--local-crops", type=int, default=4)
    p.add_argument("--out-dim", type=int, default=4096)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", choices=["32", "bf16"], default="32")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_step_arguments(p)
    p.add_argument("--repeats", type=int, default=2, help="alternate the two loops this many times; best of each")
    args = p.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    crops = make_crops(args, device)
    plain, light = [], []
    for _ in range(args.repeats):
        plain.append(plain_loop(args, device, crops))
        light.append(lightning_loop(args, device, crops))
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "config": vars(args), "plain_img_per_s": max(plain), "lightning_img_per_s": max(light),
        "ratio_lightning_over_plain": max(light) / max(plain),
        "runs": {"plain": plain, "lightning": light},
    }
    print(f"plain PyTorch loop : {max(plain):9.1f} img/s")
    print(f"facefd DINOModule  : {max(light):9.1f} img/s")
    print(f"ratio (target >= 1): {result['ratio_lightning_over_plain']:.3f}")
    print(json.dumps(result))


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
