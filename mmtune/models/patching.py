"""Which transformers class defines a module's forward: the test mmtune's forward replacements
(chunked loss, fused layers) use before trusting that a module computes what its allow-list says."""

from __future__ import annotations


def transformers_forward_class(module) -> str | None:
    """Name of the class that defines `module`'s forward when that class is transformers' own
    (subclasses that keep the forward inherit its behaviour); None for any other forward."""
    for cls in type(module).__mro__:
        if "forward" in cls.__dict__:
            return cls.__name__ if cls.__module__.startswith("transformers.") else None
    return None
