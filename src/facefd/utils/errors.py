"""Errors in what the user gave (a file, a folder, an option). The entry points print them as one line,
``error: <message>``, and exit with status 1; programming errors keep their traceback."""
from __future__ import annotations


class UserError(Exception):
    """Base of facefd's errors about the user's input; the message names the file or option at fault."""


class ConfigError(UserError, ValueError):
    """A missing or invalid command-line option / config value."""


class OutputLocationError(UserError, OSError):
    """An output location that cannot be written."""


class UntrustedCodeError(UserError, PermissionError):
    """A stored spec names code outside the allow-list and the user did not opt in with ``trust_code``."""
