"""Runs several tests share: entry scripts in a subprocess or in this process, labelled sample folders, a tiny
DINO module."""
from __future__ import annotations

import contextlib
import csv
import functools
import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import timm
import torch
from torch.utils.data import DataLoader

from conftest import ROOT
from facefd.data.attributes import read_attribute_table
from facefd.models.dino import DINOModule


def run_script(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "FACEFD_ROOT": str(cwd), "PYTHONPATH": str(ROOT / "tests" / "support")}
    return subprocess.run([sys.executable, str(ROOT / args[0]), *args[1:]], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def run_inprocess(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``run_script``'s command line run in this process: the entry script itself runs as ``__main__``
    (its Hydra job, configs and error reporting), and the exit status, stdout and stderr come back as a
    launch gives them (an uncaught exception: its traceback and status 1), without a new interpreter's
    seconds of imports. One real launch per entry point stays with ``run_script``."""
    import runpy
    import traceback

    from hydra.core.global_hydra import GlobalHydra

    out, err = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    saved_logging = (list(root.handlers), root.level)
    saved = (os.getcwd(), list(sys.argv), os.environ.get("FACEFD_ROOT"))
    code = 0
    os.chdir(cwd)
    os.environ["FACEFD_ROOT"] = str(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            sys.argv[:] = [str(ROOT / args[0]), *args[1:]]
            try:
                runpy.run_path(str(ROOT / args[0]), run_name="__main__")
            except SystemExit as exc:  # a user error (exit 1) or Hydra's report of a crash
                code = exc.code if isinstance(exc.code, int) else 1
            except Exception:  # HYDRA_FULL_ERROR=1: the exception itself, as the interpreter reports it
                traceback.print_exc()
                code = 1
    finally:
        os.chdir(saved[0])
        sys.argv[:] = saved[1]
        if saved[2] is None:
            os.environ.pop("FACEFD_ROOT", None)
        else:
            os.environ["FACEFD_ROOT"] = saved[2]
        for handler in root.handlers:
            if handler not in saved_logging[0]:
                handler.close()
        root.handlers[:], root.level = saved_logging
        GlobalHydra.instance().clear()
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def independent_folder(tmp_path: Path) -> Path:
    """Another drawn set, labelled only for Male (the paper's separately collected gender test set)."""
    from facefd.data.sample_faces import generate_sample_faces

    root = generate_sample_faces(tmp_path / "independent", num_images=40, image_size=32, seed=7, progress=False)
    table = read_attribute_table(root / "list_attr_celeba.txt")
    male = table.values[:, table.names.index("Male")]
    lines = [str(len(table.keys)), "Male"] + [f"{k} {1 if v else -1}" for k, v in zip(table.keys, male)]
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    return root


def write_hair_groups(root: Path) -> Path:
    """A FairFace-style CSV with one categorical column: the hair colour of each sample face."""
    table = read_attribute_table(root / "list_attr_celeba.txt")
    colours = ["Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair"]
    path = root.parent / f"{root.name}_groups.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "hair"])
        for key, row in zip(table.keys, table.values):
            writer.writerow([key, next(c for c in colours if row[table.names.index(c)] == 1)])
    return path


def crops_loader(n_batches: int, batch: int = 4) -> DataLoader:
    g = torch.Generator().manual_seed(1)
    items = [{"crops": [torch.randn(3, 32, 32, generator=g), torch.randn(3, 32, 32, generator=g),
                        torch.randn(3, 16, 16, generator=g), torch.randn(3, 16, 16, generator=g)]}
             for _ in range(n_batches * batch)]
    return DataLoader(items, batch_size=batch)


def tiny_module(**kw) -> DINOModule:
    torch.manual_seed(0)
    defaults = dict(
        backbone=functools.partial(timm.create_model, model_name="test_resnet", pretrained=False, num_classes=0),
        optimizer=functools.partial(torch.optim.AdamW, lr=5e-3, weight_decay=0.04),
        head=dict(out_dim=64, hidden_dim=32, bottleneck_dim=16),
        local_crops_number=2, batch_size=4, warmup_epochs=0, input_size=32,
    )
    defaults.update(kw)
    return DINOModule(**defaults)
