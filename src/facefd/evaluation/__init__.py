"""Evaluation tasks behind ``python evaluate.py task=...`` (one module a task in
:mod:`facefd.evaluation.tasks`, loaded when chosen), and the public :func:`reid`."""
from facefd.evaluation.reid import reid
from facefd.utils.lazy import lazy_names

__getattr__, __dir__, _names = lazy_names(__name__, {"run": "facefd.evaluation.tasks", "TASKS": "facefd.evaluation.tasks"})
__all__ = [*_names, "reid"]
