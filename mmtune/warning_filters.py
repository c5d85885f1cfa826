"""Deprecation warnings raised inside upstream libraries, which mmtune's own code cannot fix.

Each is silenced once here, for every mmtune command (`silence_upstream_warnings`, called by the
CLI) and for the test suite (tests/conftest.py adds the same filters), with the place it comes
from, so it can be dropped when that library is fixed. A deprecation caused by mmtune's own calls
never belongs here: the test suite turns those into errors (mmtune.testing.deprecations).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass


@dataclass(frozen=True)
class UpstreamWarning:
    category: type[Warning]
    message: str  # regular expression matched at the start of the warning's text
    source: str  # where it is raised, and why mmtune cannot avoid it


UPSTREAM_WARNINGS = (
    UpstreamWarning(
        FutureWarning, r"`is_gradient_checkpointing` is deprecated",
        "peft 0.21 PeftModel.__init__ reads model.is_gradient_checkpointing (deprecated in transformers 5.24) "
        "on every get_peft_model / PeftModel.from_pretrained"),
    UpstreamWarning(
        DeprecationWarning, r"`torch.jit.script_method` is deprecated",
        "torch 2.13: torch/utils/mkldnn.py decorates its modules with torch.jit.script_method at import "
        "(reached through torch.fx.experimental.optimization)"),
    UpstreamWarning(
        FutureWarning, r"`torch.distributed.(reduce_scatter_tensor|all_gather_into_tensor)` is deprecated",
        "deepspeed 0.19 ZeRO-2/3 call these torch.distributed collectives (deprecated in torch 2.13) on every "
        "step, once per bucket: over a hundred lines in a four-step run"),
)


def silence_upstream_warnings() -> None:
    """Ignore the warnings of UPSTREAM_WARNINGS in this process."""
    for w in UPSTREAM_WARNINGS:
        warnings.filterwarnings("ignore", message=w.message, category=w.category)


def pytest_filter_lines() -> list[str]:
    """The same filters as pytest `filterwarnings` lines."""
    return [f"ignore:{w.message}:{w.category.__name__}" for w in UPSTREAM_WARNINGS]
