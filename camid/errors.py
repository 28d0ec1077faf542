"""Error types with the exit codes of the camid command line.

Exit codes: 0 ok, 1 a finding (leakage, EXIF mismatch, no match), 2 usage error,
3 some inputs could not be read, 4 internal error.
"""

from __future__ import annotations

from pathlib import Path

EXIT_OK = 0
EXIT_FINDING = 1
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_INTERNAL = 4


class CamidError(Exception):
    """Base class of every error camid reports to a user as one line."""

    exit_code: int = EXIT_INTERNAL


class UsageError(CamidError):
    """A bad option value or an impossible combination of options."""

    exit_code = EXIT_USAGE


class InputError(CamidError):
    """An input file or folder that cannot be used; the message names it."""

    exit_code = EXIT_INPUT

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class InputsError(CamidError):
    """Too many inputs of a job could not be read for it to go on (each was reported)."""

    exit_code = EXIT_INPUT


class IntegrityError(CamidError):
    """A model or fingerprint file that failed its format or hash checks."""

    exit_code = EXIT_INPUT

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class NotFoundError(CamidError):
    """A named model, fingerprint or other registry entry does not exist."""

    exit_code = EXIT_USAGE


class AlreadyExistsError(UsageError):
    """An output that exists and may not be replaced; the CLI adds the flag that allows it."""
