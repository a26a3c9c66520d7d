"""Evaluation tasks: python evaluate.py task=<name> [overrides]. Logic lives in facefd.evaluation."""
from typing import Any

import hydra
from omegaconf import DictConfig

import facefd.utils.hydra  # noqa: F401  (registers resolvers)
from facefd.evaluation import run
from facefd.utils.entry import report_user_errors


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
@report_user_errors
def main(cfg: DictConfig) -> Any:
    return run(cfg)


if __name__ == "__main__":
    main()
