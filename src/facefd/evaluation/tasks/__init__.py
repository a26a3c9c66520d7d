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
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf, open_dict

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


#: What each task reads of the options every task shares (conf/evaluate.yaml); the rest are its own.
_EXTRACTING = {"num_samples", "seed", "batch_size", "num_workers", "cache_dir", "trainer", "out"}
TASK_READS: dict[str, set[str]] = {
    "export": {"out"},
    "stats": _EXTRACTING | {"data.root", "data.skip_bad_images", "metric"},
    "fd": _EXTRACTING | {"data.skip_bad_images", "metric"},
    "probe_table": _EXTRACTING | {"data"},
    "benchmark": _EXTRACTING | {"data.skip_bad_images"},
    "correlate": {"out"},
    "neighbors": _EXTRACTING | {"data.skip_bad_images"},
    "subgroups": _EXTRACTING | {"data.skip_bad_images"},
    "curve": {"out"},
    "anonymization": _EXTRACTING,
}
#: The shared options: conf/evaluate.yaml's own keys and groups.
SHARED_OPTIONS = ("num_samples", "seed", "batch_size", "num_workers", "cache_dir", "trainer", "out", "data",
                  "metric", "precision")
#: The trainer keys feature extraction reads (its processes); any other ``trainer.`` key is unread.
TRAINER_KEYS = ("accelerator", "devices", "strategy", "num_nodes")


def command_line_overrides(cfg: DictConfig) -> list[str]:
    """The ``key=value`` overrides of the command line (Hydra's task overrides); ``[]`` outside Hydra."""
    from hydra.core.hydra_config import HydraConfig

    try:
        return list(HydraConfig.get().overrides.task)
    except ValueError:  # not run by Hydra: a config composed in Python
        return list(OmegaConf.select(cfg, "hydra.overrides.task", default=None) or [])


def check_unread_options(cfg: DictConfig, overrides: Optional[list[str]] = None) -> None:
    """An option on the command line that the chosen task does not read is an error naming it.

    Args:
        cfg: the composed ``evaluate`` config.
        overrides: the command line's overrides (default: Hydra's).

    Raises:
        ConfigError: naming the option, the task, and the options the task reads.

    Example:
        >>> check_unread_options(OmegaConf.create({"task": "curve"}), ["num_samples=100"])
        Traceback (most recent call last):
        ...
        facefd.utils.errors.ConfigError: task=curve does not read num_samples=100 (of the shared options it reads out)
    """
    reads = TASK_READS.get(str(cfg.task), set())
    for override in command_line_overrides(cfg) if overrides is None else overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        top, _, rest = key.partition(".")
        if top not in SHARED_OPTIONS:
            continue
        unread = not ({key, top} & reads or (top == "data" and "data" in reads))
        if top == "trainer" and "trainer" in reads and rest and rest.split(".")[0] not in TRAINER_KEYS:
            unread = True
        if unread:
            hint = (f" (feature extraction reads trainer.{', trainer.'.join(TRAINER_KEYS)})" if top == "trainer"
                    else f" (of the shared options it reads {', '.join(sorted(reads))})")
            raise ConfigError(f"task={cfg.task} does not read {override}{hint}")


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
    check_unread_options(cfg)
    apply_deprecated_keys(cfg)
    return module.run(cfg)
