"""Folder -> folder anonymization (Piano et al.): biggest face -> attributes -> Algorithm 1 prompts ->
text-to-image -> a new portrait, or the new face blended back into the photo.

Data safety: inputs are only read (the output folder may not be the input folder or inside it);
every output file is written atomically, from pixels only (no EXIF, GPS, XMP, ICC or text chunks);
two inputs that would share an output name are refused before any work; ``manifest.jsonl`` gets one
line per image (source, face box, attributes, prompts, dropped attributes, seed, model, scheduler,
steps, status, output size and sha256); a re-run redoes any image whose output is missing or does not
match its recorded size and sha256, and reads past a line cut off by a killed run; an unreadable
image is recorded as an error and the run goes on. An image where no face is found (a real face the
detector missed, too) is not published by default: ``on_no_face=skip`` writes nothing for it,
``blur`` writes it blurred beyond recognition, ``copy`` writes its pixels unchanged.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from PIL import Image, ImageFilter
from tqdm.auto import tqdm

from facefd.models.faces import Box, FaceDetector, biggest_face, expand_square, paste_face
from facefd.anonymize.prompts import CLIP_CONTENT_TOKENS, Prompts, build_prompts, clip_token_counter
from facefd.data.images import list_images, load_rgb
from facefd.data.manifest import ManifestError, read_manifest, record_path
from facefd.utils.errors import UserError
from facefd.utils.files import atomic_path, json_safe
from facefd.utils.locks import folder_lock

log = logging.getLogger(__name__)

MODES = ("portrait", "paste")
FINISHED = ("anonymized", "no_face", "residual_face")
#: What to write for an image without a detected face: nothing (default), a blurred copy, or the pixels.
ON_NO_FACE = ("skip", "blur", "copy")


class OutputNameClashError(UserError, ValueError):
    """Two inputs would be written to the same output file."""


def save_clean(image: Image.Image, path: Path) -> dict[str, Any]:
    """Write ``image``'s pixels only (a fresh image: no EXIF, GPS, XMP, ICC profile or text chunks),
    atomically; return the ``output_size``/``output_sha256`` the manifest keeps for resume checks."""
    clean = Image.frombytes(image.mode, image.size, image.tobytes())
    fmt = _pil_format(path)
    with atomic_path(path) as tmp:
        clean.save(tmp, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    data = path.read_bytes()
    return {"output_size": len(data), "output_sha256": hashlib.sha256(data).hexdigest()}


def output_intact(rec: dict[str, Any]) -> bool:
    """The record's output file exists with the size and sha256 written when it was finished."""
    path = Path(rec.get("output") or "")
    if not rec.get("output") or not path.is_file() or path.stat().st_size != rec.get("output_size"):
        return False
    return hashlib.sha256(path.read_bytes()).hexdigest() == rec.get("output_sha256")


def blur_beyond_recognition(image: Image.Image) -> Image.Image:
    """A whole-image Gaussian blur with a radius of 1/16 of the longer side: no face survives it."""
    return image.filter(ImageFilter.GaussianBlur(radius=max(image.size) / 16))


def seed_for(run_seed: int, key: str) -> int:
    """A 31-bit seed from the run seed and an image's relative path (and face index)."""
    # surrogateescape: a file name with bytes that are not UTF-8 hashes as its bytes
    return int.from_bytes(hashlib.sha256(f"{run_seed}:{key}".encode("utf-8", "surrogateescape")).digest()[:4],
                          "little") & 0x7FFFFFFF


@dataclass
class PrivacyGuard:
    """Re-generate (new seed, up to ``max_tries`` in all) while the new face is closer to the original
    than ``threshold`` in a face-identity embedding (dlib: 0.6 separates people)."""

    embedder: Any
    threshold: float = 0.6
    max_tries: int = 3


@dataclass
class _FaceJob:
    index: int
    box: Box
    crop_box: Box
    attributes: dict[str, Any]
    prompts: Prompts
    seed: int
    image: Optional[Image.Image] = None
    identity_distance: Optional[float] = None
    tries: int = 0


@dataclass
class _ImageJob:
    source: Path
    key: str
    original: Image.Image
    faces: list[_FaceJob] = field(default_factory=list)
    faces_left: int = 0  # detected but not replaced (faces=biggest)
    residual_faces: list = field(default_factory=list)  # found after composing where no new face lies


class Anonymizer:
    """Folder -> folder anonymization (Piano et al.): each photo's face is replaced by a generated one
    whose prompt keeps its attributes; a manifest records every image, and a re-run resumes.

    Args:
        generator: ``(positives, negatives, seeds) -> images`` (a :class:`TextToImage`).
        attributes: ``(face crop) -> {attribute: p, "age": ..., "ethnicity": ...}``.
        detector: ``(image) -> [Box]`` (dlib by default in the configs).
        mode: ``portrait`` (the paper: a new square portrait) or ``paste`` (the new face blended into the
            original photo through a soft mask; background and pose survive).
        faces: ``biggest`` (the paper) or ``all`` (paste mode only); ``None``: ``biggest`` for portraits,
            ``all`` in paste mode, so no detected face is left as it was. ``faces="biggest"`` with paste
            is an explicit choice the manifest (``faces_left``) and the summary flag.
        residual_detector: in paste mode, the detector run again on each composed image to find faces the
            first detection missed (default: the detector's ``more_sensitive()`` variant when it has one,
            else the same detector). A face found where no generated face lies is handled as
            ``on_no_face`` says: blurred (``blur``), the image not written (``skip``), or recorded and left
            (``copy``, the user's explicit choice).

    Example:
        With the Stable Diffusion pipeline of ``conf/anonymizer/realistic_vision.yaml`` (weights from the
        Hugging Face hub, so not run here):

        >>> from facefd.anonymize import Anonymizer
        >>> from facefd.anonymize.pipeline import TextToImage, load_pipeline
        >>> from facefd.models.faces import DlibDetector
        >>> anonymizer = Anonymizer(TextToImage(load_pipeline("SG161222/Realistic_Vision_V5.1_noVAE")),
        ...                         attributes=lambda face: {"Male": 0.9, "age": 30}, detector=DlibDetector())
        ...                         # doctest: +SKIP
        >>> anonymizer.run("photos", "anonymized")  # doctest: +SKIP
        {'anonymized': 60, 'no_face': 0, 'error': 0, 'skipped': 0}
    """

    def __init__(self, generator: Callable[..., list[Image.Image]], attributes: Callable[[Image.Image], dict],
                 detector: FaceDetector, mode: str = "portrait", faces: Optional[str] = None, seed: int = 0,
                 batch_size: int = 4, long_prompts: str = "chunk", max_tokens: int = CLIP_CONTENT_TOKENS,
                 margin: float = 0.4, feather: float = 0.15, privacy_guard: Optional[PrivacyGuard] = None,
                 model_id: str = "", output_format: str = "png", manifest_name: str = "manifest.jsonl",
                 on_no_face: str = "skip", residual_detector: Optional[FaceDetector] = None) -> None:
        if on_no_face not in ON_NO_FACE:
            raise ValueError(f"on_no_face must be one of {ON_NO_FACE}, got {on_no_face!r}")
        self.on_no_face = on_no_face
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if faces is None:
            faces = "all" if mode == "paste" else "biggest"
        if faces not in ("biggest", "all"):
            raise ValueError(f"faces must be 'biggest' or 'all', got {faces!r}")
        if faces == "all" and mode != "paste":
            raise ValueError("faces=all needs mode=paste (a portrait holds one face)")
        self.generator, self.attributes, self.detector = generator, attributes, detector
        sensitive = getattr(detector, "more_sensitive", None)
        self.residual_detector = residual_detector or (sensitive() if callable(sensitive) else detector)
        self.mode, self.faces, self.seed, self.batch_size = mode, faces, seed, max(1, batch_size)
        self.long_prompts, self.max_tokens, self.margin, self.feather = long_prompts, max_tokens, margin, feather
        self.privacy_guard, self.output_format, self.manifest_name = privacy_guard, output_format, manifest_name
        pipe = getattr(generator, "pipe", None)
        self.model_id = model_id or str(getattr(getattr(pipe, "config", None), "_name_or_path", "") or "")
        tokenizer = getattr(pipe, "tokenizer", None)
        self.count_tokens = clip_token_counter(tokenizer) if tokenizer is not None else None

    # ------------------------------------------------------------------ description of a run
    def _settings(self) -> dict[str, Any]:
        g = self.generator
        return {"model": self.model_id, "scheduler": getattr(g, "scheduler_name", type(g).__name__),
                "steps": getattr(g, "steps", None), "guidance_scale": getattr(g, "guidance_scale", None),
                "size": getattr(g, "size", None), "mode": self.mode, "long_prompts": self.long_prompts}

    def _output_path(self, out_dir: Path, key: str) -> Path:
        rel = Path(key)
        return out_dir / (rel if self.output_format == "same" else rel.with_suffix("." + self.output_format))

    # ------------------------------------------------------------------ per image
    def _prepare(self, source: Path, key: str) -> _ImageJob:
        original = load_rgb(source)
        detected = self.detector(original)
        boxes = detected
        if self.faces == "biggest":
            boxes = [b for b in [biggest_face(detected)] if b is not None]
        job = _ImageJob(source, key, original)
        job.faces_left = len(detected) - len(boxes)
        for i, box in enumerate(boxes):
            crop_box = expand_square(box, original.width, original.height, self.margin)
            attrs = self.attributes(original.crop(crop_box.as_list()))
            prompts = build_prompts(attrs, self.count_tokens, self.max_tokens,
                                    "truncate" if self.long_prompts == "truncate" else "chunk")
            job.faces.append(_FaceJob(i, box, crop_box, attrs, prompts, seed_for(self.seed, f"{key}#{i}")))
        return job

    def _generate(self, faces: Sequence[_FaceJob]) -> None:
        for start in range(0, len(faces), self.batch_size):
            chunk = faces[start:start + self.batch_size]
            images = self.generator([f.prompts.positive for f in chunk], [f.prompts.negative for f in chunk],
                                    [f.seed for f in chunk])
            for f, img in zip(chunk, images):
                f.image, f.tries = img, f.tries + 1

    def _guard(self, jobs: Sequence[_ImageJob]) -> None:
        guard = self.privacy_guard
        if guard is None:
            return
        faces = [(j, f) for j in jobs for f in j.faces]
        originals = {id(f): guard.embedder.embed(j.original, f.box) for j, f in faces}
        for _attempt in range(guard.max_tries):
            retry = []
            for _, f in faces:
                ref = originals[id(f)]
                new = guard.embedder.embed(f.image)
                f.identity_distance = None if ref is None or new is None else float(((ref - new) ** 2).sum() ** 0.5)
                if f.identity_distance is not None and f.identity_distance < guard.threshold and f.tries < guard.max_tries:
                    f.seed = seed_for(f.seed, f"retry{f.tries}")
                    retry.append(f)
            if not retry:
                return
            log.info("privacy guard: %d face(s) still within %.2f of the original; regenerating", len(retry),
                     guard.threshold)
            self._generate(retry)

    def _compose(self, job: _ImageJob) -> Image.Image:
        if self.mode == "portrait":
            return job.faces[0].image
        out = job.original
        for f in job.faces:
            out = paste_face(out, f.image, f.crop_box, self.feather)
        return self._residual_check(job, out)

    def _residual_check(self, job: _ImageJob, composed: Image.Image) -> Image.Image:
        """Faces found in the composed image where no generated face lies (ones the first detection missed,
        or the other faces of ``faces=biggest``): blurred unless ``on_no_face`` is ``copy``."""
        covered = [f.crop_box for f in job.faces]
        residual = [b for b in self.residual_detector(composed)
                    if not any(c.left <= (b.left + b.right) / 2 <= c.right and c.top <= (b.top + b.bottom) / 2 <= c.bottom
                               for c in covered)]
        job.residual_faces = [b.as_list() for b in residual]
        if not residual or self.on_no_face != "blur":
            return composed
        out = composed.copy()
        for b in residual:
            region = expand_square(b, out.width, out.height, 0.2)
            patch = out.crop(region.as_list())
            out.paste(blur_beyond_recognition(patch), (region.left, region.top))
        return out

    def _record(self, job: _ImageJob, output: Optional[Path], status: str,
                written: Optional[dict[str, Any]] = None) -> dict[str, Any]:
        rec: dict[str, Any] = {"key": job.key, "source": str(job.source), "output": str(output) if output else None,
                               "status": status, **(written or {}), **self._settings()}
        if status == "no_face":
            rec["on_no_face"] = self.on_no_face
        if self.mode == "paste":
            rec["faces_mode"] = self.faces
            rec["faces_left"] = job.faces_left  # detected faces faces=biggest did not replace
            rec["residual_faces"] = job.residual_faces  # found after composing where no new face lies
            if job.residual_faces:
                rec["residual_action"] = self.on_no_face
        rec["faces"] = [{
            "box": f.box.as_list(), "crop": f.crop_box.as_list(), "attributes": f.attributes,
            "prompt": f.prompts.positive, "negative_prompt": f.prompts.negative,
            "dropped_attributes": f.prompts.dropped, "prompt_tokens": f.prompts.positive_tokens,
            "negative_prompt_tokens": f.prompts.negative_tokens, "seed": f.seed, "tries": f.tries,
            "identity_distance": f.identity_distance} for f in job.faces]
        return rec

    # ------------------------------------------------------------------ the folder
    def run(self, input_dir: str | Path, output_dir: str | Path, progress: bool = True) -> dict[str, int]:
        """Anonymize every image under ``input_dir`` into ``output_dir`` (same relative paths)."""
        src, out = Path(input_dir).expanduser().resolve(), Path(output_dir).expanduser().resolve()
        if out == src or src in out.parents:
            raise ValueError(f"output folder {out} must not be the input folder or inside it (inputs are never "
                             "overwritten)")
        files = list_images(src)
        self._check_output_names(src, files, out)
        with folder_lock(out, purpose="facefd anonymize"):  # a second run on the same output refuses
            return self._run_locked(src, out, files, progress)

    def _run_locked(self, src: Path, out: Path, files: Sequence[Path], progress: bool) -> dict[str, int]:
        manifest = out / self.manifest_name
        done = self._finished(manifest)
        pending = [f for f in files if f.relative_to(src).as_posix() not in done]
        counts = {"anonymized": 0, "no_face": 0, "error": 0, "residual_face": 0, "skipped": len(files) - len(pending),
                  "residual_faces": 0, "faces_left": 0}
        if counts["skipped"]:
            log.info("resuming: %d of %d images already done (%s)", counts["skipped"], len(files), manifest)
        bar = tqdm(total=len(pending), desc="anonymizing", disable=not progress)
        batch: list[_ImageJob] = []
        with open(manifest, "a") as log_file:
            if log_file.tell() > 0 and not manifest.read_bytes().endswith(b"\n"):
                log.warning("%s ends in a cut-off line (a killed run?); new records start on a fresh line", manifest)
                log_file.write("\n")

            def write(rec: dict[str, Any]) -> None:
                log_file.write(json.dumps(json_safe(rec), default=str, allow_nan=False) + "\n")
                log_file.flush()
                counts[rec["status"]] += 1
                bar.update(1)

            def flush() -> None:
                faces = [f for j in batch for f in j.faces]
                try:
                    self._generate(faces)
                    self._guard(batch)
                except Exception as exc:  # noqa: BLE001 - a failed batch is recorded, the run goes on
                    log.exception("generation failed for %d image(s)", len(batch))
                    for j in batch:
                        write({"key": j.key, "source": str(j.source), "status": "error", "error": f"generation: {exc}"})
                    batch.clear()
                    return
                for j in batch:
                    target = self._output_path(out, j.key)
                    composed = self._compose(j)
                    if j.residual_faces:
                        counts["residual_faces"] += 1
                        if self.on_no_face == "skip":  # a face would be published: the image is not written
                            write(self._record(j, None, "residual_face"))
                            continue
                    if j.faces_left or (j.residual_faces and self.on_no_face == "copy"):
                        counts["faces_left"] += 1
                    write(self._record(j, target, "anonymized", save_clean(composed, target)))
                batch.clear()

            for path in pending:
                key = path.relative_to(src).as_posix()
                try:
                    job = self._prepare(path, key)
                except Exception as exc:  # noqa: BLE001 - report and go on
                    log.warning("skipping %s: %s", path, exc)
                    write({"key": key, "source": str(path), "status": "error", "error": f"{type(exc).__name__}: {exc}"})
                    continue
                if not job.faces:
                    if self.on_no_face == "skip":
                        write(self._record(job, None, "no_face"))
                        continue
                    target = self._output_path(out, key)
                    shown = job.original if self.on_no_face == "copy" else blur_beyond_recognition(job.original)
                    write(self._record(job, target, "no_face", save_clean(shown, target)))
                    continue
                batch.append(job)
                if sum(len(j.faces) for j in batch) >= self.batch_size:
                    flush()
            if batch:
                flush()
        bar.close()
        log.info("anonymization: %s (manifest %s)", counts, manifest)
        return counts

    def _check_output_names(self, src: Path, files: Sequence[Path], out: Path) -> None:
        """Refuse, before any work, inputs that would share an output file (``x.jpg`` and ``x.png`` both
        giving ``x.png``)."""
        owner: dict[str, str] = {}
        clashes = []
        for f in files:
            key = f.relative_to(src).as_posix()
            target = self._output_path(out, key).as_posix().lower()  # case-insensitive file systems too
            if target in owner:
                clashes.append(f"{owner[target]} and {key} -> {self._output_path(out, key)}")
            owner.setdefault(target, key)
        if clashes:
            raise OutputNameClashError(
                f"{len(clashes)} output name clash(es) under {out}: " + "; ".join(clashes[:5])
                + ("" if self.output_format == "same" else "; rename the inputs or set output_format=same "
                   "(each output keeps its input's name and format)"))

    def _finished(self, manifest: Path) -> set[str]:
        """Keys whose last manifest record is finished: with the same ``on_no_face`` for images without a
        face, and an output that still has the size and sha256 it was written with."""
        if not manifest.exists():
            return set()
        last = {rec["key"]: rec for rec in read_manifest(manifest)}
        done = set()
        for key, rec in last.items():
            if rec.get("output"):  # data: the output is checked where this run would write it, nowhere else
                try:
                    expected = self._output_path(manifest.parent, key)
                    inside = record_path(manifest.parent, key, expected.suffix)
                except ManifestError as exc:
                    log.warning("%s: %s; the record is ignored", manifest, exc)
                    continue
                if Path(str(rec["output"])) != inside:
                    log.warning("%s: the record of %r names output %s, not %s; redone", manifest, key, rec["output"], inside)
                    continue
            if rec.get("status") == "anonymized" and output_intact(rec):
                done.add(key)
            elif rec.get("status") == "no_face" and rec.get("on_no_face") == self.on_no_face and (
                    self.on_no_face == "skip" or output_intact(rec)):
                done.add(key)
            elif rec.get("status") == "residual_face" and self.on_no_face == "skip":
                done.add(key)
        return done


def _pil_format(path: Path) -> str:
    ext = path.suffix.lower().lstrip(".")
    return {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "bmp": "BMP"}.get(ext, "PNG")
