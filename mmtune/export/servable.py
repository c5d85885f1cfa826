"""What the production engines read from an exported directory, checked: vLLM, SGLang and LMDeploy
load a plain Hugging Face model directory (or a peft LoRA adapter next to its base model) and find
everything in files, so a missing piece only shows when someone starts the engine on a GPU machine.

    serving_problems(out)   # [] when config, weights, tokenizer and chat template are all there
"""

from __future__ import annotations

import json
from pathlib import Path

from mmtune.rundir import missing_shards

TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")


def _json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _has_chat_template(d: Path) -> bool:
    if any((d / name).is_file() for name in TEMPLATE_FILES):
        return True
    return bool((_json(d / "tokenizer_config.json") or {}).get("chat_template"))


def _weight_problems(d: Path) -> list[str]:
    index = d / "model.safetensors.index.json"
    if index.is_file():
        if not ((_json(index) or {}).get("weight_map")):
            return [f"{index.name} names no shards"]
        return [f"{name} names {shard}, which is missing" for name, shard in missing_shards(d)]
    if (d / "model.safetensors").is_file():
        return []
    if list(d.glob("*.bin")):
        return ["weights are pickled .bin files only: engines and transformers prefer safetensors (re-export)"]
    return ["no model.safetensors and no model.safetensors.index.json"]


def serving_problems(directory: str | Path) -> list[str]:
    """What vLLM, SGLang or LMDeploy would miss in `directory` (an exported model or LoRA adapter)."""
    d = Path(directory)
    problems: list[str] = []
    adapter = _json(d / "adapter_config.json")
    if adapter is not None:  # served as a LoRA module on top of its base model
        if not (d / "adapter_model.safetensors").is_file():
            problems.append("adapter_model.safetensors is missing")
        if not adapter.get("base_model_name_or_path"):
            problems.append("adapter_config.json names no base_model_name_or_path")
        if not adapter.get("target_modules"):
            problems.append("adapter_config.json names no target_modules")
        return problems
    config = _json(d / "config.json")
    if config is None:
        return ["config.json is missing or not JSON"]
    if not config.get("architectures"):
        problems.append("config.json has no architectures (engines pick the model class from it)")
    if not config.get("model_type"):
        problems.append("config.json has no model_type")
    if config.get("auto_map"):
        problems.append("config.json has auto_map: every engine then needs --trust-remote-code "
                        "(export with --layout llama for a text model)")
    problems += _weight_problems(d)
    if not ((d / "tokenizer.json").is_file() or (d / "tokenizer.model").is_file()):
        problems.append("no tokenizer.json or tokenizer.model")
    if not (d / "tokenizer_config.json").is_file():
        problems.append("tokenizer_config.json is missing")
    if not _has_chat_template(d):
        problems.append("no chat template (chat_template.jinja or tokenizer_config.json): "
                        "the engines' /v1/chat/completions would refuse or guess")
    if "vision_config" in config and not any((d / name).is_file() for name in PROCESSOR_FILES):
        problems.append("a vision-language model without preprocessor_config.json: images cannot be prepared")
    if not (d / "generation_config.json").is_file():
        problems.append("generation_config.json is missing (engines read the end-of-turn token ids from it)")
    return problems
