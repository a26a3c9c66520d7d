"""The tasks of ``python evaluate.py task=NAME`` (and ``facefd evaluate task=NAME``): one module a task,
each with its own ``run(cfg)``, loaded only when chosen.

Example:
    >>> from facefd.evaluation.tasks import TASKS, task_module
    >>> "fd" in TASKS and callable(task_module("fd").run)
    True
"""
from __future__ import annotations

import importlib
import logging
import warnings
from types import ModuleType
from typing import Any

from omegaconf import DictConfig, open_dict

from facefd.utils.entry import entry_point
from facefd.utils.errors import ConfigError

log = logging.getLogger(__name__)

#: Task name -> module under ``facefd.evaluation.tasks``.
TASKS: tuple[str, ...] = ("export", "stats", "fd", "probe_table", "benchmark", "correlate", "neighbors", "subgroups",
                          "curve", "anonymization")

#: Old keys of extractor lists, still read (with a warning) as the one key that replaced them.
DEPRECATED_KEYS: dict[str, str] = {"metrics": "extractors", "embedders": "extractors",
                                   "anonymization_metrics": "fd_extractors"}


def task_module(name: str) -> ModuleType:
    """The module of task ``name``.

    Args:
        name: one of :data:`TASKS`.

    Returns:
        The imported module; its ``run(cfg)`` runs the task.

    Raises:
        ConfigError: for a name that is not a task.
    """
    if name not in TASKS:
        raise ConfigError(f"unknown task={name!r}; available: {sorted(TASKS)}")
    return importlib.import_module(f"{__name__}.{name}")


def apply_deprecated_keys(cfg: DictConfig) -> None:
    """Copy a deprecated extractor-list key (``metrics=``, ``embedders=``, ``anonymization_metrics=``) onto
    the key that replaced it, with a warning naming both."""
    for old, new in DEPRECATED_KEYS.items():
        if cfg.get(old) is None or new not in cfg:
            continue
        message = f"{old}= is deprecated; use {new}= (the one name of extractor lists in every task)"
        warnings.warn(message, FutureWarning, stacklevel=2)
        log.warning(message)
        with open_dict(cfg):
            cfg[new] = cfg[old]
            cfg[old] = None


@entry_point
def run(cfg: DictConfig) -> Any:
    """Run the task ``cfg.task`` names (``evaluate.py``'s job).

    Args:
        cfg: the composed ``evaluate`` config.

    Returns:
        What the task returns (a path, a result dict or rows).
    """
    module = task_module(cfg.task)
    apply_deprecated_keys(cfg)
    return module.run(cfg)
