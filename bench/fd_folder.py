"""Folder-to-folder Fréchet distance end to end (decode, resize, features, statistics, distance):
facefd's folder API (what `facefd fd` and `evaluate.py task=fd` run) against torch-fidelity's
`calculate_metrics(fid=True)` and clean-fid's `compute_fid` (given the same extractor through
`custom_feat_extractor`, with no resize of its own), all with the same FID Inception weights on the same
two JPEG folders. Checks that the values agree and prints images/s of each and the ratios (targets
against the faster peer: >= 1.0 on the CPU, >= 1.5 on a GPU).

    python bench/fd_folder.py                                   # random-weight Inception made here
    python bench/fd_folder.py --weights pt_inception-2015-12-05-6726825d.pth --images 2000 --device cuda
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
from multicrop import make_jpegs  # noqa: E402

from facefd.evaluation.folder_stats import distance  # noqa: E402
from facefd.metrics import FrechetDistance  # noqa: E402
from facefd.metrics.extractors import FID_WEIGHTS_NAME  # noqa: E402


def random_inception_weights(path: Path, calibrate: bool = False) -> Path:
    """The FID Inception architecture with random weights (no download), saved as the file users give;
    ``calibrate``: batch-norm statistics measured on noise, so features vary at a trained network's scale."""
    import torch_fidelity.feature_extractor_inceptionv3 as tfi

    saved = tfi.load_state_dict_from_url, tfi.FeatureExtractorInceptionV3.load_state_dict
    tfi.load_state_dict_from_url = lambda *a, **k: {}
    tfi.FeatureExtractorInceptionV3.load_state_dict = lambda self, sd, *a, **k: None
    try:
        torch.manual_seed(0)
        net = tfi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    finally:
        tfi.load_state_dict_from_url, tfi.FeatureExtractorInceptionV3.load_state_dict = saved
    if calibrate:
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.momentum = None  # one pass in training mode sets the statistics
        net.train()
        with torch.no_grad():
            net(torch.randint(0, 256, (16, 3, 299, 299), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)))
        net.eval()
    torch.save(net.state_dict(), path)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=96, help="per folder")
    p.add_argument("--size", type=int, default=128, help="side of the JPEGs")
    p.add_argument("--weights", default=None, help=f"{FID_WEIGHTS_NAME} (default: random weights made here)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=None, help="facefd's loader workers (default: as `facefd fd`: "
                   "0 on the CPU, 2 on a GPU)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--layer", type=int, default=None,
                   help="Inception feature layer (default: 2048 with real weights, 192 with random ones, whose "
                        "deep features are nearly constant)")
    args = p.parse_args()
    layer = args.layer or (2048 if args.weights else 192)
    import torch_fidelity

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        weights = Path(args.weights) if args.weights else random_inception_weights(tmp / FID_WEIGHTS_NAME)
        a, b = tmp / "a", tmp / "b"
        a.mkdir(), b.mkdir()
        make_jpegs(a, args.images, args.size)
        make_jpegs(b, args.images + 7, args.size)  # other faces (the drawing continues from another count)
        for extra in sorted(b.iterdir())[: 7]:
            extra.unlink()
        n = 2 * args.images

        from facefd.metrics.extractors import InceptionFID

        metric = FrechetDistance(InceptionFID(weights, layer=layer), normalize=True).to(args.device)
        workers = args.workers if args.workers is not None else (0 if args.device == "cpu" else 2)
        t0 = time.perf_counter()
        ours = distance(metric, a, b, batch_size=args.batch_size, num_workers=workers)["fd"]
        t_ours = time.perf_counter() - t0

        t0 = time.perf_counter()
        theirs = torch_fidelity.calculate_metrics(
            input1=str(a), input2=str(b), fid=True, feature_extractor="inception-v3-compat",
            feature_extractor_weights_path=str(weights), feature_layer_fid=str(layer), batch_size=args.batch_size,
            cuda=args.device == "cuda",
            cache=False, verbose=False, save_cpu_ram=True)["frechet_inception_distance"]
        t_theirs = time.perf_counter() - t0

        clean: dict = {}
        try:
            from cleanfid import fid as cleanfid

            extractor = InceptionFID(weights, layer=layer).to(args.device).eval()
            t0 = time.perf_counter()
            # the same extractor; clean-fid's loader hands it the decoded pixels (0..255 floats) unresized,
            # so the extractor resizes as it does for facefd and torch-fidelity
            value = cleanfid.compute_fid(
                str(a), str(b), mode="clean", batch_size=args.batch_size, device=torch.device(args.device),
                num_workers=workers, custom_feat_extractor=lambda x: extractor(x.round().to(torch.uint8)),
                custom_fn_resize=lambda pixels: pixels, verbose=False, use_dataparallel=False)
            clean = {"fd": float(value), "s": time.perf_counter() - t0}
        except ImportError as exc:  # optional peer: pip install clean-fid
            clean = {"skipped": f"{type(exc).__name__}: {exc}"[:200]}

    result = {"device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu", "images": n,
              "size": args.size, "layer": layer, "facefd_workers": workers, "weights": "random" if not args.weights else str(args.weights),
              "facefd_fd": ours, "torch_fidelity_fd": theirs, "rel_diff": abs(ours - theirs) / max(abs(theirs), 1e-12),
              "facefd_img_per_s": n / t_ours, "torch_fidelity_img_per_s": n / t_theirs,
              "ratio_facefd_over_torch_fidelity": t_theirs / t_ours, "clean_fid": clean}
    if "fd" in clean:
        result.update(clean_fid_fd=clean["fd"], clean_fid_img_per_s=n / clean["s"],
                      rel_diff_clean_fid=abs(ours - clean["fd"]) / max(abs(clean["fd"]), 1e-12),
                      ratio_facefd_over_clean_fid=clean["s"] / t_ours,
                      ratio_facefd_over_faster_peer=min(clean["s"], t_theirs) / t_ours)
    print(f"facefd         : FD {ours:.6f}  {n / t_ours:8.1f} img/s")
    print(f"torch-fidelity : FD {theirs:.6f}  {n / t_theirs:8.1f} img/s")
    if "fd" in clean:
        print(f"clean-fid      : FD {clean['fd']:.6f}  {n / clean['s']:8.1f} img/s")
    print(f"ratio facefd / torch-fidelity: {t_theirs / t_ours:.3f}")
    if "fd" in clean:
        print(f"ratio facefd / clean-fid     : {clean['s'] / t_ours:.3f}")
        print(f"ratio facefd / faster peer (CPU target >= 1.0, GPU >= 1.5): {result['ratio_facefd_over_faster_peer']:.3f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
