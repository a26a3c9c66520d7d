"""The text-to-image side: a diffusers Stable Diffusion pipeline with the paper's scheduler, and one
generation call for a batch of prompts with a seed per image.

Paper recipe (Piano et al.): Realistic Vision v5.1 (a Stable Diffusion 1.5 derivative) with the
sd-vae-ft-mse VAE, DPM++ SDE Karras, 15 steps, classifier-free guidance with the negative prompt,
512 x 512. "DPM++ SDE Karras" is ``DPMSolverSDEScheduler(use_karras_sigmas=True)`` (k-diffusion's
sample_dpmpp_sde; needs torchsde). diffusers' scheduler table lists the multistep scheduler under
that name, which is k-diffusion's "DPM++ 2M SDE Karras": offered here as the faster option
``scheduler=dpmpp_2m_sde_karras``.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from PIL import Image

from facefd.utils.device import resolve_device

log = logging.getLogger(__name__)

SCHEDULERS = ("dpmpp_sde_karras", "dpmpp_2m_sde_karras", "default")


def _need_diffusers():
    try:
        import diffusers  # noqa: F401
    except ImportError as exc:
        raise ImportError('anonymization needs diffusers and transformers: pip install -e ".[anonymize]"') from exc


def make_scheduler(name: str, config: Any):
    """A scheduler by name, configured from the pipeline's own scheduler config."""
    _need_diffusers()
    if name == "dpmpp_sde_karras":
        try:
            import torchsde  # noqa: F401
        except ImportError as exc:
            raise ImportError('DPM++ SDE Karras needs torchsde: pip install -e ".[anonymize]"') from exc
        from diffusers import DPMSolverSDEScheduler

        return DPMSolverSDEScheduler.from_config(config, use_karras_sigmas=True)
    if name == "dpmpp_2m_sde_karras":
        from diffusers import DPMSolverMultistepScheduler

        return DPMSolverMultistepScheduler.from_config(config, algorithm_type="sde-dpmsolver++", use_karras_sigmas=True)
    raise ValueError(f"unknown scheduler {name!r}; choose one of {SCHEDULERS}")


def _from_pretrained(cls: Any, source: str, what: str, local_files_only: Optional[bool], **kwargs: Any):
    """``cls.from_pretrained`` of a local folder, or of a hub id through diffusers' own loader and cache:
    it downloads unless ``local_files_only`` or the offline switches (``HF_HUB_OFFLINE``, ``FACEFD_OFFLINE``)
    say no, as diffusers does."""
    from facefd.utils.weights import is_offline

    if local_files_only is None:
        local_files_only = is_offline()
    path = Path(source).expanduser()
    try:
        return cls.from_pretrained(str(path) if path.exists() else source,
                                   local_files_only=local_files_only and not path.exists(), **kwargs)
    except (OSError, ValueError) as exc:
        if path.exists():
            raise FileNotFoundError(f"{what} folder {path} is not a diffusers model folder ({exc})") from exc
        raise FileNotFoundError(
            f"{what} {source!r} is not a local folder and could not be loaded from the Hugging Face hub or its cache"
            f"{' (offline)' if local_files_only else ''}: download it once (huggingface-cli download {source}) or "
            f"point to a diffusers folder ({type(exc).__name__}: {str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''})") from exc


def load_pipeline(model: str, vae: Optional[str] = None, scheduler: str = "dpmpp_sde_karras", dtype: str = "auto",
                  device: str = "auto", local_files_only: Optional[bool] = None, attention_slicing: bool = False,
                  vae_slicing: bool = False, cpu_offload: bool = False, model_revision: Optional[str] = None,
                  vae_revision: Optional[str] = None):
    """A ``StableDiffusionPipeline`` from a local folder or a hub id, with the named scheduler, fp16 on
    GPU (``dtype=auto``), and the memory options asked for. Hub ids download through diffusers' loader
    and cache unless ``local_files_only=True`` or ``HF_HUB_OFFLINE``/``FACEFD_OFFLINE`` is set
    (``None``: decided by those switches, as diffusers does); ``model_revision`` / ``vae_revision`` (a
    commit hash) pin what the hub serves."""
    _need_diffusers()
    from diffusers import AutoencoderKL, StableDiffusionPipeline

    dev = resolve_device(device)
    torch_dtype = (torch.float16 if dev.type == "cuda" else torch.float32) if dtype == "auto" else getattr(torch, dtype)
    kwargs: dict[str, Any] = dict(torch_dtype=torch_dtype, safety_checker=None, requires_safety_checker=False)
    if vae:
        kwargs["vae"] = _from_pretrained(AutoencoderKL, vae, "VAE", local_files_only, torch_dtype=torch_dtype,
                                         **({"revision": vae_revision} if vae_revision else {}))
    if model_revision:
        kwargs["revision"] = model_revision
    pipe = _from_pretrained(StableDiffusionPipeline, model, "model", local_files_only, **kwargs)
    if scheduler != "default":
        pipe.scheduler = make_scheduler(scheduler, pipe.scheduler.config)
    if attention_slicing:
        pipe.enable_attention_slicing()
    if vae_slicing:
        pipe.vae.enable_slicing()
    if cpu_offload and dev.type == "cuda":
        pipe.enable_model_cpu_offload()
    else:
        pipe.to(dev)
    pipe.set_progress_bar_config(disable=True)
    return pipe


class TextToImage:
    """One generation call for a batch: positive and negative prompts and one seed per image.

    The latents come from a ``torch.Generator`` per image; DPM++ SDE draws its Brownian noise from
    ``noise_sampler_seed`` (it ignores ``generator``), set here per call to the batch's seeds, so an
    image depends only on its own seed and prompts, not on the batch it was generated in.
    ``long_prompts="chunk"`` encodes prompts over 77 tokens in chunks with compel (padded to equal
    length); ``"truncate"`` expects prompts already fitted (see :func:`build_prompts`).

    What is guaranteed: the same seeds, prompts and batch give the same images. An image generated
    alone and the same image inside a batch agree only up to floating-point summation order (PyTorch's
    batched kernels may add in another order), unless ``reproducible=True``: then every image is
    generated in its own pipeline call, so it is bit-identical whatever batch it was asked for in
    (slower on a GPU, where batching pays).
    """

    def __init__(self, pipe: Any, steps: int = 15, guidance_scale: float = 7.0, size: int = 512,
                 long_prompts: str = "chunk", reproducible: bool = False) -> None:
        self.pipe, self.steps, self.guidance_scale, self.size = pipe, steps, guidance_scale, size
        self.long_prompts, self.reproducible = long_prompts, reproducible
        self._compel = None

    @property
    def scheduler_name(self) -> str:
        return type(self.pipe.scheduler).__name__

    def _embeddings(self, positives: Sequence[str], negatives: Sequence[str]) -> dict[str, torch.Tensor]:
        if self._compel is None:
            try:
                from compel import Compel
            except ImportError as exc:
                raise ImportError('long_prompts=chunk needs compel: pip install -e ".[anonymize]" '
                                  "(or long_prompts=truncate)") from exc
            self._compel = Compel(tokenizer=self.pipe.tokenizer, text_encoder=self.pipe.text_encoder,
                                  truncate_long_prompts=False)
        pos, neg = self._compel(list(positives)), self._compel(list(negatives))
        pos, neg = self._compel.pad_conditioning_tensors_to_same_length([pos, neg])
        return {"prompt_embeds": pos, "negative_prompt_embeds": neg}

    @torch.no_grad()
    def __call__(self, positives: Sequence[str], negatives: Sequence[str], seeds: Sequence[int],
                 **extra: Any) -> list[Image.Image]:
        if not (len(positives) == len(negatives) == len(seeds)):
            raise ValueError("one positive prompt, one negative prompt and one seed per image")
        if self.reproducible and len(seeds) > 1:
            return [img for p, n, s in zip(positives, negatives, seeds) for img in self([p], [n], [s], **extra)]
        generators = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]
        if hasattr(self.pipe.scheduler, "noise_sampler_seed"):
            self.pipe.scheduler.noise_sampler_seed = [int(s) for s in seeds] if len(seeds) > 1 else int(seeds[0])
        text = (self._embeddings(positives, negatives) if self.long_prompts == "chunk"
                else {"prompt": list(positives), "negative_prompt": list(negatives)})
        out = self.pipe(**text, num_inference_steps=self.steps, guidance_scale=self.guidance_scale,
                        height=self.size, width=self.size, generator=generators, output_type="pil", **extra)
        return list(out.images)
