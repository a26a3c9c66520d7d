"""Mutation score of the core numerics: mutmut puts one plausible bug at a time into a module (a changed
constant, operator, comparison, argument...) and runs that module's own tests; a mutant the tests let
through "survived". Prints the score per module and the surviving mutants (``mutmut show NAME`` in the
printed work folder shows each diff).

    python bench/mutation.py                                 # every module below (hours on 2 cores)
    python bench/mutation.py metrics/frechet.py models/dino/schedules.py

Each module runs in a scratch copy of the repository (src, tests, conf), so the checkout is never
touched; mutmut's fork server keeps torch fork-safe. Mutation runs belong here, not in CI.
"""
from __future__ import annotations

import argparse
import ast
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: module under src/facefd -> the tests that claim to cover it
CORE: dict[str, list[str]] = {
    "metrics/frechet.py": ["tests/unit/metrics/test_frechet_formula.py"],
    "metrics/kernels.py": ["tests/unit/metrics/test_sample_metrics.py", "tests/unit/metrics/test_cmmd.py",
                           "tests/unit/metrics/test_kernel_scores.py"],
    "metrics/mmd.py": ["tests/unit/metrics/test_cmmd.py"],
    "metrics/reservoir.py": ["tests/unit/metrics/test_sample_metrics.py"],
    "metrics/frechet_metric.py": ["tests/unit/metrics/test_frechet_metric.py", "tests/unit/metrics/test_sample_metrics.py",
                                  "tests/unit/metrics/test_torchmetrics_names.py", "tests/unit/metrics/test_metric_in_module.py"],
    "models/dino/loss.py": ["tests/unit/models/test_dino_loss.py", "tests/unit/models/test_sinkhorn.py"],
    "models/dino/head.py": ["tests/unit/models/test_dino_head.py"],
    "models/dino/schedules.py": ["tests/unit/models/test_schedules_and_optim.py"],
    "models/dino/koleo.py": ["tests/unit/models/test_koleo.py"],
    "models/dino/collapse.py": ["tests/unit/models/test_collapse.py"],
    "models/optim.py": ["tests/unit/models/test_schedules_and_optim.py", "tests/unit/models/test_dino_module.py"],
    "models/probe/knn.py": ["tests/unit/callbacks/test_knn_probe.py", "tests/unit/evaluation/test_evaluation_suite.py"],
    "models/probe/logistic.py": ["tests/unit/models/test_logistic_probe.py"],
    "models/probe/heads.py": ["tests/unit/models/test_probe_heads.py"],
    # the training-and-resume test (7 s a mutant) is left out: the crop and colour numerics are the core here
    "data/batched_multicrop.py": ["tests/unit/data/test_batched_multicrop.py", "-k", "not trains_and_resumes"],
    "anonymize/prompts.py": ["tests/unit/anonymize/test_prompts.py"],
    "anonymize/anonymizer.py": ["tests/unit/anonymize/test_resume.py", "tests/unit/anonymize/test_manifest_is_data.py"],
    "data/manifest.py": ["tests/unit/data/test_manifest.py", "tests/unit/anonymize/test_manifest_is_data.py"],
    "models/dino/module.py": ["tests/unit/models/test_dino_module.py", "tests/unit/models/test_collapse.py",
                              "tests/unit/models/test_koleo.py", "tests/unit/models/test_pretrained_start.py"],
}

#: functions left unmutated in the scratch copy (``# pragma: no mutate block`` on their header there): mutmut
#: replaces a mutated function with a trampoline of ``*args, **kwargs``, and Lightning's save_hyperparameters
#: reads the arguments of the LightningModule's own ``__init__``
UNMUTATED: dict[str, list[str]] = {
    "models/dino/module.py": ["DINOModule.__init__"],
}

#: modules scored on some of their functions only (``Class.method`` for methods): the rest has other tests
FUNCTIONS: dict[str, list[str]] = {
    "anonymize/anonymizer.py": ["seed_for", "save_clean", "output_intact", "Anonymizer._finished",
                                "Anonymizer._check_output_names"],  # resume
}
SUMMARY = re.compile(r"^\s*(\S+): (\w[\w ]*)$")


def leave_unmutated(path: Path, functions: list[str]) -> None:
    """Put mutmut's ``# pragma: no mutate block`` on the header line of each ``Class.method`` or function."""
    lines = path.read_text().splitlines()
    tree = ast.parse("\n".join(lines))
    wanted = set(functions)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)  # a statement list, or an expression (lambda, if-expression)
        for child in body if isinstance(body, list) else []:
            if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            name = f"{node.name}.{child.name}" if isinstance(node, ast.ClassDef) else child.name
            if name in wanted:
                wanted.discard(name)
                colon = child.body[0].lineno - 2  # the header ends on the line before the body (0-based)
                while not lines[colon].rstrip().endswith(":"):
                    colon -= 1
                lines[colon] += "  # pragma: no mutate block"
    if wanted:
        raise SystemExit(f"error: {path}: no function named {', '.join(sorted(wanted))}")
    path.write_text("\n".join(lines) + "\n")


def scratch_copy(module: str, tests: list[str]) -> Path:
    """A copy of src, tests and conf with a setup.cfg that points mutmut at one module and its tests."""
    work = Path(tempfile.mkdtemp(prefix="facefd-mutation-"))
    for name in ("src", "tests", "conf"):
        shutil.copytree(ROOT / name, work / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "train.py", "evaluate.py", "anonymize.py"):  # tests launch the entry scripts
        shutil.copy(ROOT / name, work / name)
    if module in UNMUTATED:
        leave_unmutated(work / "src" / "facefd" / module, UNMUTATED[module])
    def listing(values: list[str]) -> str:  # setup.cfg lists: one value per indented line
        return "".join(f"\n    {v}" for v in values)

    (work / "setup.cfg").write_text("\n".join([
        "[mutmut]", "source_paths = src", f"only_mutate = src/facefd/{module}",
        f"pytest_add_cli_args_test_selection ={listing(tests)}",
        f"pytest_add_cli_args ={listing(['-p', 'no:cacheprovider', '-q'])}",
        f"also_copy ={listing(['conf', 'train.py', 'evaluate.py', 'anonymize.py'])}",  # mutmut runs tests in mutants/
        "process_isolation = forkserver", ""]))
    return work


def mutant_patterns(module: str) -> list[str]:
    """mutmut's names of the mutants of the functions listed in ``FUNCTIONS`` (all of the module's if none)."""
    dotted = "facefd." + module.removesuffix(".py").replace("/", ".")
    names = []
    for function in FUNCTIONS.get(module, []):
        cls, _, method = function.rpartition(".")
        names.append(f"{dotted}.x\u01c1{cls}\u01c1{method}__mutmut_*" if cls else f"{dotted}.x_{function}__mutmut_*")
    return names


def run_module(module: str, tests: list[str]) -> tuple[dict[str, str], Path]:
    """``{mutant: status}`` of one module (or of its functions in ``FUNCTIONS``), and its work folder."""
    work = scratch_copy(module, tests)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, "-m", "mutmut", "run", *mutant_patterns(module)], cwd=work, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"], cwd=work, env=env,
                         capture_output=True, text=True).stdout
    return {m.group(1): m.group(2) for m in map(SUMMARY.match, out.splitlines()) if m}, work


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modules", nargs="*", help=f"modules under src/facefd (default: all {len(CORE)})")
    parser.add_argument("--show", type=int, default=50, help="surviving mutants listed per module")
    args = parser.parse_args()
    modules = args.modules or list(CORE)
    unknown = [m for m in modules if m not in CORE]
    if unknown:
        raise SystemExit(f"error: no tests listed for {unknown}; known: {', '.join(CORE)}")
    rows = []
    for module in modules:
        statuses, work = run_module(module, CORE[module])
        killed = sum(s in ("killed", "timeout") for s in statuses.values())
        survived = sorted(m for m, s in statuses.items() if s == "survived")
        tested = killed + len(survived)
        score = 100.0 * killed / tested if tested else float("nan")
        rows.append((module, tested, killed, score))
        print(f"{module}: {killed}/{tested} killed ({score:.1f} %), {len(statuses) - tested} not run; work folder {work}",
              flush=True)
        for name in survived[:args.show]:
            print(f"    survived: {name}")
    print("\n| module | mutants | killed | score |\n|---|---|---|---|")
    for module, tested, killed, score in rows:
        print(f"| {module} | {tested} | {killed} | {score:.1f} % |")


if __name__ == "__main__":
    main()
