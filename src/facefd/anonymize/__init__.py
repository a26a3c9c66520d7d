"""Attribute-preserving face anonymization with a text-to-image model (Piano et al. 2024)."""
from facefd.utils.lazy import lazy_names

__getattr__, __dir__, __all__ = lazy_names(__name__, {
    "Anonymizer": "facefd.anonymize.anonymizer", "PrivacyGuard": "facefd.anonymize.anonymizer",
    "seed_for": "facefd.anonymize.anonymizer",
    "Prompts": "facefd.anonymize.prompts", "attribute_phrase": "facefd.anonymize.prompts",
    "build_prompts": "facefd.anonymize.prompts",
    "run": "facefd.anonymize.app",
})
