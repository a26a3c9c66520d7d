"""How long ``import facefd``, ``facefd --help`` and the imports of ``facefd fd`` take, against ``import torch``
and ``import lightning`` measured in the same run (fresh interpreters, best of N).

    python bench/import_time.py [--repeat 5]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time

CASES = {
    "import torch": "import torch",
    "import lightning": "import lightning.pytorch",
    "import facefd": "import facefd",
    "facefd --help": "from facefd.cli import main; main(['--help'])",
    "imports of facefd fd": "import facefd.evaluation.tasks.fd, facefd.metrics.extractors",
    "facefd train's imports": "import facefd.train",
}


def best_of(code: str, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    times = {name: best_of(code, args.repeat) for name, code in CASES.items()}
    torch_s = times["import torch"]
    print(f"{'case':28s} {'seconds':>8s} {'/ import torch':>15s}")
    for name, seconds in times.items():
        print(f"{name:28s} {seconds:8.2f} {seconds / torch_s:15.2f}")


if __name__ == "__main__":
    main()
