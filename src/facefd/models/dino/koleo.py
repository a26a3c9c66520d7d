"""KoLeo regulariser (Sablayrolles et al. 2019, used by DINOv2 on the backbone's output).

Why: on a small face set DINO's backbone features can collapse into a few directions (on the sample set
the top principal component held 71 % of the variance, effective rank 4 of 512). A linear probe still reads
the rest, but a cosine k-NN -- the yardstick of "did it learn" -- only sees the dominant directions.
KoLeo is the Kozachenko-Leonenko differential-entropy estimator: maximising ``mean log(distance to the
nearest neighbour)`` of the L2-normalised features in a batch spreads them evenly over the sphere.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def koleo_loss(features: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``-mean_i log min_{j != i} ||x_i - x_j||`` over L2-normalised rows of ``features`` ``[N, D]``.

    The nearest neighbour is chosen without gradient (as in DINOv2); the distance to it carries it.
    Computed in float32 whatever the autocast dtype: bf16 distances between close points are too coarse.
    """
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"koleo_loss needs [N >= 2, D] features, got {tuple(features.shape)}")
    with torch.autocast(device_type=features.device.type, enabled=False):
        x = F.normalize(features.float(), dim=-1, eps=eps)
        with torch.no_grad():
            similarity = x @ x.T
            similarity.fill_diagonal_(-2.0)  # below any cosine, so a row never picks itself
            nearest = similarity.argmax(dim=1)
        distance = F.pairwise_distance(x, x[nearest], p=2, eps=eps)
        return -torch.log(distance + eps).mean()
