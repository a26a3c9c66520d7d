"""Does the default DINO preset learn? Run ``train.py`` for several seeds and compare each run's
exported features with its own initial network (BN recalibrated), both measured in the same run.

    python bench/learning.py                   # the default run, seeds 0 1 2
    python bench/learning.py -- backbone=resnet18   # the same recipe on the ResNet-18
    python bench/learning.py --seeds 5 -- trainer.max_epochs=30   # any train.py overrides after --

Prints one row per seed (initial -> final k-NN AUROC, balanced accuracy and accuracy, the linear probe's
AUROC on the same features, wall time) and mean +- std of the gains, so a change to the preset is judged on
more than one run.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCORES = ("auroc", "bacc", "acc", "linear_auroc")


def run_seed(seed: int, out_dir: Path, overrides: list[str]) -> dict:
    """One ``train.py`` run; its learning_curve.json with the wall time added."""
    run_dir = out_dir / f"seed_{seed}"
    cmd = [sys.executable, str(ROOT / "train.py"), f"seed={seed}", f"hydra.run.dir={run_dir}",
           "callbacks.rich_progress_bar=null", *overrides]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"seed {seed} failed ({' '.join(cmd)}):\n{proc.stderr[-3000:]}")
    curve = json.loads(next(run_dir.rglob("learning_curve.json")).read_text())
    curve["wall_s"] = wall
    curve["collapse_warning"] = "may have collapsed" in proc.stdout + proc.stderr
    return curve


def ends(curve: dict) -> tuple[dict, dict]:
    epochs = {e["epoch"]: e for e in curve["epochs"]}
    return epochs[curve["initial_epoch"]], epochs[max(epochs)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (0, 1, ...)")
    parser.add_argument("--out", type=Path, default=None, help="run folders (default: a temporary folder)")
    parser.add_argument("overrides", nargs="*", help="train.py overrides (after --)")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="facefd-learning-"))
    print(f"train.py {' '.join(args.overrides) or '(default preset)'}; runs in {out}")
    print("seed | initial auroc | final auroc | gain | initial bacc | final bacc | initial acc | final acc | "
          "majority acc | initial linear auroc | final linear auroc | final loss | collapse warning | wall (s)")
    gains: dict[str, list[float]] = {s: [] for s in SCORES}
    for seed in range(args.seeds):
        curve = run_seed(seed, out, args.overrides)
        first, last = ends(curve)
        for s in SCORES:
            gains[s].append(100 * (last.get(s, float("nan")) - first.get(s, float("nan"))))
        print(f"{seed} | {first['auroc']:.4f} | {last['auroc']:.4f} | {gains['auroc'][-1]:+.1f} | {first['bacc']:.4f} | "
              f"{last['bacc']:.4f} | {first['acc']:.4f} | {last['acc']:.4f} | {curve['majority_acc']:.4f} | "
              f"{first.get('linear_auroc', float('nan')):.4f} | {last.get('linear_auroc', float('nan')):.4f} | "
              f"{last.get('loss', float('nan')):.3f} | {'yes' if curve['collapse_warning'] else 'no'} | "
              f"{curve['wall_s']:.0f}", flush=True)
    for s in SCORES:
        values = gains[s]
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"gain in {s} (points, final - initial): mean {statistics.mean(values):+.2f} +- {std:.2f} "
              f"over {len(values)} seeds; min {min(values):+.2f}")


if __name__ == "__main__":
    main()
