"""The installed ``facefd`` command (also ``python -m facefd``): the three Hydra apps with the configs
shipped in the package, and ``facefd fd A B``, the folder-to-folder one-liner every peer tool has."""
from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path
from typing import Callable, Optional, Sequence

USAGE = """usage: facefd {train,evaluate,anonymize} [hydra overrides]   (same as train.py / evaluate.py / anonymize.py)
       facefd fd A B [--extractor NAME@FILE] [--batch-size N] [--device cuda] [--devices N] [--num-samples N]
                     [--save-stats OUT.npz]
       facefd fd A --save-stats OUT.npz [--extractor NAME@FILE] [--format facefd|pytorch-fid]
       facefd fid [--batch-size N] [--device D] [--dims 64|192|768|2048] [--num-workers N] [--save-stats]
                  [--weights inception=FILE] path1 path2      (python -m pytorch_fid's command line)
       facefd score A B [--metrics fid,fdd,fd_inf,kid,prdc,authpct,is] [--ci 0.95] [--json OUT.json]
                    [--num-samples N] [--devices N] [--weights inception=FILE]   (every score, one extraction per folder)
Outputs go to ./outputs (the current folder, or FACEFD_ROOT)."""

APPS = {"train": ("train", "facefd.train"), "evaluate": ("evaluate", "facefd.evaluation"),
        "anonymize": ("anonymize", "facefd.anonymize")}


def config_dir() -> Path:
    """The Hydra configs: ``facefd/conf`` in an installed package (the wheel carries the repo's ``conf/``),
    else the checkout's ``conf/``."""
    packaged = Path(str(resources.files("facefd"))) / "conf"
    if (packaged / "train.yaml").exists():
        return packaged
    checkout = Path(__file__).resolve().parents[2] / "conf"
    if (checkout / "train.yaml").exists():
        return checkout
    raise FileNotFoundError(f"facefd's configs are missing (looked in {packaged} and {checkout}): reinstall facefd")


def run_app(name: str, argv: Sequence[str]) -> None:
    """Run one Hydra app as its script would, with ``argv`` as its command line (``-m``, ``--cfg job``...)."""
    import importlib

    import hydra

    import facefd.utils.hydra  # noqa: F401  (registers resolvers)
    from facefd.utils.entry import report_user_errors

    config_name, module = APPS[name]
    run: Callable = importlib.import_module(module).run
    sys.argv = [f"facefd-{name}", *argv]
    hydra.main(version_base="1.3", config_path=str(config_dir()), config_name=config_name)(report_user_errors(run))()


def fd_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="facefd fd", description="Fréchet distance between two image folders or "
                                "statistics files (.npz), printed like python -m pytorch_fid.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="two folders / .npz files (one folder with --save-stats)")
    p.add_argument("--extractor", default="fdd@extractor/extractor.safetensors",
                   help="fdd@EXTRACTOR (default: ./extractor/extractor.safetensors), fid (the standard weights, fetched "
                        "and hash-checked) or fid@FILE, timm:NAME@WEIGHTS, random:NAME")
    p.add_argument("--metric", default=None, help="deprecated name of --extractor")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--num-workers", type=int, default=None,
                   help="data loader workers (default: 0 on the CPU, where workers take cores from the model; 2 on a GPU)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:1")
    p.add_argument("--num-samples", type=int, default=None, help="a seeded sample of at most N images per folder")
    p.add_argument("--seed", type=int, default=0, help="the sample's seed")
    p.add_argument("--devices", type=int, default=1, help="extract features in N processes (GPUs, or CPU processes "
                   "with --device cpu) through Lightning")
    p.add_argument("--save-stats", metavar="OUT.npz", default=None,
                   help="also write the first folder's statistics to OUT.npz (then B is optional)")
    p.add_argument("--format", choices=("facefd", "pytorch-fid"), default="facefd",
                   help="--save-stats file format: facefd (mean/cov) or pytorch-fid / clean-fid (mu/sigma)")
    p.add_argument("--assume-extractor", action="store_true",
                   help="read pytorch-fid / clean-fid .npz files (no fingerprint) as made with --extractor's extractor")
    p.add_argument("--skip-bad-images", action="store_true", help="report unreadable images and go on")
    p.add_argument("--trust-code", action="store_true", help="let an extractor card name code outside the allow-list")
    return p


def fd_main(argv: Sequence[str]) -> float | None:
    """``facefd fd``: the same functions as ``evaluate.py task=fd`` / ``task=stats``, with pytorch-fid's output."""
    from facefd.utils.entry import report_user_errors

    parser = fd_parser()
    args = parser.parse_args(argv)
    if len(args.paths) > 2 or (len(args.paths) == 1 and not args.save_stats):
        parser.error("give two folders / .npz files (or one folder with --save-stats OUT.npz)")
    if args.metric is not None:
        print("warning: --metric is deprecated; use --extractor", file=sys.stderr)
    entry = args.metric or args.extractor

    @report_user_errors
    def main() -> float | None:
        from facefd.data.images import BadImagesError
        from facefd.evaluation.tasks import fd, stats
        from facefd.metrics.extractors import build_extractor, check_extractor_entry, parse_extractor_entry
        from facefd.metrics.frechet_metric import FrechetDistance
        from facefd.utils.device import resolve_device
        from facefd.utils.settings import trusting_code
        from facefd.utils.threads import limit_threads_to_cpu_quota

        limit_threads_to_cpu_quota()
        a, b = args.paths[0], (args.paths[1] if len(args.paths) == 2 else None)
        check_extractor_entry(entry)
        fd.check_sources(a, b, args.save_stats)  # before the extractor loads
        device = resolve_device(args.device)
        _, name, path = parse_extractor_entry(entry)
        with trusting_code(args.trust_code):
            extractor = build_extractor(name, path)
        metric = FrechetDistance(extractor, normalize=True).to(device)
        workers = args.num_workers if args.num_workers is not None else (0 if device.type == "cpu" else 2)
        loader = dict(batch_size=args.batch_size, num_workers=workers, skip_bad_images=args.skip_bad_images,
                      num_samples=args.num_samples, seed=args.seed, devices=args.devices)
        try:
            if args.save_stats:
                stats.save_statistics(metric, a, args.save_stats, format=args.format, **loader)
                if b is None:
                    return None
                a = args.save_stats  # the statistics just made
            result = fd.compute(metric, a, b, assume_extractor=args.assume_extractor, **loader)
        except BadImagesError as exc:  # name this command's own flag, not the Hydra key
            raise BadImagesError(exc.bad, skip_option="--skip-bad-images") from None
        print(f"FD: {result['fd']}")  # full precision, as python -m pytorch_fid prints it
        return result["fd"]

    return main()


def fid_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="facefd fid", description="FID between two image folders or .npz statistics "
                                "files, with python -m pytorch_fid's options and output (the standard FID Inception "
                                "with torch-fidelity's TF-compatible resize, as torchmetrics and torch-fidelity compute it).")
    p.add_argument("--batch-size", type=int, default=50, help="batch size to use")
    p.add_argument("--num-workers", type=int, default=None, help="data loader workers (default: 0 on the CPU, 2 on a GPU)")
    p.add_argument("--device", type=str, default=None, help="device to use, like cuda, cuda:0 or cpu")
    p.add_argument("--dims", type=int, default=2048, choices=(64, 192, 768, 2048),
                   help="dimensionality of the Inception features to use")
    p.add_argument("--save-stats", action="store_true", help="generate an npz archive from a directory of samples: "
                   "the first path is used as input and the second as output")
    p.add_argument("--weights", action="append", default=[], metavar="NAME=FILE",
                   help="a local weights file instead of the fetched one, e.g. --weights inception=./pt_inception.pth")
    p.add_argument("path", type=str, nargs=2, help="paths to the generated images or to .npz statistic files")
    return p


def weights_option(parser: argparse.ArgumentParser, values: Sequence[str]) -> dict[str, str]:
    """``--weights NAME=FILE`` values as ``{name: file}``; anything but ``inception=FILE`` is a usage error."""
    weights = dict(w.split("=", 1) for w in values if "=" in w)
    unknown = sorted(set(weights) - {"inception"}) + [w for w in values if "=" not in w]
    if unknown:
        parser.error(f"--weights takes inception=FILE, not {unknown}")
    return weights


def fid_main(argv: Sequence[str]) -> float | None:
    """``facefd fid``: pytorch-fid's command line on the same functions as ``facefd fd``."""
    from facefd.utils.entry import report_user_errors

    parser = fid_parser()
    args = parser.parse_args(argv)
    weights = weights_option(parser, args.weights)

    @report_user_errors
    def main() -> float | None:
        from facefd.evaluation.tasks import fd, stats
        from facefd.metrics.extractors import InceptionFID
        from facefd.metrics.frechet_metric import FrechetDistance
        from facefd.utils.device import resolve_device
        from facefd.utils.threads import limit_threads_to_cpu_quota

        limit_threads_to_cpu_quota()
        a, b = args.path
        fd.check_sources(a, None if args.save_stats else b, b if args.save_stats else None)
        device = resolve_device(args.device or "auto")
        extractor = InceptionFID(weights.get("inception"), layer=args.dims, resize="tf_bilinear")
        metric = FrechetDistance(extractor, normalize=True).to(device)
        workers = args.num_workers if args.num_workers is not None else (0 if device.type == "cpu" else 2)
        loader = dict(batch_size=args.batch_size, num_workers=workers)
        if args.save_stats:  # pytorch-fid's mu/sigma (facefd's fingerprint kept beside them)
            stats.save_statistics(metric, a, b, format="pytorch-fid", **loader)
            return None
        # .npz files of pytorch-fid carry no fingerprint: read as made with this network, as pytorch-fid does
        value = fd.compute(metric, a, b, assume_extractor=True, **loader)["fd"]
        print("FID: ", value)  # python -m pytorch_fid's line, to the letter
        return value

    return main()


def score_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="facefd score", description="Every score of a face-generation paper between a "
                                "reference folder A and a generated folder B, from one extraction per folder and "
                                "extractor (features cached). Scores: fid, fdd, fd/EXTRACTOR, fd_inf, kid, prdc, "
                                "authpct, is; any of them on another extractor with SCORE/EXTRACTOR.")
    p.add_argument("paths", nargs=2, metavar="PATH", help="A (reference) and B (generated): folders, or statistics "
                   ".npz files where a score needs only statistics (fid, fdd, fd)")
    p.add_argument("--metrics", default="fid", help="comma-separated scores, e.g. fid,kid,prdc,authpct,is "
                   "or kid/fdd@run/extractor.safetensors (default: fid)")
    p.add_argument("--weights", action="append", default=[], metavar="NAME=FILE",
                   help="a local weights file instead of the fetched one, e.g. --weights inception=./pt_inception.pth")
    p.add_argument("--fdd-extractor", default="extractor/extractor.safetensors",
                   help="the fdd score's extractor file (default: ./extractor/extractor.safetensors)")
    p.add_argument("--num-samples", type=int, default=None, help="a seeded sample of at most N images per folder")
    p.add_argument("--seed", type=int, default=0, help="the sample's and the bootstrap's seed")
    p.add_argument("--ci", type=float, default=None, help="bootstrap interval of the Fréchet scores, e.g. 0.95")
    p.add_argument("--n-boot", type=int, default=200, help="bootstrap resamples (with --ci)")
    p.add_argument("--json", default=None, metavar="OUT.json", help="write values, intervals, counts, the sample, "
                   "extractor fingerprints and library versions here")
    p.add_argument("--cache-dir", default=None, help="feature cache (default: ~/.cache/facefd/features)")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--num-workers", type=int, default=None, help="data loader workers (default: 0 on the CPU, 2 on a GPU)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:1")
    p.add_argument("--devices", type=int, default=1, help="extract features in N processes through Lightning "
                   "(N GPUs, or N CPU processes with --device cpu)")
    p.add_argument("--skip-bad-images", action="store_true", help="report unreadable images and go on")
    p.add_argument("--trust-code", action="store_true", help="let an extractor card name code outside the allow-list")
    return p


def score_main(argv: Sequence[str]) -> dict | None:
    """``facefd score``: one line per score, and the JSON of everything with ``--json``."""
    from facefd.utils.entry import report_user_errors

    parser = score_parser()
    args = parser.parse_args(argv)
    weights = weights_option(parser, args.weights)

    @report_user_errors
    def main() -> dict:
        from facefd.data.images import BadImagesError
        from facefd.evaluation.score import score_folders
        from facefd.utils.device import resolve_device
        from facefd.utils.threads import limit_threads_to_cpu_quota

        limit_threads_to_cpu_quota()
        device = resolve_device(args.device)
        workers = args.num_workers if args.num_workers is not None else (0 if device.type == "cpu" else 2)
        try:
            return score_folders(*args.paths, args.metrics, weights=weights, num_samples=args.num_samples,
                                 seed=args.seed, ci=args.ci, n_boot=args.n_boot, json_path=args.json,
                                 cache_dir=args.cache_dir, batch_size=args.batch_size, num_workers=workers,
                                 device=str(device), skip_bad_images=args.skip_bad_images, trust_code=args.trust_code,
                                 fdd_extractor=args.fdd_extractor, devices=args.devices)
        except BadImagesError as exc:
            raise BadImagesError(exc.bad, skip_option="--skip-bad-images") from None

    return main()


def main(argv: Optional[Sequence[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    command, rest = argv[0], argv[1:]
    if command == "fd":
        fd_main(rest)
    elif command == "fid":
        fid_main(rest)
    elif command == "score":
        score_main(rest)
    elif command in APPS:
        run_app(command, rest)
    else:
        print(f"error: unknown command {command!r}\n{USAGE}", file=sys.stderr)
        raise SystemExit(2)


if __name__ == "__main__":
    main()
