"""``AttributePredictor``: attribute probabilities of face images from an extractor plus probe heads.

The heads file is ``probe_heads.safetensors`` (written by ``train.py model=probe``): the head weights,
with the head's card (attributes, categories, architecture, the extractor fingerprint) in the
safetensors metadata. A Lightning ``.ckpt`` of a ``ProbeModule`` is accepted too.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from facefd.data.images import load_rgb
from facefd.data.tensors import pil_to_tensor
from facefd.data.tensors import resize_square
from facefd.models.extractor import load_extractor, module_fingerprint
from facefd.models.probe.heads import HEAD_FORMAT, ProbeHeads
from facefd.utils.errors import UserError
from facefd.utils.files import atomic_path


class HeadsFileError(UserError, ValueError):
    """A missing or malformed probe heads file, or one trained on another extractor."""


def save_heads(heads: ProbeHeads, path: str | Path, card: Optional[dict[str, Any]] = None) -> Path:
    """Write the heads and their card atomically."""
    state = {k: v.detach().cpu().contiguous() for k, v in heads.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"card": json.dumps(card or heads.card())})
    return Path(path)


def load_heads(path: str | Path) -> tuple[ProbeHeads, dict[str, Any]]:
    """Heads and card from ``probe_heads.safetensors`` or a ``ProbeModule`` checkpoint."""
    path = Path(path).expanduser()
    if not path.exists():
        raise HeadsFileError(f"probe heads file {path} not found: train one with `python train.py model=probe ...` "
                             "(it writes outputs/.../probe/probe_heads.safetensors)")
    try:
        if path.suffix == ".ckpt":
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
            card = ckpt.get("probe_card") if isinstance(ckpt, dict) else None
            if card is None:
                raise HeadsFileError(f"{path} is not a ProbeModule checkpoint (no probe_card)")
            state = {k[len("heads."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("heads.")}
        else:
            with safe_open(str(path), "pt") as fh:
                meta = fh.metadata() or {}
            if "card" not in meta:
                raise HeadsFileError(f"{path} has no probe card in its metadata: not a facefd probe heads file")
            card = json.loads(meta["card"])
            state = load_file(str(path))
        if not isinstance(card, dict):
            raise HeadsFileError(f"{path}: the probe card is JSON {type(card).__name__}, not an object")
        if card.get("format") != HEAD_FORMAT:
            raise HeadsFileError(f"{path}: unknown heads format {card.get('format')!r}")
        heads = ProbeHeads.from_card(card)
        heads.load_state_dict(state)
    except HeadsFileError:
        raise
    except KeyError as exc:
        raise HeadsFileError(f"{path}: the probe card lacks the field {exc.args[0]!r}") from None
    except Exception as exc:  # noqa: BLE001 - safetensors, JSON, pickle refusals, shape mismatches: one line each
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise HeadsFileError(f"{path}: not a usable probe heads file ({type(exc).__name__}: {first})") from None
    return heads.eval(), card


ImageInput = torch.Tensor | Image.Image | str | Path


class AttributePredictor(nn.Module):
    """``predict(images)`` -> ``{attribute: [N] probabilities, category: [N, K] probabilities}``.

    Args:
        extractor: the feature extractor the heads were trained on, or a path to an extractor file.
        heads_checkpoint: ``probe_heads.safetensors`` or a ``ProbeModule`` ``.ckpt``.
        check_extractor: refuse heads trained on another extractor (compared by fingerprint).
        trust_code: an extractor file's card may name a builder outside the allow-list (``load_extractor``).
        batch_size: images per forward pass.

    Raises:
        HeadsFileError: a heads file that is missing, malformed, or trained on another extractor.

    Example:
        >>> import torch
        >>> from facefd import AttributePredictor
        >>> predictor = AttributePredictor(tiny_extractor, tiny_heads)
        >>> probabilities = predictor.predict(torch.rand(3, 3, 32, 32))
        >>> sorted(probabilities), tuple(probabilities["Male"].shape)
        (['Male', 'Young'], (3,))
    """

    def __init__(self, extractor: nn.Module | str | Path, heads_checkpoint: str | Path, batch_size: int = 64,
                 check_extractor: bool = True, trust_code: Optional[bool] = None) -> None:
        super().__init__()
        self.extractor = (load_extractor(extractor, trust_code=trust_code) if isinstance(extractor, (str, Path))
                          else extractor)
        self.heads, self.card = load_heads(heads_checkpoint)
        expected = self.card.get("extractor_fingerprint")
        if check_extractor and expected and module_fingerprint(self.extractor) != expected:
            raise HeadsFileError(f"{heads_checkpoint} was trained on another extractor than the one given "
                                 "(fingerprints differ); pass the extractor it was trained on")
        self.batch_size = batch_size
        self.eval()

    @property
    def attribute_names(self) -> list[str]:
        return self.heads.attribute_names

    @property
    def categories(self) -> dict[str, list[str]]:
        return self.heads.categories

    def _as_batch(self, images: ImageInput | Sequence[ImageInput]) -> torch.Tensor:
        """Float [N, 3, S, S] in [0, 1] at the extractor's input size from tensors, PIL images or paths."""
        if isinstance(images, torch.Tensor):
            x = images if images.ndim == 4 else images[None]
            return x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        items = [images] if isinstance(images, (Image.Image, str, Path)) else list(images)
        size = getattr(self.extractor, "input_size", None)
        tensors = []
        for item in items:
            if isinstance(item, torch.Tensor):
                item = item.float() / 255.0 if item.dtype == torch.uint8 else item.float()
                tensors.append(resize_square(item, size) if size else item)
            else:
                tensors.append(pil_to_tensor(item if isinstance(item, Image.Image) else load_rgb(item), size))
        return torch.stack(tensors)

    @torch.no_grad()
    def predict(self, images: ImageInput | Sequence[ImageInput]) -> dict[str, torch.Tensor]:
        batch = self._as_batch(images)
        device = next(self.heads.parameters()).device
        binary_out, block_out = [], {name: [] for name in self.categories}
        for start in range(0, batch.shape[0], self.batch_size):
            feats = self.extractor(batch[start:start + self.batch_size].to(device))
            binary, blocks = self.heads.split(self.heads(feats.reshape(feats.shape[0], -1).float()))
            binary_out.append(binary.sigmoid().cpu())
            for name, logits in blocks.items():
                block_out[name].append(logits.softmax(-1).cpu())
        binary = torch.cat(binary_out)
        out: dict[str, torch.Tensor] = {name: binary[:, i] for i, name in enumerate(self.attribute_names)}
        out.update({name: torch.cat(parts) for name, parts in block_out.items()})
        return out

    def predict_records(self, images: ImageInput | Sequence[ImageInput]) -> list[dict[str, Any]]:
        """One dict per image: ``{attribute: p, category: {class: p}}`` (what the anonymizer's prompts use)."""
        probs = self.predict(images)
        n = next(iter(probs.values())).shape[0]
        records = []
        for i in range(n):
            rec: dict[str, Any] = {name: float(probs[name][i]) for name in self.attribute_names}
            for name, classes in self.categories.items():
                rec[name] = {c: float(p) for c, p in zip(classes, probs[name][i])}
            records.append(rec)
        return records
