"""Train a model (DINO by default): python train.py [overrides]. Logic lives in facefd.train."""
from typing import Optional

import hydra
from omegaconf import DictConfig

import facefd.utils.hydra  # noqa: F401  (registers resolvers)
from facefd.train import run
from facefd.utils.entry import report_user_errors


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@report_user_errors
def main(cfg: DictConfig) -> Optional[float]:
    return run(cfg)


if __name__ == "__main__":
    main()
