"""Tiny checkpoints that ship their own modeling code (`auto_map`, loaded with trust_remote_code), to
test what mmtune checks of such code (mmtune.models.remote_code). Each flag makes the code misbehave
in one way a real checkpoint's code can under a newer transformers."""

from __future__ import annotations

import json
from pathlib import Path

MODELING = '''
import torch
from torch import nn
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast
{extra_import}


class ToyConfig(PretrainedConfig):
    model_type = "mmtune_toy"

    def __init__(self, vocab_size=2048, hidden_size=16, max_position_embeddings=512, leaks_across_samples=False,
                 nan=False, fail_on_init=False, **kwargs):
        self.vocab_size, self.hidden_size, self.max_position_embeddings = vocab_size, hidden_size, max_position_embeddings
        self.leaks_across_samples, self.nan, self.fail_on_init = leaks_across_samples, nan, fail_on_init
        self.num_hidden_layers, self.num_attention_heads = 1, 1  # what generate's cache asks of a config
        super().__init__(**kwargs)


class ToyForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = ToyConfig

    def __init__(self, config):
        super().__init__(config)
        if config.fail_on_init:
            raise KeyError("sdpa")  # as a code's own table of attention classes would
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.head = nn.Linear(config.hidden_size, config.vocab_size)
        self.post_init()

    def get_input_embeddings(self):
        return self.embed

    def forward(self, input_ids, position_ids=None, labels=None, attention_mask=None, **kwargs):
        if position_ids is None:
            position_ids = torch.arange(input_ids.shape[1], device=input_ids.device)[None]
        x = self.embed(input_ids) + self.position(position_ids)
        if self.config.leaks_across_samples:  # every token sees the mean of all before it, whatever its position
            steps = torch.arange(1, x.shape[1] + 1, device=x.device)[None, :, None]
            x = x + x.cumsum(dim=1) / steps
        logits = self.head(x)
        if self.config.nan:
            logits = logits * float("nan")
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1))
        return CausalLMOutputWithPast(loss=loss, logits=logits)
'''


def write_remote_model(out: Path, *, leaks_across_samples: bool = False, nan: bool = False,
                       fail_on_init: bool = False, needs_package: str | None = None) -> Path:
    """A saved toy causal LM whose modeling code lives in the directory (with the tiny tokenizer)."""
    import shutil

    from mmtune.testing.tiny import tiny_tokenizer_dir

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for f in tiny_tokenizer_dir().iterdir():
        if f.name != ".complete":
            shutil.copyfile(f, out / f.name)
    config = {"model_type": "mmtune_toy", "architectures": ["ToyForCausalLM"],
              "auto_map": {"AutoConfig": "modeling_toy.ToyConfig", "AutoModelForCausalLM": "modeling_toy.ToyForCausalLM"},
              "vocab_size": 2048, "hidden_size": 16, "max_position_embeddings": 512}
    _write_weights(out, config)
    extra = f"import {needs_package}" if needs_package else ""
    (out / "modeling_toy.py").write_text(MODELING.format(extra_import=extra))
    config.update(leaks_across_samples=leaks_across_samples, nan=nan, fail_on_init=fail_on_init)
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return out


def _write_weights(out: Path, config: dict) -> None:
    """model.safetensors of the well-behaved code (the flags only change what it computes)."""
    import importlib.util

    import torch

    code = out / "modeling_toy.py"
    code.write_text(MODELING.format(extra_import=""))
    spec = importlib.util.spec_from_file_location("mmtune_toy_modeling", code)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    fields = {k: v for k, v in config.items() if k not in ("model_type", "architectures", "auto_map")}
    module.ToyForCausalLM(module.ToyConfig(**fields)).save_pretrained(out)
