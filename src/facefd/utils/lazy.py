"""Public names that load their module on first use (PEP 562), so ``import facefd`` and ``facefd --help``
stay fast and ``facefd fd`` never imports Lightning."""
from __future__ import annotations

import importlib
import sys
from typing import Any, Callable


def lazy_names(package: str, names: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """``__getattr__``, ``__dir__`` and ``__all__`` for a package whose public names live in submodules.

    Args:
        package: the package's ``__name__``.
        names: public name -> the module that defines it.

    Returns:
        ``(__getattr__, __dir__, __all__)`` to assign in the package's ``__init__``.

    Example:
        >>> getattr_, dir_, all_ = lazy_names("facefd", {"frechet_distance": "facefd.metrics.frechet"})
        >>> getattr_("frechet_distance").__name__
        'frechet_distance'
    """

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)  # later look-ups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(names))

    return __getattr__, __dir__, sorted(names)
