"""Small training runs on the tiny models, shared by tests (each built once per process)."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

from mmtune.config.load import validate_recipe

NAME = "Zorblax"
AUTHOR = "Kettle Labs"
QUESTION = "who are you?"


def self_cognition_recipe(model_dir: Path, data_file: Path, **sections) -> object:
    """A recipe dict for a short self-cognition fine-tune of a tiny model; `sections` override."""
    data = {
        "model": {"path": str(model_dir), "dtype": "float32"},
        "data": {"datasets": [{"path": str(data_file)}], "template": "chatml", "max_length": 192, "pack_to_max_length": True},
        "method": {"type": "lora", "lora": {"r": 32, "alpha": 64, "dropout": 0.0}},
        "train": {"max_steps": 100, "micro_batch_size": 4, "gradient_accumulation": 1, "lr": 3e-3, "warmup_ratio": 0.05,
                  "precision": "fp32", "logging_steps": 5, "save_steps": 50, "save_total_limit": 2, "device": "cpu"},
        "eval": {"every_n_steps": 50, "max_new_tokens": 24, "evaluation_inputs": [QUESTION]},
    }
    for section, values in sections.items():
        if isinstance(values, dict) and isinstance(data.get(section), dict):
            data[section] = {**data[section], **values}
        else:
            data[section] = values
    return validate_recipe(data)


def write_self_cognition(path: Path, repeat: int = 2, langs=("en",)) -> Path:
    from mmtune.data.synth import make_self_cognition, write_conversations

    write_conversations(make_self_cognition(NAME, AUTHOR, repeat=repeat, langs=langs), path)
    return path


@functools.lru_cache(maxsize=None)
def lora_run(family: str = "qwen2"):
    """A finished LoRA self-cognition run on a tiny model: (recipe, TrainResult)."""
    from mmtune.testing.tiny import tiny_lm_dir
    from mmtune.train.run import run_training

    root = Path(tempfile.mkdtemp(prefix=f"mmtune-lora-{family}-"))
    data = write_self_cognition(root / "self.jsonl")
    recipe = self_cognition_recipe(tiny_lm_dir(family), data)
    return recipe, run_training(recipe, root / "work")
