"""Anonymize a folder of face images: python anonymize.py input=DIR output=DIR [anonymizer=...]. Logic lives in facefd.anonymize."""
from typing import Any

import hydra
from omegaconf import DictConfig

import facefd.utils.hydra  # noqa: F401  (registers resolvers)
from facefd.anonymize import run
from facefd.utils.entry import report_user_errors


@hydra.main(version_base="1.3", config_path="conf", config_name="anonymize")
@report_user_errors
def main(cfg: DictConfig) -> Any:
    return run(cfg)


if __name__ == "__main__":
    main()
