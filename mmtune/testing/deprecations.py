"""The test suite's deprecation policy: a deprecated API called by mmtune's own code is an error.

Two kinds of warning are caught:
- warnings attributed to an mmtune module (a `stacklevel` that points at the caller, or torch's C++
  deprecations, which name the calling Python frame): pytest's `error::FutureWarning:mmtune`
  filters (see `pytest_filter_lines`);
- warnings a library raises about itself with no `stacklevel` (transformers 5.24's
  `gradient_checkpointing_enable`): `warnings.warn` is wrapped so that a DeprecationWarning or
  FutureWarning whose nearest frame outside the warning library is mmtune's raises instead
  (`made_by_mmtune`).
A warning that a library raises while another library calls it (peft reading a deprecated
transformers property) is not mmtune's to fix: it goes to mmtune.warning_filters.
"""

from __future__ import annotations

import sys
import warnings

DEPRECATIONS = (DeprecationWarning, FutureWarning)
_original_warn = warnings.warn


def _package(frame) -> str:
    return frame.f_globals.get("__name__", "").split(".")[0]


def made_by_mmtune(frame) -> str | None:
    """Where mmtune called the code that raises a warning in `frame` (the frame calling
    `warnings.warn`), as "module:line"; None when the nearest caller outside that frame's
    package is not mmtune."""
    package = _package(frame)
    while frame is not None and package != "mmtune" and _package(frame) == package:
        frame = frame.f_back
    if frame is None or _package(frame) != "mmtune":
        return None
    return f"{frame.f_globals['__name__']}:{frame.f_lineno}"


def _strict_warn(message, category=None, stacklevel=1, source=None, **kwargs):
    if category is None:
        category = type(message) if isinstance(message, Warning) else UserWarning
    if issubclass(category, DEPRECATIONS):
        caller = made_by_mmtune(sys._getframe(1))
        if caller is not None:
            raise category(f"{message} [called by {caller}: use the replacement API]")
    return _original_warn(message, category, stacklevel + 1, source, **kwargs)


def install() -> None:
    """Wrap `warnings.warn` for this process (the test session)."""
    warnings.warn = _strict_warn


def pytest_filter_lines() -> list[str]:
    """pytest `filterwarnings` lines: deprecations attributed to mmtune's modules are errors."""
    return [f"error::{category.__name__}:mmtune" for category in DEPRECATIONS]
