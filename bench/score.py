"""`facefd score --metrics fid,kid,prdc` against the peers, in one run on one folder pair and one Inception
weights file: torch-fidelity's single `calculate_metrics(fid=True, kid=True)` call plus the `prdc` package,
and the separate runs users often script (FID, then KID, then PRDC, each extracting its own features).

Values must agree: FID to 1e-4 relative (torch-fidelity's float32 `sqrtm` is the less exact side), KID as
the full-set unbiased estimate on both sides (subsets as large as the sets), PRDC exactly on the same
features. Prints the times and the ratios (targets: >= 1.2x the single
call, >= 2x the separate runs).

    python bench/score.py --real data/sample_faces_v2/images --fake data/sample_faces_clutter/images \\
        --num 500 --weights pt_inception-2015-12-05-6726825d.pth

Without ``--weights`` the standard file is fetched (network); ``--weights random`` uses the FID Inception
architecture with random weights (timing only: the same network shape, other values).
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def peer_features(weights: Path, folder: Path, batch_size: int) -> np.ndarray:
    """2048-d pool features of a folder through torch-fidelity's own Inception (uint8 images as it reads them)."""
    import torch_fidelity.feature_extractor_inceptionv3 as tfi
    from PIL import Image

    state = torch.load(weights, map_location="cpu", weights_only=True)
    original = tfi.load_state_dict_from_url
    tfi.load_state_dict_from_url = lambda *a, **k: state
    try:
        net = tfi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"]).eval()
    finally:
        tfi.load_state_dict_from_url = original
    files = sorted(folder.iterdir())
    out = []
    with torch.no_grad():
        for i in range(0, len(files), batch_size):
            x = torch.stack([torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1)
                             for f in files[i:i + batch_size]])
            out.append(net(x)[0].reshape(len(x), -1).double().numpy())
    return np.concatenate(out)


def subset(folder: str, num: int, into: Path) -> Path:
    """The first ``num`` images of ``folder`` copied into ``into`` (torch-fidelity reads whole folders)."""
    into.mkdir(parents=True)
    for path in sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))[:num]:
        shutil.copy(path, into / path.name)
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", required=True)
    parser.add_argument("--fake", required=True)
    parser.add_argument("--num", type=int, default=500, help="images per folder (<= 1000: KID subsets = the sets)")
    parser.add_argument("--weights", default=None, help="the FID Inception file; 'random' for random weights")
    parser.add_argument("--batch-size", type=int, default=50)
    args = parser.parse_args()
    import torch_fidelity
    from prdc import compute_prdc

    from fd_folder import random_inception_weights  # bench/ is on the path when this script runs

    from facefd.evaluation.score import score_folders
    from facefd.utils.weights import fetch_weights

    work = Path(tempfile.mkdtemp(prefix="facefd-bench-score-"))
    weights = (random_inception_weights(work / "random_inception.pth", calibrate=True) if args.weights == "random" else
               Path(args.weights) if args.weights else fetch_weights("inception"))
    real, fake = subset(args.real, args.num, work / "real"), subset(args.fake, args.num, work / "fake")
    n = min(len(list(real.iterdir())), len(list(fake.iterdir())))
    peer = dict(input1=str(real), input2=str(fake), feature_extractor_weights_path=str(weights), cuda=torch.cuda.is_available(),
                batch_size=args.batch_size, verbose=False, cache=False, kid_subset_size=n, kid_subsets=10)

    start = time.perf_counter()
    ours = score_folders(real, fake, "fid,kid,prdc", weights={"inception": str(weights)}, cache_dir=work / "cache",
                         batch_size=args.batch_size, echo=lambda line: None)["scores"]
    t_ours = time.perf_counter() - start

    start = time.perf_counter()
    single = torch_fidelity.calculate_metrics(fid=True, kid=True, **peer)
    t_features = time.perf_counter()
    from facefd.metrics.extractors import InceptionFID
    from facefd.models.probe.features import FeatureCache

    cache = FeatureCache(work / "cache")  # prdc on the same features, read from facefd's cache (not timed)
    extractor = InceptionFID(weights, logits=True)
    fa = cache.get(extractor, sorted(real.iterdir()))[:, :2048].numpy()
    fb = cache.get(extractor, sorted(fake.iterdir()))[:, :2048].numpy()
    start_prdc = time.perf_counter()
    their_prdc = compute_prdc(real_features=fa, fake_features=fb, nearest_k=5)
    t_prdc = time.perf_counter() - start_prdc
    t_single = (t_features - start) + t_prdc

    start = time.perf_counter()
    torch_fidelity.calculate_metrics(fid=True, **peer)
    torch_fidelity.calculate_metrics(kid=True, **peer)
    # the separate PRDC script: Inception features again (torch-fidelity's network), then the prdc package
    compute_prdc(real_features=peer_features(weights, real, args.batch_size),
                 fake_features=peer_features(weights, fake, args.batch_size), nearest_k=5)
    t_separate = time.perf_counter() - start

    fid_rel = abs(ours["fid"]["value"] - single["frechet_inception_distance"]) / max(abs(single["frechet_inception_distance"]), 1e-30)
    kid_rel = abs(ours["kid"]["value"] - single["kernel_inception_distance_mean"]) / max(abs(single["kernel_inception_distance_mean"]), 1e-30)
    prdc_equal = all(np.isclose(ours["prdc"]["value"][k], their_prdc[k], rtol=0, atol=1e-12) for k in their_prdc)
    print(f"{n} vs {n} images, {'random' if args.weights == 'random' else 'standard'} FID Inception weights, "
          f"{torch.get_num_threads()} threads, {'cuda' if torch.cuda.is_available() else 'cpu'}")
    print(f"FID  facefd {ours['fid']['value']:.6f}  torch-fidelity {single['frechet_inception_distance']:.6f}  "
          f"relative difference {fid_rel:.2e}")
    print(f"KID  facefd {ours['kid']['value']:.8g}  torch-fidelity {single['kernel_inception_distance_mean']:.8g}  "
          f"relative difference {kid_rel:.2e}")
    print(f"PRDC facefd {ours['prdc']['value']}  prdc package {their_prdc}  equal: {prdc_equal}")
    print(f"time: facefd score {t_ours:.1f} s | torch-fidelity single call + prdc {t_single:.1f} s "
          f"(ratio {t_single / t_ours:.2f}x, target >= 1.2x) | separate runs {t_separate:.1f} s "
          f"(ratio {t_separate / t_ours:.2f}x, target >= 2x)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
