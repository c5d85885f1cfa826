"""User-facing errors: one readable line saying what is wrong, where, and how to fix it.

Anything raised as `MmtuneError` is printed by the CLI without a traceback and exits with
`exit_code`; every other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class MmtuneError(Exception):
    """An error caused by the user's input (config, data, paths), not by a bug."""

    exit_code = 2

    def __init__(self, message: str, *, where: str | None = None, hint: str | None = None):
        self.message = message
        self.where = where
        self.hint = hint
        super().__init__(self.format())

    def format(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.hint:
            text += f" ({self.hint})"
        return text


class ConfigError(MmtuneError):
    """A recipe or `--set` override is invalid."""


class DataError(MmtuneError):
    """A data file or record is invalid."""


def record_location(file: str, index: int, field: str | None = None) -> str:
    """`file:record N:field` — the place a bad record is reported at (index is 0-based)."""
    where = f"{file}:record {index}"
    return f"{where}:{field}" if field else where
