"""Independent references the tests compare facefd with: formulas written from the papers and peers' code
with numpy/scipy, and feature maps simple enough to recompute by hand."""
from __future__ import annotations

import numpy as np
import scipy.linalg
import torch
from torch import nn


def scipy_reference(mu1, s1, mu2, s2):
    """The pytorch-fid / clean-fid formula, written out here with scipy's sqrtm."""
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def brute_prdc(real, fake, k):
    def radii(a):
        d = np.linalg.norm(a[:, None] - a[None], axis=-1)
        return np.sort(d, axis=1)[:, k]
    rr, rf = radii(real), radii(fake)
    d = np.linalg.norm(real[:, None] - fake[None], axis=-1)
    precision = np.mean([any(d[i, j] < rr[i] for i in range(len(real))) for j in range(len(fake))])
    recall = np.mean([any(d[i, j] < rf[j] for j in range(len(fake))) for i in range(len(real))])
    density = np.mean([sum(d[i, j] < rr[i] for i in range(len(real))) for j in range(len(fake))]) / k
    coverage = np.mean([d[i].min() < rr[i] for i in range(len(real))])
    return {"precision": precision, "recall": recall, "density": density, "coverage": coverage}


def dgm_eval_authpct(train, gen):
    """dgm-eval's formula: a generated sample is authentic when its nearest training sample's own nearest
    training neighbour is closer than the generated sample is."""
    real = np.linalg.norm(train[:, None] - train[None], axis=-1)
    np.fill_diagonal(real, np.inf)
    d = np.linalg.norm(train[:, None] - gen[None], axis=-1)
    nearest = d.argmin(axis=0)
    return 100.0 * np.mean(real.min(axis=0)[nearest] < d.min(axis=0))


class LinearFeatures(nn.Module):
    """A fixed linear map of the flattened image: features the test can recompute in numpy. It declares
    float input, so the metric hands it floats in [0, 1] from uint8 or float images."""

    num_features = 6
    input_dtype = torch.float32

    def __init__(self, offset: float = 0.0, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.randn(3 * 4 * 4, self.num_features, generator=g))
        self.offset = offset

    def forward(self, x):
        return x.flatten(1) @ self.weight + self.offset


def numpy_features(ext, imgs):
    return imgs.double().flatten(1).numpy() @ ext.weight.detach().double().numpy() + ext.offset


def reference_cmmd(x, y, sigma=10.0, scale=1000.0):
    """The reference code's computation: every pair, diagonal included, gamma = 1 / (2 sigma^2)."""
    gamma = 1.0 / (2 * sigma ** 2)

    def k(a, b):
        d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        return np.exp(-gamma * d2).mean()

    return scale * (k(x, x) + k(y, y) - 2 * k(x, y))


def pil_pixels(path, size=None):
    """An image file as an independent reader sees it: PIL's RGB decoding as float [0, 1] ``[3, H, W]``, resized
    (when ``size`` is given) with torch's antialiased bilinear interpolation to ``size x size`` -- the resize
    facefd documents for its extractors' inputs, written here without facefd's loaders."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from PIL import Image

    x = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)
    if size and tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
    return x
