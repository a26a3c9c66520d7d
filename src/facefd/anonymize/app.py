"""``python anonymize.py input=DIR output=DIR``: the anonymizer app around :class:`Anonymizer`."""
from __future__ import annotations

import logging
from typing import Any

from facefd.anonymize.anonymizer import Anonymizer
from facefd.utils.entry import entry_point
from facefd.data.images import list_images
from facefd.utils.checks import check_writable
from facefd.utils.errors import ConfigError

log = logging.getLogger(__name__)


@entry_point
def run(cfg: Any) -> dict[str, int]:
    """``python anonymize.py input=DIR output=DIR anonymizer=...``: build the anonymizer and run it."""
    from hydra.utils import instantiate

    for key in ("input", "output"):
        if not cfg.get(key):
            raise ConfigError(f"anonymize.py needs {key}=<folder>")
    list_images(cfg.input)  # the input has images and the output can be written: before any model loads
    check_writable(cfg.output, is_file=False)
    anonymizer: Anonymizer = instantiate(cfg.anonymizer)
    counts = anonymizer.run(cfg.input, cfg.output)
    print(f"anonymized {counts['anonymized']}, no face {counts['no_face']}, errors {counts['error']}, "
          f"already done {counts['skipped']}; manifest: {cfg.output}/{anonymizer.manifest_name}")
    if counts.get("residual_faces") or counts.get("faces_left"):
        print(f"faces found after composing where no new face lies: {counts['residual_faces']} image(s) "
              f"(on_no_face={anonymizer.on_no_face}: {'blurred' if anonymizer.on_no_face == 'blur' else 'not written' if anonymizer.on_no_face == 'skip' else 'left, recorded'}); "
              f"images with faces left as they were: {counts['faces_left']}")
    return counts

