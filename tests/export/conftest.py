"""The LoRA self-cognition run exported once for the export tests: its peft adapter and the merged
model in 2 MB shards (so the sharded layout, with its index, is what gets checked)."""

from __future__ import annotations

import pytest

from mmtune.export.merge import merge_adapter
from mmtune.export.to_hf import checkpoint_to_hf
from mmtune.testing.runs import lora_run


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """(recipe, TrainResult, adapter dir, merged dir); tests that change files copy them first."""
    recipe, result = lora_run()
    root = tmp_path_factory.mktemp("export")
    adapter = checkpoint_to_hf(recipe, result.final_dir, root / "adapter")
    merged = merge_adapter(recipe.model.path, adapter, root / "merged", max_shard_size="2MB")
    return recipe, result, adapter, merged
