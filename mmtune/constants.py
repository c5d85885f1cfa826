"""Constants every floor shares."""

from __future__ import annotations

# The label of a token that gets no loss: torch's cross_entropy default and transformers' convention.
IGNORE_INDEX = -100

# Where an image goes in the text of a conversation (the LLaVA convention every reader maps to).
IMAGE_PLACEHOLDER = "<image>"
