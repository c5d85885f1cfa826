"""The one place where mmtune changes what runs inside an upstream model: swapping a module for an
mmtune module with the same parameters and state-dict keys, and putting the original back.

`transformers_forward_class` is the test the swaps (fused layers) and the chunked loss use before
trusting that a module computes what their allow-lists say.
"""

from __future__ import annotations

from torch import nn


def transformers_forward_class(module) -> str | None:
    """Name of the class that defines `module`'s forward when that class is transformers' own
    (subclasses that keep the forward inherit its behaviour); None for any other forward."""
    for cls in type(module).__mro__:
        if "forward" in cls.__dict__:
            return cls.__name__ if cls.__module__.startswith("transformers.") else None
    return None


class ModuleSwaps:
    """Modules of `model` replaced by name, and how to put the originals back (`revert`)."""

    def __init__(self, model: nn.Module):
        self.model = model
        self._done: list[tuple[nn.Module, str, nn.Module, nn.Module]] = []  # parent, child name, original, new

    def replace(self, name: str, new: nn.Module) -> None:
        parent_name, _, child = name.rpartition(".")
        parent = self.model.get_submodule(parent_name)
        original = parent.get_submodule(child)
        setattr(parent, child, new)
        self._done.append((parent, child, original, new))

    def new_modules(self) -> list[nn.Module]:
        return [new for _, _, _, new in self._done]

    def revert(self) -> None:
        for parent, child, original, _ in reversed(self._done):
            setattr(parent, child, original)
        self._done.clear()
