"""How far can the k-NN yardstick go on the sample set? The DINO run's own starting network, trained *with
the labels* instead, scored with the same k-NN protocol.

    python bench/supervised_ceiling.py                 # 8 epochs, about 2 minutes on 2 CPU cores
    python bench/supervised_ceiling.py --epochs 3

A ResNet-18 from the random start of ``train.py backbone=resnet18`` (``random:resnet18``: seed 0, residual
blocks switched on) is trained end to end with binary cross-entropy on the 13 attributes of the train people (horizontal flips,
AdamW), and after every epoch its pooled features are scored as the run's probe scores them: cosine k-NN,
k=20, T=0.07, the train people as the bank, AUROC on the val people, mean over attributes. Epoch -1 is the
start (BN recalibrated on the train split, as the run's epoch -1). This is not a target for DINO (it sees no
labels); it shows whether the set and the protocol leave room above what DINO reaches.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from feature_content import draw_set, features, knn_auroc  # noqa: E402

from facefd.data.sample_faces import SAMPLE_ATTRIBUTES  # noqa: E402
from facefd.metrics.extractors import build_extractor  # noqa: E402
from facefd.models.batchnorm import recalibrate_batchnorm  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0, help="training order and flips (the network is the run's seed-0 start)")
    args = p.parse_args()

    images, _, labels, people = draw_set(3000, 64, 0)
    n_people = people.max() + 1
    train, val = people < int(n_people * 0.8), (people >= int(n_people * 0.8)) & (people < int(n_people * 0.9))
    extractor = build_extractor("random:resnet18", input_size=64)
    backbone = extractor.backbone.requires_grad_(True)  # extractors come frozen
    train_images = images[torch.from_numpy(np.flatnonzero(train))]
    train_labels = torch.from_numpy(labels[train]).float()
    recalibrate_batchnorm(backbone, [extractor.preprocess(train_images[i:i + 256]) for i in range(0, len(train_images), 256)])
    print(f"epoch -1 (the DINO run's start) | k-NN AUROC {knn_auroc(features(extractor, images), labels, train, val, False):.3f}")

    torch.manual_seed(args.seed)
    head = torch.nn.Linear(extractor.num_features, len(SAMPLE_ATTRIBUTES))
    optimizer = torch.optim.AdamW([*backbone.parameters(), *head.parameters()], lr=args.lr, weight_decay=0.05)
    start = time.perf_counter()
    for epoch in range(args.epochs):
        backbone.train()
        order, losses = torch.randperm(len(train_images)), []
        for i in range(0, len(order), args.batch_size):
            batch = order[i:i + args.batch_size]
            x = extractor.preprocess(train_images[batch])
            if torch.rand(()) < 0.5:
                x = x.flip(3)
            loss = F.binary_cross_entropy_with_logits(head(backbone(x)), train_labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        backbone.eval()
        score = knn_auroc(features(extractor, images), labels, train, val, False)
        print(f"epoch {epoch} | train BCE {np.mean(losses):.3f} | k-NN AUROC {score:.3f} | {time.perf_counter() - start:.0f} s",
              flush=True)


if __name__ == "__main__":
    main()
