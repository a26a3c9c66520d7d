"""What every entry point (train, evaluate, anonymize) does around its job: cap CPU threads to the
cgroup quota, apply the one image pixel limit, and apply the user's ``trust_code`` decision to every
file the job reads."""
from __future__ import annotations

import errno
import functools
import os
import sys
from typing import Any, Callable, TypeVar

from facefd.utils.errors import UserError
from facefd.utils.settings import DEFAULT_MAX_IMAGE_PIXELS, set_alpha_mode, set_max_image_pixels, trusting_code
from facefd.utils.threads import limit_threads_to_cpu_quota

F = TypeVar("F", bound=Callable[..., Any])


def entry_point(run: F) -> F:
    """Wrap ``run(cfg)``: threads capped; cards and checkpoints may name code outside the allow-list only
    when the command line says ``trust_code=true``."""

    @functools.wraps(run)
    def wrapper(cfg: Any, *args: Any, **kwargs: Any) -> Any:
        limit_threads_to_cpu_quota()
        set_max_image_pixels(cfg.get("max_image_pixels", DEFAULT_MAX_IMAGE_PIXELS))
        set_alpha_mode(cfg.get("transparency", "drop"))
        with trusting_code(bool(cfg.get("trust_code", False))):
            return run(cfg, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


#: Errors about a path the user gave, reported like facefd's own :class:`UserError`.
PATH_ERRORS = (FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError)
#: What the disk says when a write cannot happen: full, over quota, read-only.
DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def report_user_errors(main: F) -> F:
    """For the command-line scripts: a user error (facefd's :class:`UserError`, a bad path) prints
    ``error: <message>`` on stderr and exits with status 1; ``HYDRA_FULL_ERROR=1`` shows the traceback
    instead. Anything else is a bug and keeps its traceback."""

    @functools.wraps(main)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return main(*args, **kwargs)
        except OSError as exc:
            if isinstance(exc, (UserError, *PATH_ERRORS)) or exc.errno in DISK_ERRNOS:
                if os.environ.get("HYDRA_FULL_ERROR") == "1":
                    raise
                disk = exc.errno in DISK_ERRNOS and not isinstance(exc, UserError)
                message = _one_line(exc) if disk else (str(exc).strip() or type(exc).__name__)
                print(f"error: {message}", file=sys.stderr)
                raise SystemExit(1) from None
            raise
        except UserError as exc:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            message = str(exc).strip() or type(exc).__name__
            print(f"error: {message}", file=sys.stderr)
            raise SystemExit(1) from None

    return wrapper  # type: ignore[return-value]


def _one_line(exc: OSError) -> str:
    """A disk error as one line that names the file: ``<file>: <reason>``."""
    name = exc.filename if exc.filename is not None else ""
    reason = exc.strerror or str(exc).strip() or type(exc).__name__
    return f"{name}: {reason}" if name else reason
