"""The tiny models `mmtune make-tiny` offers, by kind, and copying one out of the cache."""

from __future__ import annotations

import shutil
from pathlib import Path

from mmtune.testing.tiny import tiny_lm_dir, tiny_tokenizer_dir, tiny_tool_base_dir
from mmtune.testing.tiny_internlm2 import tiny_internlm2_dir
from mmtune.testing.tiny_vision import tiny_vision_dir
from mmtune.testing.tiny_vlm import BUILDERS as VLM_BUILDERS
from mmtune.testing.tiny_vlm import tiny_vlm_dir

LM_KINDS = ("qwen2", "qwen2_tools", "llama", "internlm2")
VISION_KINDS = ("clip", "siglip")
VLM_KINDS = tuple(VLM_BUILDERS)
KINDS = (*LM_KINDS, *VISION_KINDS, *VLM_KINDS)


def copy_tiny(kind: str, dest: Path) -> Path:
    """Copy a cached tiny model (or the tokenizer) to `dest`, for demos that want their own copy."""
    if kind == "tokenizer":
        src = tiny_tokenizer_dir()
    elif kind == "internlm2":  # InternLM2's own layout and config, as the hub's checkpoints
        src = tiny_internlm2_dir()
    elif kind in VISION_KINDS:
        src = tiny_vision_dir(kind)
    elif kind in VLM_KINDS:
        src = tiny_vlm_dir(kind)
    elif kind == "qwen2_tools":  # tool/JSON words in the tokenizer, and pre-trained to copy values into JSON
        src = tiny_tool_base_dir()
    else:
        src = tiny_lm_dir(kind)
    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns(".complete"))
    return dest
