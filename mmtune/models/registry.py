"""A name -> entry table for the model-side registries (projectors, VLM families): entries are
registered once by name at import, and looking up an unknown name is a user error listing the names."""

from __future__ import annotations

from mmtune.errors import MmtuneError


class Registry(dict):
    def __init__(self, what: str):
        super().__init__()
        self.what = what

    def register(self, entry):
        if entry.name in self:
            raise ValueError(f"{self.what} {entry.name!r} is registered twice")
        self[entry.name] = entry
        return entry

    def get_entry(self, name: str):
        if name not in self:
            raise MmtuneError(f"unknown {self.what} {name!r}", hint=f"one of {', '.join(self)}")
        return self[name]
