"""``FrechetDistance``: a streaming, DDP-safe torchmetrics ``Metric`` on pluggable features."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor, nn
from torchmetrics import Metric

from facefd.metrics.frechet import frechet_distance, psd_factor
from facefd.models.extractor import module_fingerprint
from facefd.metrics.kernels import kid, prdc
from facefd.metrics.reservoir import empty_reservoir, reservoir_add, reservoir_merge
from facefd.metrics.stats import GaussianStats, StatisticsFileError

_SETS = ("real", "fake")
#: How nn.Module names the functions its dtype casts apply (torchmetrics' list).
_DTYPE_CASTS = ("Module.type", "Module.half", "Module.float", "Module.double", "Module.bfloat16")


def merge_moments(shift: Tensor, moments: Tensor, d: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(shift, sum, outer, n)`` of per-process moment matrices (``[k, d + 1, d + 1]`` with their shifts
    ``[k, d]``, or one unstacked), re-based exactly to the first non-empty process's shift."""
    total, outer, n = moments[..., :d, d], moments[..., :d, :d], moments[..., d, d]
    if total.ndim == 1:  # one process
        return shift, total, outer, n
    used = n > 0
    if not bool(used.any()):
        return shift[0], total[0], outer[0], n.sum()
    c = shift[used][0]
    delta = shift - c
    delta[~used] = 0
    s1 = (total + n[:, None] * delta).sum(0)
    s2 = (outer + delta[:, :, None] * total[:, None, :] + total[:, :, None] * delta[:, None, :]
          + n[:, None, None] * delta[:, :, None] * delta[:, None, :]).sum(0)
    return c, s1, s2, n.sum()


def takes_uint8(module: nn.Module) -> bool:
    """Whether ``module`` declares uint8 input: ``input_dtype = torch.uint8``, or torchmetrics' own
    ``NoTrainInceptionV3`` (which asserts uint8 itself)."""
    if getattr(module, "input_dtype", None) == torch.uint8:
        return True
    try:
        from torchmetrics.image.fid import NoTrainInceptionV3
    except ImportError:  # pragma: no cover - torchmetrics without its image extras
        return False
    return isinstance(module, NoTrainInceptionV3)


def feature_width_of(module: nn.Module, input_img_size: tuple[int, int, int], metric: "FrechetDistance") -> int:
    """``num_features`` when the module has it, else the width of one forward pass on a dummy batch of
    ``input_img_size`` (what torchmetrics does), in the input convention the metric will use."""
    width = getattr(module, "num_features", None)
    if isinstance(width, Tensor):
        width = int(width.item())
    if isinstance(width, int) and width > 0:
        return width
    c, h, w = input_img_size
    x = torch.rand(2, c, h, w, generator=torch.Generator().manual_seed(0))
    if metric.uint8_input or (metric.passes_images_through and not metric.normalize):  # torchmetrics' dummy
        x = (x * 255).round().to(torch.uint8)
    device = next((t.device for t in module.parameters()), torch.device("cpu"))
    with torch.no_grad():
        out = module(x.to(device))
    if not isinstance(out, Tensor) or out.ndim != 2:
        raise ValueError(f"{type(module).__name__} returned {getattr(out, 'shape', type(out))} on a dummy batch of "
                         f"{tuple(x.shape)}; a feature extractor must return [N, D] (pass num_features= and "
                         "input_img_size= if it needs other input)")
    return int(out.shape[1])


def fid_inception(feature: int, weights_path: Optional[str | Path], antialias: bool = True) -> nn.Module:
    """torchmetrics' ``feature=<int>``: the FID Inception (torch-fidelity) at that layer, from
    ``weights_path``, or (``None``) the standard weights fetched, verified and cached as torch-fidelity does.
    ``antialias`` has torchmetrics' meaning: resize to 299 with torch's antialiased bilinear (its default),
    or (``False``) with torch-fidelity's TF-compatible bilinear, the reference FID's."""
    from facefd.metrics.extractors import FID_LAYERS, InceptionFID

    if feature not in FID_LAYERS:
        raise ValueError(f"Integer input to argument `feature` must be one of {FID_LAYERS}, but got {feature}.")
    return InceptionFID(weights_path, layer=feature, resize="antialias" if antialias else "tf_bilinear")


class FrechetDistance(Metric):
    """Fréchet distance between the features of real and generated images.

    Drop-in for torchmetrics' ``FrechetInceptionDistance``: the same constructor (``feature`` as 64/192/
    768/2048 for the FID Inception from ``feature_extractor_weights_path``, or any ``nn.Module``;
    ``reset_real_features``, ``normalize``, ``input_img_size``), ``update(imgs, real=...)``, ``compute()``,
    ``reset()``, ``merge_state`` and ``plot()``. A module without ``num_features`` is measured with one
    forward pass on a dummy batch; one that declares uint8 input (``input_dtype = torch.uint8``, or
    torchmetrics' ``NoTrainInceptionV3``) gets uint8 images.

    * Images: ``normalize=False`` expects uint8 in [0, 255], ``normalize=True`` floats in [0, 1];
      either way the extractor receives float32 in [0, 1] (outside autocast) and does its own
      resizing and normalisation (see :class:`facefd.FeatureExtractor`).
    * State: per set one float64 matrix, the sum of ``[x - shift, 1]^T [x - shift, 1]`` (outer
      products, sums and count together; ``shift`` is the first batch's mean on each process, for
      precision with large feature magnitudes). An update is one fused cast-and-subtract and one
      ``addmm``; memory does not grow with the number of images. Under DDP the per-process sums are gathered, re-based to one shift
      and summed in ``compute`` -- exact, and ``compute`` must run on every rank.
    * A fixed reference (``load_reference``) replaces the real statistics, is not synchronised (every
      rank holds it) and its covariance factor is cached, so repeated ``compute`` calls are cheap.
    * ``reservoir_size > 0`` also keeps a uniform sample of at most that many features per set and
      process (float32; merged exactly across processes), which enables :meth:`compute_ci`
      (bootstrap), :meth:`compute_fd_infinity` (Chong & Forsyth), :meth:`compute_kid` and
      :meth:`compute_prdc`. Memory stays fixed: ``2 * reservoir_size * num_features * 4`` bytes.

    Args:
        feature: 64, 192, 768 or 2048 for the FID Inception's layer (weights from
            ``feature_extractor_weights_path``), or any ``nn.Module`` mapping images to ``[N, D]``.
        reset_real_features: whether :meth:`reset` also clears the real set.
        normalize: ``True`` for float images in [0, 1], ``False`` for uint8 in [0, 255].
        input_img_size: ``(C, H, W)`` of the dummy batch that measures a module's width.
        feature_extractor: the DESIGN name of ``feature``; either may be given.

    Raises:
        ValueError: for an unknown layer, or images outside the range ``normalize`` promises.

    Example:
        >>> import torch
        >>> from facefd import FrechetDistance
        >>> _ = torch.manual_seed(0)
        >>> features = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
        >>> metric = FrechetDistance(features, normalize=True, input_img_size=(3, 8, 8))
        >>> images = torch.rand(16, 3, 8, 8)
        >>> metric.update(images, real=True)
        >>> metric.update(images, real=False)
        >>> round(float(metric.compute()), 6)  # the same images: distance 0
        0.0
        >>> metric.update(torch.rand(16, 3, 8, 8) * 0.5, real=False)
        >>> float(metric.compute()) > 0
        True
    """

    higher_is_better = False
    is_differentiable = False
    plot_lower_bound = 0.0
    full_state_update = False
    feature_network: str = "extractor"  # for torchmetrics' FeatureShare

    def __init__(self, feature: int | nn.Module | None = 2048, reset_real_features: bool = True,
                 normalize: bool = False, input_img_size: tuple[int, int, int] = (3, 299, 299),
                 feature_extractor_weights_path: Optional[str | Path] = None, antialias: bool = True, *,
                 feature_extractor: Optional[nn.Module] = None, num_features: Optional[int] = None,
                 reservoir_size: int = 0, reservoir_seed: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for name, value in (("normalize", normalize), ("reset_real_features", reset_real_features)):
            if not isinstance(value, bool):  # torchmetrics' checks and messages
                raise ValueError(f"Argument `{name}` expected to be a bool")
        extractor = feature_extractor if feature_extractor is not None else feature
        if isinstance(extractor, bool) or not isinstance(extractor, (int, nn.Module)):
            raise TypeError(f"Got unknown input to argument `feature`: 64/192/768/2048 (the FID Inception) or an "
                            f"nn.Module, not {type(extractor).__name__}")
        #: the network was built from ``feature=<int>``: images reach it as torchmetrics hands them over
        self._builds_inception = isinstance(extractor, int)
        if isinstance(extractor, int):
            extractor = fid_inception(extractor, feature_extractor_weights_path, antialias)
        self.extractor = extractor.eval()
        self.extractor.requires_grad_(False)
        #: the extractor wants uint8 images in [0, 255] (torchmetrics' NoTrainInceptionV3 asserts it)
        self.uint8_input = takes_uint8(extractor)
        #: a module that declares no ``input_dtype`` gets the images as given, as torchmetrics hands them to
        #: ``feature=<module>``; facefd's extractors (and modules declaring ``input_dtype = torch.float32``) get
        #: floats in [0, 1] from either uint8 or float images
        self.passes_images_through = (not self._builds_inception and not self.uint8_input
                                      and getattr(extractor, "input_dtype", None) is None)
        self.normalize = normalize
        self.num_features = int(num_features or feature_width_of(extractor, input_img_size, self))
        self.reset_real_features = reset_real_features
        self.fingerprint = module_fingerprint(self.extractor)
        d = self.num_features
        for s in _SETS:
            # reduce=None: gathered as [world, ...] and merged exactly in compute (per-rank shifts differ)
            self.add_state(f"{s}_shift", torch.zeros(d, dtype=torch.float64), dist_reduce_fx=None)
            # sum over images of [x - shift, 1]^T [x - shift, 1]: outer products, sums and count in one matrix
            self.add_state(f"{s}_moments", torch.zeros(d + 1, d + 1, dtype=torch.float64), dist_reduce_fx=None)
            if reservoir_size > 0:
                rows, keys = empty_reservoir(reservoir_size, d)
                self.add_state(f"{s}_res_rows", rows, dist_reduce_fx=None)
                self.add_state(f"{s}_res_keys", keys, dist_reduce_fx=None)
        self.reservoir_size, self.reservoir_seed = reservoir_size, reservoir_seed
        self._key_generators: dict[str, torch.Generator] = {}
        self._shift_set = {s: False for s in _SETS}
        self._buffer: Optional[Tensor] = None  # [rows, D + 1] float64 with a column of ones, reused
        self._reference: Optional[GaussianStats] = None
        self._reference_factor: Optional[Tensor] = None

    # ----------------------------------------------------------------------------- update
    def _images_to_float(self, imgs: Tensor) -> Tensor:
        if imgs.ndim != 4 or imgs.shape[1] != 3:
            raise ValueError(f"expected images [N, 3, H, W], got shape {tuple(imgs.shape)}")
        if imgs.dtype == torch.uint8:
            return imgs.float() / 255.0
        if not imgs.is_floating_point():
            raise ValueError(f"images must be uint8 or float, got {imgs.dtype}")
        if not self.normalize:
            raise ValueError("float images need normalize=True (values in [0, 1]); with normalize=False pass "
                             "uint8 images in [0, 255]")
        return imgs.float()

    def train(self, mode: bool = True) -> "FrechetDistance":
        """The metric's own flag follows its parent (Lightning sets every child's each epoch); the
        extractor stays in eval mode, as torchmetrics keeps its Inception, so BatchNorm and dropout never
        change the features or their running statistics."""
        super().train(mode)
        self.extractor.eval()
        return self

    def _keep_extractor_frozen(self) -> None:
        """Undo a parent's ``requires_grad_(True)`` or ``.train()`` before the extractor runs."""
        if any(m.training for m in self.extractor.modules()):
            self.extractor.eval()
        if any(p.requires_grad for p in self.extractor.parameters()):
            self.extractor.requires_grad_(False)

    @torch.no_grad()
    def extract(self, imgs: Tensor) -> Tensor:
        """Features of a batch, float32 outside autocast, checked for shape (finiteness: at compute,
        so that updates never wait for the GPU)."""
        self._keep_extractor_frozen()
        if self.passes_images_through:
            x = imgs
        elif self._builds_inception:  # torchmetrics' own conversion for its Inception: truncation, not rounding
            if imgs.is_floating_point() and not self.normalize:
                raise ValueError("Expecting image as torch.Tensor with dtype=torch.uint8: float images need "
                                 "normalize=True (values in [0, 1])")
            x = (imgs * 255).byte() if imgs.is_floating_point() else imgs
        else:
            x = self._images_to_float(imgs)
            if self.uint8_input:
                x = (x.clamp(0, 1) * 255).round().to(torch.uint8)
        with torch.autocast(device_type=x.device.type, enabled=False):
            feats = self.extractor(x)
        if feats.shape != (imgs.shape[0], self.num_features):
            raise ValueError(f"extractor returned shape {tuple(feats.shape)}, expected "
                             f"[{imgs.shape[0]}, {self.num_features}]")
        return feats

    def update(self, imgs: Tensor, real: bool) -> None:  # type: ignore[override]
        self._accumulate(self.extract(imgs), real)  # torchmetrics' update wrapper has counted this call

    def forward(self, imgs: Tensor, real: bool) -> Tensor:  # type: ignore[override]
        """torchmetrics' ``forward``: add the batch, and return the distance of the batch's own state
        (this batch in its set, and the real set kept by ``reset_real_features=False``), computed without
        synchronising. As in torchmetrics it raises when that state has fewer than 2 images in a set.
        Unlike torchmetrics' FID, the kept real set is not counted twice in the accumulated state."""
        feats = self.extract(imgs)
        saved = {name: getattr(self, name).clone() for name in self._defaults}
        saved_flags, saved_count = dict(self._shift_set), self._update_count
        to_sync, self._to_sync = self._to_sync, self.dist_sync_on_step
        try:
            self.reset()
            self.update_features(feats, real)
            value = self.compute()
        finally:
            self._to_sync = to_sync
            for name, tensor in saved.items():
                setattr(self, name, tensor)
            self._shift_set, self._update_count, self._computed = saved_flags, saved_count, None
        self.update_features(feats, real)
        return value

    # ------------------------------------------------------------------ torchmetrics' names
    @property
    def inception(self) -> nn.Module:
        """torchmetrics' name of the network (the same module as :attr:`extractor`)."""
        return self.extractor

    def _torchmetrics_state(self, s: str) -> tuple[Tensor, Tensor, Tensor]:
        """``(features_sum, features_cov_sum, num_samples)`` of one set in torchmetrics' form, from the
        shifted float64 moments (this process's, as torchmetrics' states are between syncs)."""
        shift, s1, s2, n = self._merged(s)
        total = s1 + n * shift
        cov_sum = s2 + torch.outer(shift, s1) + torch.outer(s1, shift) + n * torch.outer(shift, shift)
        return total, cov_sum, n.round().to(torch.long)

    real_features_sum = property(lambda self: self._torchmetrics_state("real")[0],
                                 doc="torchmetrics' state: the sum of the real features (float64).")
    real_features_cov_sum = property(lambda self: self._torchmetrics_state("real")[1],
                                     doc="torchmetrics' state: the sum of the real features' outer products.")
    real_features_num_samples = property(lambda self: self._torchmetrics_state("real")[2],
                                         doc="torchmetrics' state: the number of real images (int64).")
    fake_features_sum = property(lambda self: self._torchmetrics_state("fake")[0],
                                 doc="torchmetrics' state: the sum of the generated features (float64).")
    fake_features_cov_sum = property(lambda self: self._torchmetrics_state("fake")[1],
                                     doc="torchmetrics' state: the sum of the generated features' outer products.")
    fake_features_num_samples = property(lambda self: self._torchmetrics_state("fake")[2],
                                         doc="torchmetrics' state: the number of generated images (int64).")

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any, **kwargs: Any) -> None:
        """Also reads a checkpoint of torchmetrics' ``FrechetInceptionDistance``: its ``*_features_sum``,
        ``*_features_cov_sum`` and ``*_features_num_samples`` become the moments (shift 0), and its
        ``inception.*`` weights load into :attr:`extractor`."""
        from facefd.metrics.extractors import InceptionFID

        for s in _SETS:
            keys = [f"{prefix}{s}_features_{k}" for k in ("sum", "cov_sum", "num_samples")]
            if all(k in state_dict for k in keys):
                total, cov_sum, n = (state_dict.pop(k) for k in keys)
                d = self.num_features
                moments = torch.zeros(d + 1, d + 1, dtype=torch.float64, device=self.device)
                moments[:d, :d], moments[:d, d], moments[d, :d] = cov_sum.double(), total.double(), total.double()
                moments[d, d] = float(n)
                setattr(self, f"{s}_shift", torch.zeros(d, dtype=torch.float64, device=self.device))
                setattr(self, f"{s}_moments", moments)
                self._shift_set[s] = bool(n > 0)
        inner = "net." if isinstance(self.extractor, InceptionFID) else ""
        for key in [k for k in state_dict if k.startswith(prefix + "inception.")]:
            state_dict[prefix + "extractor." + inner + key[len(prefix + "inception."):]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def update_features(self, feats: Tensor, real: bool) -> None:
        """Accumulate precomputed features ``[N, num_features]`` (shape checked, cast to float64)."""
        self._accumulate(feats, real)
        self._computed = None  # what torchmetrics' update wrapper does: a cached compute() is stale now
        self._update_count += 1

    def _accumulate(self, feats: Tensor, real: bool) -> None:
        s = "real" if real else "fake"
        if real and self._reference is not None:
            raise RuntimeError("reference statistics are loaded: real images are not accumulated "
                               "(call clear_reference() to stream real images again)")
        if feats.ndim != 2 or feats.shape[1] != self.num_features:
            raise ValueError(f"features must be [N, {self.num_features}], got {tuple(feats.shape)}")
        shift = getattr(self, f"{s}_shift")
        if not self._shift_set[s]:
            shift.copy_(feats.to(torch.float64).mean(0))
            self._shift_set[s] = True
        rows = self._rows(feats.shape[0], shift.device)
        torch.sub(feats, shift, out=rows[:, :-1])  # cast to float64 and centre in one kernel
        getattr(self, f"{s}_moments").addmm_(rows.T, rows)
        if self.reservoir_size:
            keys = torch.rand(feats.shape[0], generator=self._keys(s), dtype=torch.float64)
            reservoir_add(getattr(self, f"{s}_res_rows"), getattr(self, f"{s}_res_keys"), feats.float(), keys)

    def _rows(self, n: int, device: torch.device) -> Tensor:
        """A reusable [n, D + 1] float64 buffer whose last column is 1 (so one GEMM also sums and counts)."""
        buf = self._buffer
        if buf is None or buf.shape[0] < n or buf.device != device:
            buf = torch.ones(max(n, 1), self.num_features + 1, dtype=torch.float64, device=device)
            self._buffer = buf
        return buf[:n]

    def _keys(self, s: str) -> torch.Generator:
        """Key stream of one set's reservoir: its own per set and per process."""
        if s not in self._key_generators:
            import torch.distributed as dist

            rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
            seed = self.reservoir_seed * 100_003 + 2 * rank + _SETS.index(s)
            self._key_generators[s] = torch.Generator().manual_seed(seed)
        return self._key_generators[s]

    # ----------------------------------------------------------------------------- statistics
    def _merged(self, s: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(shift, sum, outer, n) of all processes re-based to the first process's shift."""
        return merge_moments(getattr(self, f"{s}_shift"), getattr(self, f"{s}_moments"), self.num_features)

    def statistics(self, real: bool) -> GaussianStats:
        """Mean and unbiased covariance of one set (synchronised when called inside ``compute``)."""
        if real and self._reference is not None:
            return self._reference
        s = "real" if real else "fake"
        # A NaN/inf feature poisons the running sums for good: checking them here costs nothing per update.
        if not torch.isfinite(getattr(self, f"{s}_moments")).all():
            raise ValueError(f"NaN/inf features were accumulated in the {s} set; check the images and the extractor "
                             "weights (reset() clears the metric)")
        shift, s1, s2, n = self._merged(s)
        count = int(n.item())
        if count < 2:
            raise RuntimeError("More than one sample is required for both the real and fake distributed to compute "
                               f"FID (the {s} set has {count})")
        mean = shift + s1 / n
        cov = (s2 - torch.outer(s1, s1) / n) / (n - 1)
        return GaussianStats(mean, (cov + cov.T) / 2, count, self.fingerprint)

    def compute(self) -> Tensor:
        return self._distance()

    def _distance(self) -> Tensor:
        """The distance of the current (already synchronised, inside compute) states."""
        real, fake = self.statistics(True), self.statistics(False)
        self.last_counts = {"real": real.count, "fake": fake.count}
        factor = self._reference_factor if self._reference is not None else None
        fd = frechet_distance(real.mean.to(fake.mean), real.cov.to(fake.cov), fake.mean, fake.cov,
                              factor1=None if factor is None else factor.to(fake.cov))
        return torch.tensor(fd, dtype=torch.float64, device=fake.mean.device)

    # ----------------------------------------------------------------------------- sample-based extras
    def features(self, real: bool) -> Tensor:
        """The reservoir sample of one set (all processes' merged when called under ``sync_context``)."""
        if not self.reservoir_size:
            raise RuntimeError("this needs stored features: create the metric with reservoir_size > 0")
        s = "real" if real else "fake"
        if real and self._reference is not None:
            raise RuntimeError("reference statistics are loaded: there are no real features for this "
                               "(stream real images with a reservoir instead)")
        return reservoir_merge(getattr(self, f"{s}_res_rows"), getattr(self, f"{s}_res_keys"))

    @staticmethod
    def _gaussian(rows: Tensor) -> tuple[Tensor, Tensor]:
        x = rows.double()
        return x.mean(0), torch.cov(x.T).reshape(x.shape[1], x.shape[1])

    def compute_ci(self, n_boot: int = 100, alpha: float = 0.05, seed: int = 0) -> dict[str, float]:
        """Bootstrap percentile interval of the distance: the generated features are resampled with
        replacement (and the real ones too unless a reference file is fixed). Exact when the reservoir
        holds every sample (``reservoir_size >= N``); otherwise it is the interval at the reservoir's N."""
        with self.sync_context(should_sync=True, should_unsync=True):
            value = float(self._distance())
            fake = self.features(False)
            real = None if self._reference is not None else self.features(True)
            ref = self.statistics(True)
            factor = self._reference_factor if real is None else None
            g = torch.Generator().manual_seed(seed)
            boots = []
            for _ in range(n_boot):
                mf, cf = self._gaussian(fake[torch.randint(len(fake), (len(fake),), generator=g).to(fake.device)])
                if real is None:
                    mr, cr = ref.mean.to(mf), ref.cov.to(cf)
                else:
                    mr, cr = self._gaussian(real[torch.randint(len(real), (len(real),), generator=g).to(real.device)])
                boots.append(frechet_distance(mr, cr, mf, cf, factor1=None if factor is None else factor.to(cf)))
        lo, hi = torch.tensor(boots, dtype=torch.float64).quantile(torch.tensor([alpha / 2, 1 - alpha / 2],
                                                                                 dtype=torch.float64)).tolist()
        return {"fd": value, "low": lo, "high": hi, "alpha": alpha, "n_boot": n_boot, "n_fake_resampled": len(fake)}

    def compute_fd_infinity(self, num_points: int = 15, min_size: Optional[int] = None, seed: int = 0) -> dict:
        """FD∞ of Chong & Forsyth (2020): FD of generated subsets of ~15 sizes against the full real
        statistics, a line fitted against 1/N, and its intercept (the bias-free value at N = ∞)."""
        with self.sync_context(should_sync=True, should_unsync=True):
            fake = self.features(False)
            ref = self.statistics(True)
            n = len(fake)
            lo = min_size or max(2, n // 5)
            if n < 3 or lo >= n:
                raise RuntimeError(f"FD∞ needs a reservoir of generated features larger than min_size={lo} (has {n})")
            sizes = sorted({int(round(1 / v)) for v in torch.linspace(1 / lo, 1 / n, num_points).tolist()})
            factor = self._reference_factor if self._reference is not None else psd_factor(ref.cov.double())
            g = torch.Generator().manual_seed(seed)
            values = []
            for size in sizes:
                mf, cf = self._gaussian(fake[torch.randperm(n, generator=g)[:size].to(fake.device)])
                values.append(frechet_distance(ref.mean.to(mf), ref.cov.to(cf), mf, cf, factor1=factor.to(cf)))
        inv = torch.tensor([1.0 / s for s in sizes], dtype=torch.float64)
        design = torch.stack([torch.ones_like(inv), inv], dim=1)
        intercept, slope = torch.linalg.lstsq(design, torch.tensor(values, dtype=torch.float64)[:, None]).solution[:, 0]
        return {"fd_infinity": float(intercept), "slope": float(slope), "sizes": sizes, "values": values}

    def compute_kid(self, subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> dict[str, float]:
        """KID: unbiased polynomial-kernel MMD² over random subsets of the two reservoirs."""
        with self.sync_context(should_sync=True, should_unsync=True):
            mean, std = kid(self.features(True), self.features(False), subsets, subset_size,
                            torch.Generator().manual_seed(seed))
        return {"kid_mean": mean, "kid_std": std}

    def compute_prdc(self, k: int = 5) -> dict[str, float]:
        """Precision/recall/density/coverage (k-NN manifolds) of the two reservoirs."""
        with self.sync_context(should_sync=True, should_unsync=True):
            return prdc(self.features(True), self.features(False), k)

    @property
    def counts(self) -> dict[str, int]:
        """Sample counts of this process (FD depends strongly on N: report it with the value)."""
        d = self.num_features
        real = self._reference.count if self._reference is not None else int(self.real_moments[..., d, d].sum().item())
        return {"real": real, "fake": int(self.fake_moments[..., d, d].sum().item())}

    # ----------------------------------------------------------------------------- reference files
    def save_reference(self, path: str | Path, metadata: Optional[dict[str, Any]] = None,
                       format: str = "facefd") -> Path:
        """Save the real set's statistics (with the extractor fingerprint) to an ``.npz`` file;
        ``format="pytorch-fid"`` writes ``mu``/``sigma`` for pytorch-fid and clean-fid (fingerprint kept)."""
        stats = self.statistics(True)
        card = getattr(self.extractor, "card", {}) or {}
        meta = {"extractor": {k: card.get(k) for k in ("backbone", "input_size", "mean", "std", "resize",
                                                       "preprocessing_version") if k in card},
                **(metadata or {})}
        return GaussianStats(stats.mean, stats.cov, stats.count, self.fingerprint, meta).save(path, format=format)

    def load_reference(self, path: str | Path, assume_extractor: bool = False) -> None:
        """Use saved real statistics; the extractor must be the one that made them. A pytorch-fid / clean-fid
        file (``mu``/``sigma``, no fingerprint) is read only with ``assume_extractor=True``: you state it was
        made with this extractor and the same preprocessing."""
        stats = GaussianStats.load(path, extractor=self.fingerprint if assume_extractor else None)
        self.use_reference(stats, source=str(path))

    def use_reference(self, stats: GaussianStats, source: str = "the statistics") -> None:
        """Use ``stats`` as the fixed real set; they must come from this extractor (width and fingerprint).

        Raises:
            StatisticsFileError: naming ``source``, for another width or another extractor.
        """
        if stats.mean.shape[0] != self.num_features:
            raise StatisticsFileError(f"{source} holds {stats.mean.shape[0]}-d statistics; this extractor gives "
                                      f"{self.num_features}-d features")
        if stats.fingerprint != self.fingerprint:
            raise StatisticsFileError(
                f"{source} was computed with another extractor (fingerprint {stats.fingerprint[:12] or 'none'}..., "
                f"this one is {self.fingerprint[:12]}...); recompute the statistics with this extractor")
        device = self.fake_moments.device
        self._reference = GaussianStats(stats.mean.to(device), stats.cov.to(device), stats.count, stats.fingerprint,
                                        stats.metadata)
        self._reference_factor = psd_factor(self._reference.cov)

    def clear_reference(self) -> None:
        self._reference, self._reference_factor = None, None

    # ----------------------------------------------------------------------------- housekeeping
    def merge_state(self, incoming_state: dict[str, Any] | Metric) -> None:
        """Add another metric's (or state dict's) images to this one, exactly (moments re-based to one
        shift), leaving the states in their per-process form so that ``update`` goes on working."""
        if isinstance(incoming_state, Metric):
            if not isinstance(incoming_state, FrechetDistance) or incoming_state.fingerprint != self.fingerprint:
                raise ValueError("merge_state needs a FrechetDistance with the same extractor")
            incoming_state = {name: getattr(incoming_state, name) for name in self._defaults}
        self._computed = None
        for s in _SETS:
            shift = torch.stack([getattr(self, f"{s}_shift"), incoming_state[f"{s}_shift"].to(self.device)])
            moments = torch.stack([getattr(self, f"{s}_moments"), incoming_state[f"{s}_moments"].to(self.device)])
            c, s1, s2, n = merge_moments(shift, moments, self.num_features)
            d = self.num_features
            merged = torch.empty_like(moments[0])
            merged[:d, :d], merged[:d, d], merged[d, :d], merged[d, d] = s2, s1, s1, n
            setattr(self, f"{s}_shift", c.clone())
            setattr(self, f"{s}_moments", merged)
            self._shift_set[s] = self._shift_set[s] or bool(n > 0)
            if self.reservoir_size:
                rows = torch.stack([getattr(self, f"{s}_res_rows"), incoming_state[f"{s}_res_rows"].to(self.device)])
                keys = torch.stack([getattr(self, f"{s}_res_keys"), incoming_state[f"{s}_res_keys"].to(self.device)])
                order = torch.topk(keys.reshape(-1), self.reservoir_size, largest=False).indices
                setattr(self, f"{s}_res_rows", rows.reshape(-1, d)[order].clone())
                setattr(self, f"{s}_res_keys", keys.reshape(-1)[order].clone())

    def plot(self, val: Optional[Tensor] = None, ax: Any = None) -> Any:
        """Plot the distance (``compute()`` when ``val`` is None), or a sequence of values, with
        torchmetrics' plotting helper; returns ``(figure, axes)``."""
        return self._plot(val, ax)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """A copy made by pickling owns its accumulators. ``strategy="ddp_spawn"`` sends the module to each
        process with torch's multiprocessing pickler, which moves CPU tensors to shared memory: without
        this, every rank added into the same storage (racing, and counted twice by the gather)."""
        super().__setstate__(state)
        for name, default in list(self._defaults.items()):
            if isinstance(default, Tensor):
                self._defaults[name] = default.clone()
            value = getattr(self, name)
            if isinstance(value, Tensor):
                setattr(self, name, value.clone())
        self._buffer = None

    def reset(self) -> None:
        keep = None
        if not self.reset_real_features:
            names = ("shift", "moments") + (("res_rows", "res_keys") if self.reservoir_size else ())
            keep = {k: getattr(self, f"real_{k}").clone() for k in names}
        super().reset()
        self._shift_set = {"real": keep is not None and self._shift_set["real"], "fake": False}
        if keep is not None:
            for k, v in keep.items():
                setattr(self, f"real_{k}", v)

    def set_dtype(self, dst_type: torch.dtype | str) -> "FrechetDistance":
        """torchmetrics' ``set_dtype``: the network computes in ``dst_type`` (the Inception's ``_dtype``
        too, as torchmetrics sets it); the states stay float64 moments (their precision)."""
        dtype = getattr(torch, dst_type) if isinstance(dst_type, str) else dst_type
        self.extractor.to(dtype=dtype)
        for module in self.extractor.modules():
            if hasattr(module, "_dtype") or type(module).__name__ == "NoTrainInceptionV3":
                module._dtype = dtype
        return self

    def half(self) -> "FrechetDistance":  # torchmetrics: casts of the parent do not reach a metric
        return self

    def float(self) -> "FrechetDistance":
        return self

    def double(self) -> "FrechetDistance":
        return self

    def type(self, dst_type: Any) -> "FrechetDistance":
        return self

    def _apply(self, fn, *args, **kwargs):
        if not self._dtype_convert and any(name in str(fn) for name in _DTYPE_CASTS):
            return self  # a parent's .half()/.double()/...: only set_dtype changes the network's dtype
        out = super()._apply(fn, *args, **kwargs)
        if self._reference is not None:  # follow the device of the states
            dev = self.fake_moments.device
            self._reference.mean, self._reference.cov = self._reference.mean.to(dev), self._reference.cov.to(dev)
            if self._reference_factor is not None:
                self._reference_factor = self._reference_factor.to(dev)
        return out


class FDD(FrechetDistance):
    """Fréchet distance on the DINO-faces extractor exported by training (``extractor.safetensors``).

    Args:
        extractor_path: the exported extractor (``.safetensors``, its ``.json`` card, or their folder).
        trust_code: ``True`` lets the card name a backbone builder outside the allow-list (see
            :func:`facefd.load_extractor`); ``None`` follows :func:`facefd.trusting_code`.
        **kwargs: the other arguments of :class:`FrechetDistance` (``normalize``, ``reset_real_features``...).

    Raises:
        facefd.models.extractor.ExtractorFileError: for a missing or malformed extractor file.

    Example:
        >>> import torch
        >>> from facefd import FDD
        >>> fdd = FDD(tiny_extractor, normalize=True)  # the extractor train.py exports
        >>> fdd.update(torch.rand(8, 3, 32, 32), real=True)
        >>> fdd.update(torch.rand(8, 3, 32, 32), real=False)
        >>> float(fdd.compute()) >= 0
        True
    """

    def __init__(self, extractor_path: str | Path, trust_code: Optional[bool] = None, **kwargs: Any) -> None:
        from facefd.models.extractor import load_extractor

        super().__init__(load_extractor(extractor_path, trust_code=trust_code), **kwargs)
