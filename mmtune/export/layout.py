"""The layout an exported model is written in.

`llama` (the default) is what every tool loads without remote code. For most models it is simply
their own transformers layout; a model loaded from an InternLM2 checkpoint (mmtune loads those as
Llama, mmtune.models.internlm2) is written as a plain LlamaForCausalLM (a LLaVA model: its language
model as Llama), which plain transformers, vLLM, SGLang and LMDeploy serve. `internlm2` writes
InternLM2's own layout and config (fused `wqkv`, its tensor names, `model_type: internlm2` with
`rope_scaling`), as the released checkpoints are, for tools that expect that layout; the base
checkpoint's own code files (`*.py`) are copied along when it is a local directory, so the export
is a drop-in replacement of it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from mmtune.errors import MmtuneError
from mmtune.models import internlm2

LAYOUTS = ("llama", "internlm2")


def holds_internlm2(model) -> bool:
    config = model.config
    return isinstance(config, internlm2.InternLM2Config) or isinstance(getattr(config, "text_config", None),
                                                                       internlm2.InternLM2Config)


def save_model(model, out: Path, *, layout: str = "llama", base: str | None = None, **save_kwargs) -> None:
    """`model.save_pretrained(out)` in `layout` (see the module doc)."""
    if layout not in LAYOUTS:
        raise MmtuneError(f"unknown layout {layout!r}", hint=f"one of {', '.join(LAYOUTS)}")
    if layout == "internlm2":
        if not isinstance(model.config, internlm2.InternLM2Config):
            raise MmtuneError("--layout internlm2 needs a text model trained from an InternLM2 checkpoint",
                              hint="leave --layout at llama")
        model.save_pretrained(str(out), **save_kwargs)  # transformers reverses the load-time conversion
        (Path(out) / "config.json").write_text(json.dumps(internlm2_config_json(model.config, base), indent=2) + "\n")
        copy_code_files(base, out)
        return
    if holds_internlm2(model):
        model = internlm2.to_llama_layout(model)
    model.save_pretrained(str(out), **save_kwargs)


def internlm2_config_json(config, base: str | None) -> dict:
    """config.json in the released checkpoints' own keys: the base checkpoint's, with its sizes and
    token ids taken from the model (a vocabulary may have grown in training)."""
    original = internlm2.config_dict(base) if base else None
    data = dict(original or {"architectures": ["InternLM2ForCausalLM"], "model_type": internlm2.MODEL_TYPE})
    rope = dict(config.rope_parameters or {})
    rope_type = rope.get("rope_type", "default")
    scaling = None if rope_type == "default" else {"type": rope_type, "factor": rope.get("factor")}
    data.update({
        "vocab_size": config.vocab_size, "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size, "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads, "num_key_value_heads": config.num_key_value_heads,
        "max_position_embeddings": config.max_position_embeddings, "rms_norm_eps": config.rms_norm_eps,
        "rope_theta": rope.get("rope_theta", 10000), "rope_scaling": scaling, "bias": bool(config.attention_bias),
        "hidden_act": config.hidden_act, "tie_word_embeddings": config.tie_word_embeddings,
        "bos_token_id": config.bos_token_id, "eos_token_id": config.eos_token_id, "pad_token_id": config.pad_token_id,
        "torch_dtype": str(config.dtype).replace("torch.", "") if getattr(config, "dtype", None) else "float32",
        "use_cache": True,
    })
    return data


def copy_code_files(base: str | None, out: Path) -> None:
    """The base checkpoint's own code (configuration_*.py, modeling_*.py, tokenization_*.py)."""
    if not base or not Path(base).is_dir():
        return
    for path in Path(base).glob("*.py"):
        shutil.copyfile(path, Path(out) / path.name)


def plain_tokenizer_config(out: Path) -> None:
    """Drop the remote-code `auto_map` a tokenizer kept from its checkpoint: the export's tokenizer
    is transformers' own (tokenizer.json) and loads without remote code."""
    path = Path(out) / "tokenizer_config.json"
    if not path.exists():
        return
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.pop("auto_map", None) is not None:
        path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
