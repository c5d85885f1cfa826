"""A tiny checkpoint in InternLM2's own layout, as the hub's internlm2-chat checkpoints are saved.

Written directly, not through mmtune's conversion: config.json with `model_type: internlm2`, its
`auto_map` and `rope_scaling`; model.safetensors with InternLM2's tensor names and its fused `wqkv`
(rows grouped per key-value head); a sentencepiece `tokenizer.model` (trained here, byte fallback,
with InternLM2's special tokens as user-defined pieces) with InternLM2's tokenizer_config.json
(`InternLM2Tokenizer` + `auto_map`, the special tokens, the ChatML chat template after `<s>`). So the
tests and the demo exercise the path a user's real checkpoint takes.
"""

from __future__ import annotations

import json
from pathlib import Path

from mmtune.testing.cache import build_atomically, cache_root

BUILD_VERSION = "v1"
SPECIALS = ["<|plugin|>", "<|interpreter|>", "<|action_end|>", "<|action_start|>", "<|im_end|>", "<|im_start|>"]
VOCAB_SIZE = 2048
# internlm2-chat's own chat template (tokenizer_config.json of the released checkpoints)
CHAT_TEMPLATE = ("{{ bos_token }}{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
                 "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
                 "{{ '<|im_start|>assistant\n' }}{% endif %}")
SIZES = dict(hidden_size=128, intermediate_size=352, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2)


def write_tokenizer(out: Path) -> dict[str, int]:
    """tokenizer.model + InternLM2's tokenizer files in `out`; the special tokens' ids."""
    import sentencepiece as spm

    from mmtune.testing.tiny import _corpus

    out.mkdir(parents=True, exist_ok=True)
    corpus = out / "corpus.txt"
    corpus.write_text("\n".join(_corpus()), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(out / "tokenizer"), vocab_size=VOCAB_SIZE, model_type="bpe",
        character_coverage=1.0, byte_fallback=True, user_defined_symbols=SPECIALS, unk_id=0, bos_id=1, eos_id=2,
        pad_id=-1, split_digits=True, allow_whitespace_only_pieces=True, remove_extra_whitespaces=False,
        normalization_rule_name="identity", minloglevel=2,
    )
    corpus.unlink()
    (out / "tokenizer.vocab").unlink()
    sp = spm.SentencePieceProcessor(model_file=str(out / "tokenizer.model"))
    ids = {"<unk>": 0, "<s>": 1, "</s>": 2, **{t: sp.piece_to_id(t) for t in SPECIALS}}
    added = {str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                      "special": True} for t, i in ids.items()}
    specials = ["<|im_start|>", "<|im_end|>", "<|action_start|>", "<|action_end|>", "<|interpreter|>", "<|plugin|>"]
    config = {
        "auto_map": {"AutoTokenizer": ["tokenization_internlm2.InternLM2Tokenizer",
                                       "tokenization_internlm2_fast.InternLM2TokenizerFast"]},
        "bos_token": "<s>", "eos_token": "</s>", "pad_token": "</s>", "unk_token": "<unk>",
        "added_tokens_decoder": added, "additional_special_tokens": specials, "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False, "decode_with_prefix_space": False, "model_max_length": 32768,
        "sp_model_kwargs": None, "tokenizer_class": "InternLM2Tokenizer",
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))
    (out / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "</s>", "unk_token": "<unk>",
         "additional_special_tokens": specials}, indent=2))
    return ids


def internlm2_config(vocab_size: int, *, rope_scaling: dict | None, max_position_embeddings: int = 4096,
                     bias: bool = False) -> dict:
    """A config.json as the released checkpoints have it (their keys, their auto_map)."""
    return {
        "architectures": ["InternLM2ForCausalLM"],
        "auto_map": {"AutoConfig": "configuration_internlm2.InternLM2Config",
                     "AutoModel": "modeling_internlm2.InternLM2ForCausalLM",
                     "AutoModelForCausalLM": "modeling_internlm2.InternLM2ForCausalLM"},
        "attn_implementation": "eager", "bias": bias, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2,
        "hidden_act": "silu", "initializer_range": 0.02, "max_position_embeddings": max_position_embeddings,
        "model_type": "internlm2", "rms_norm_eps": 1e-5, "rope_scaling": rope_scaling, "rope_theta": 1000000,
        "tie_word_embeddings": False, "torch_dtype": "float32", "use_cache": True, "vocab_size": vocab_size,
        **SIZES,
    }


def internlm2_state_dict(config: dict, seed: int = 0) -> dict:
    """Random weights under InternLM2's own tensor names and shapes."""
    import torch

    g = torch.Generator().manual_seed(seed)
    h, i, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    heads, kv = config["num_attention_heads"], config["num_key_value_heads"]
    d = h // heads

    def normal(*shape, std=0.02):
        return torch.randn(*shape, generator=g) * std

    # trained LMs have embeddings far larger than a 0.02 init; tiny ones would stay near-uniform
    state = {"model.tok_embeddings.weight": normal(v, h, std=0.2), "model.norm.weight": torch.ones(h),
             "output.weight": normal(v, h, std=0.2)}
    for n in range(config["num_hidden_layers"]):
        p = f"model.layers.{n}."
        state[p + "attention.wqkv.weight"] = normal((heads + 2 * kv) * d, h)
        state[p + "attention.wo.weight"] = normal(h, heads * d)
        if config.get("bias"):
            state[p + "attention.wqkv.bias"] = normal((heads + 2 * kv) * d)
            state[p + "attention.wo.bias"] = normal(h)
        state[p + "feed_forward.w1.weight"] = normal(i, h)
        state[p + "feed_forward.w3.weight"] = normal(i, h)
        state[p + "feed_forward.w2.weight"] = normal(h, i)
        state[p + "attention_norm.weight"] = torch.ones(h)
        state[p + "ffn_norm.weight"] = torch.ones(h)
    return state


def build_internlm2(out: Path, *, rope_scaling: dict | None = None, bias: bool = False, seed: int = 0) -> None:
    from safetensors.torch import save_file

    ids = write_tokenizer(out)
    config = internlm2_config(VOCAB_SIZE, rope_scaling=rope_scaling, bias=bias)
    (out / "config.json").write_text(json.dumps(config, indent=2))
    # the chat models stop on </s> or <|im_end|>, as their generation_config.json says
    (out / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": 1, "eos_token_id": [2, ids["<|im_end|>"]], "pad_token_id": 2}, indent=2))
    save_file(internlm2_state_dict(config, seed), str(out / "model.safetensors"), metadata={"format": "pt"})


def tiny_internlm2_dir(rope: str = "dynamic") -> Path:
    """A saved tiny InternLM2 checkpoint; rope "dynamic" (dynamic NTK, factor 2, as the released
    chat models) or "plain" (rope_scaling null)."""
    scaling = {"dynamic": {"type": "dynamic", "factor": 2.0}, "plain": None}[rope]
    return build_atomically(cache_root() / f"internlm2-{rope}-{BUILD_VERSION}",
                            lambda out: build_internlm2(out, rope_scaling=scaling))
