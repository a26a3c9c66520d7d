"""What do a network's features encode on the sample set? The exported extractor of a DINO run against the
network the run started from (``random:resnet18``, BN recalibrated on the train split as the run's epoch -1), for a
run of the ResNet-18 recipe (``python train.py backbone=resnet18``).

    python bench/feature_content.py outputs/train/runs/<time>/extractor/extractor.safetensors

The sample set is drawn in code, so every photo's nuisances (background colour, head roll/turn, framing,
exposure) are known. For each nuisance and attribute it prints the R^2 of a ridge regression from features
(L2-normalised, as the k-NN probe sees them) fitted on the train people and scored on the val people:
- from all features: what a linear probe can read;
- from the top principal components only (``--pcs``, default 10): what dominates cosine similarity, and
  so which images the k-NN vote takes as neighbours.
Ratios trained / initial are printed last, and a table is written with ``--out FILE.json``.

It also prints how concentrated each network's features are (share of the variance in the top 1 / 5 / 10
principal components, effective rank = exp(entropy of the variance shares)) and the run's k-NN AUROC
(cosine, k=20, T=0.07, the train people as bank) on the features as they are and after PCA whitening on
the train people: when whitening raises the trained network's score far above the raw one, the
information is in the features but a few dominant directions decide the cosine neighbours.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from facefd.data.sample_faces import (SAMPLE_ATTRIBUTES, draw_face, face_attributes, sample_identity,
                                      sample_view)
from facefd.metrics.extractors import build_extractor
from facefd.models.batchnorm import recalibrate_batchnorm
from facefd.models.extractor import load_extractor
from facefd.models.probe.knn import attribute_scores, knn_attribute_probabilities

NUISANCES = {
    "background red": lambda v: v["background"][0], "background green": lambda v: v["background"][1],
    "background blue": lambda v: v["background"][2], "head roll": lambda v: v["roll"],
    "head turn (yaw)": lambda v: v["yaw"], "head tilt (pitch)": lambda v: v["pitch"],
    "face scale": lambda v: v["scale"], "horizontal shift": lambda v: v["shift"][0],
    "vertical shift": lambda v: v["shift"][1], "exposure": lambda v: v["light"],
}


def draw_set(num_images: int, image_size: int, seed: int, views: int = 5):
    """The sample set's photos with their nuisances and labels, replayed from its seed (as generated)."""
    rng = np.random.default_rng(seed)
    images, nuisances, labels, people = [], [], [], []
    identity = None
    for i in range(num_images):
        if i % views == 0:
            identity = sample_identity(rng)
        view = sample_view(identity, rng)
        images.append(np.asarray(draw_face(identity, view, rng, image_size)))
        nuisances.append([f(view) for f in NUISANCES.values()])
        attrs = face_attributes(identity, view)
        labels.append([float(attrs[a]) for a in SAMPLE_ATTRIBUTES])
        people.append(i // views)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()  # uint8 [N, 3, H, W]
    return x, np.array(nuisances, float), np.array(labels, float), np.array(people)


def features(extractor: torch.nn.Module, images: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        f = torch.cat([extractor(images[i:i + 256]) for i in range(0, len(images), 256)]).double().numpy()
    return f / np.linalg.norm(f, axis=1, keepdims=True)


def ridge_r2(f: np.ndarray, y: np.ndarray, train: np.ndarray, val: np.ndarray, pcs: int | None,
             l2: float = 1e-2) -> float:
    mean = f[train].mean(0)
    ft, fv = f[train] - mean, f[val] - mean
    if pcs:
        basis = np.linalg.svd(ft, full_matrices=False)[2][:pcs].T
        ft, fv = ft @ basis, fv @ basis
    w = np.linalg.solve(ft.T @ ft + l2 * np.eye(ft.shape[1]), ft.T @ (y[train] - y[train].mean()))
    pred = fv @ w + y[train].mean()
    return float(1 - ((y[val] - pred) ** 2).sum() / ((y[val] - y[val].mean()) ** 2).sum())


def spectrum(f: np.ndarray, train: np.ndarray) -> dict[str, float]:
    """Variance shares of the top principal components of the (L2-normalised) train features."""
    share = np.linalg.svd(f[train] - f[train].mean(0), compute_uv=False) ** 2
    share = share / share.sum()
    return {"top1": float(share[0]), "top5": float(share[:5].sum()), "top10": float(share[:10].sum()),
            "effective_rank": float(np.exp(-(share * np.log(share + 1e-300)).sum()))}


def leading_direction_correlates(f: np.ndarray, train: np.ndarray, named: dict[str, np.ndarray], components: int = 2,
                                 top: int = 3) -> list[list[tuple[str, float]]]:
    """For each of the first principal components of the train features: the variables (attributes,
    nuisances, image statistics) whose values correlate most with it, as (name, Pearson r)."""
    centred = f[train] - f[train].mean(0)
    scores = centred @ np.linalg.svd(centred, full_matrices=False)[2][:components].T
    out = []
    for c in range(components):
        r = {name: float(np.corrcoef(scores[:, c], v[train])[0, 1]) for name, v in named.items() if np.std(v[train]) > 0}
        out.append(sorted(r.items(), key=lambda kv: -abs(kv[1]))[:top])
    return out


def knn_auroc(f: np.ndarray, labels: np.ndarray, train: np.ndarray, val: np.ndarray, whiten: bool) -> float:
    """Mean k-NN AUROC over attributes, as the run's probe scores it (optionally on PCA-whitened features)."""
    if whiten:
        centred = f - f[train].mean(0)
        _, s, vt = np.linalg.svd(centred[train], full_matrices=False)
        f = centred @ vt.T / (s + 1e-3 * s[0])
    as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).float()  # noqa: E731
    probs = knn_attribute_probabilities(as_t(f[train]), as_t(labels[train]), as_t(f[val]))
    return float(np.nanmean(attribute_scores(probs, as_t(labels[val]))["auroc"].numpy()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("extractor", type=Path, help="extractor.safetensors of a train.py run on the sample set")
    p.add_argument("--initial", default="random:resnet18", help="the run's initial network (the ResNet-18 run: random:resnet18)")
    p.add_argument("--num-images", type=int, default=3000)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0, help="the sample set's generator seed")
    p.add_argument("--pcs", type=int, default=10)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()

    images, nuisances, labels, people = draw_set(args.num_images, args.image_size, args.seed)
    n_people = people.max() + 1
    train, val = people < int(n_people * 0.8), (people >= int(n_people * 0.8)) & (people < int(n_people * 0.9))
    trained = load_extractor(args.extractor)
    initial = build_extractor(args.initial, input_size=trained.input_size)
    backbone = initial.backbone  # recalibrate BN as the run's epoch -1 does (20 batches of the train split)
    order = torch.randperm(int(train.sum()), generator=torch.Generator().manual_seed(0))
    train_images = images[torch.from_numpy(np.flatnonzero(train))][order]
    recalibrate_batchnorm(backbone, [initial.preprocess(train_images[i:i + 256]) for i in range(0, 256 * 20, 256)
                                     if i < len(train_images)])
    feats = {"initial": features(initial, images), "trained": features(trained, images)}

    rows = []
    names = list(NUISANCES) + list(SAMPLE_ATTRIBUTES)
    targets = np.concatenate([nuisances, labels], axis=1)
    for j, name in enumerate(names):
        row = {"variable": name, "kind": "nuisance" if j < len(NUISANCES) else "attribute"}
        for net, f in feats.items():
            row[f"{net} all"] = ridge_r2(f, targets[:, j], train, val, None)
            row[f"{net} top{args.pcs}"] = ridge_r2(f, targets[:, j], train, val, args.pcs)
        rows.append(row)
    cols = ["initial all", "trained all", f"initial top{args.pcs}", f"trained top{args.pcs}"]
    print(f"R^2 on {int(val.sum())} val photos ({int(n_people * 0.1)} people), ridge fitted on {int(train.sum())} train photos")
    print("variable | kind | " + " | ".join(cols))
    for row in rows:
        print(f"{row['variable']} | {row['kind']} | " + " | ".join(f"{row[c]:.3f}" for c in cols))
    for kind in ("nuisance", "attribute"):
        part = [r for r in rows if r["kind"] == kind]
        means = {c: float(np.mean([max(r[c], 0.0) for r in part])) for c in cols}
        print(f"mean over {kind}s (negative R^2 as 0) | " + " | ".join(f"{means[c]:.3f}" for c in cols)
              + f" | trained/initial all {means['trained all'] / max(means['initial all'], 1e-9):.2f}x")
    concentration = {}
    print("network | top-1 PC share | top-5 | top-10 | effective rank | k-NN AUROC | k-NN AUROC whitened")
    for net, f in feats.items():
        c = {**spectrum(f, train), "knn_auroc": knn_auroc(f, labels, train, val, False),
             "knn_auroc_whitened": knn_auroc(f, labels, train, val, True)}
        concentration[net] = c
        print(f"{net} | {c['top1']:.2f} | {c['top5']:.2f} | {c['top10']:.2f} | {c['effective_rank']:.1f} | "
              f"{c['knn_auroc']:.3f} | {c['knn_auroc_whitened']:.3f}")
    pixels = images.float()
    named = {**{n: targets[:, j] for j, n in enumerate(names)},
             "image contrast (pixel std)": pixels.std(dim=(1, 2, 3)).numpy(),
             "image brightness": pixels.mean(dim=(1, 2, 3)).numpy()}
    for net, f in feats.items():
        for c, correlates in enumerate(leading_direction_correlates(f, train, named)):
            concentration[net][f"pc{c + 1}_correlates"] = correlates
            print(f"{net} PC{c + 1} follows: " + ", ".join(f"{n} (r = {r:+.2f})" for n, r in correlates))
    if args.out:
        args.out.write_text(json.dumps({"pcs": args.pcs, "rows": rows, "concentration": concentration}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
