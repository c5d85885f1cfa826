"""Where tiny test models live, and how they are built without two processes seeing half a directory.

Directories are cached under `$MMTUNE_CACHE/tiny` (default `~/.cache/mmtune/tiny`) and built in a
temporary sibling that is renamed into place once complete.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def cache_root() -> Path:
    base = os.environ.get("MMTUNE_CACHE") or Path.home() / ".cache" / "mmtune"
    return Path(base) / "tiny"


def build_atomically(target: Path, build) -> Path:
    if (target / ".complete").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        build(tmp)
        (tmp / ".complete").write_text("ok\n")
        try:
            os.replace(tmp, target)
        except OSError:  # another process finished first
            if not (target / ".complete").exists():
                shutil.rmtree(target, ignore_errors=True)
                os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
