"""InternLM2 checkpoints load natively as Llama: the layout conversion, checked against the fused
`wqkv` by hand, round trips, the tokenizer, and the export layouts (mmtune.models.internlm2).

The comparison with InternLM2's own modeling code needs that code (not part of mmtune):
bench/internlm2_equivalence.py, figures in docs/internlm2.md."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from mmtune.errors import MmtuneError
from mmtune.models import internlm2
from mmtune.models.load import load_pretrained
from mmtune.testing.tiny_internlm2 import SIZES, SPECIALS, tiny_internlm2_dir


@pytest.fixture(scope="module")
def ckpt() -> Path:
    return tiny_internlm2_dir()


def load(path, **kwargs):
    from transformers import AutoModelForCausalLM

    return load_pretrained(AutoModelForCausalLM, path, "the model", dtype=torch.float32, **kwargs).eval()


def test_make_tiny_writes_internlm2s_own_layout(ckpt, tmp_path):
    from mmtune.testing.catalog import copy_tiny

    out = copy_tiny("internlm2", tmp_path / "m")
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "internlm2" and config["architectures"] == ["InternLM2ForCausalLM"]
    assert config["rope_scaling"] == {"type": "dynamic", "factor": 2.0} and "AutoModelForCausalLM" in config["auto_map"]
    keys = set(load_file(out / "model.safetensors"))
    assert {"model.tok_embeddings.weight", "output.weight", "model.layers.0.attention.wqkv.weight",
            "model.layers.0.feed_forward.w2.weight", "model.layers.0.attention_norm.weight"} <= keys
    assert not any("q_proj" in k or "embed_tokens" in k for k in keys)
    assert json.loads((out / "tokenizer_config.json").read_text())["tokenizer_class"] == "InternLM2Tokenizer"
    assert (out / "tokenizer.model").is_file() and not (out / "tokenizer.json").exists()


def test_loading_converts_to_llama_modules_without_remote_code(ckpt):
    model = load(ckpt, trust_remote_code=True)  # asked for, but InternLM2's own code never runs
    assert type(model).__module__ == "mmtune.models.internlm2" and model.config.model_type == "internlm2"
    assert isinstance(model, __import__("transformers").LlamaForCausalLM)
    state = load_file(ckpt / "model.safetensors")
    kv, heads, d = SIZES["num_key_value_heads"], SIZES["num_attention_heads"], SIZES["hidden_size"] // SIZES["num_attention_heads"]
    wqkv = state["model.layers.1.attention.wqkv.weight"]
    # the remote code's own reading of wqkv: rows (kv, groups + 2, d), queries first, then k, then v
    grouped = wqkv.view(kv, heads // kv + 2, d, -1)
    attn = model.model.layers[1].self_attn
    assert torch.equal(attn.q_proj.weight, grouped[:, :heads // kv].reshape(heads * d, -1))
    assert torch.equal(attn.k_proj.weight, grouped[:, -2].reshape(kv * d, -1))
    assert torch.equal(attn.v_proj.weight, grouped[:, -1].reshape(kv * d, -1))
    assert torch.equal(model.lm_head.weight, state["output.weight"])
    assert torch.equal(model.model.embed_tokens.weight, state["model.tok_embeddings.weight"])
    assert torch.equal(model.model.layers[1].mlp.gate_proj.weight, state["model.layers.1.feed_forward.w1.weight"])
    assert torch.equal(model.model.layers[1].mlp.down_proj.weight, state["model.layers.1.feed_forward.w2.weight"])
    assert model.config.rope_parameters["rope_type"] == "dynamic" and model.config.rope_parameters["factor"] == 2.0
    assert model.config._attn_implementation == "sdpa"  # not the checkpoint's "eager"


def rotate_half(x):
    return torch.cat([-x[..., x.shape[-1] // 2:], x[..., : x.shape[-1] // 2]], dim=-1)


def test_one_layers_attention_by_hand_from_the_fused_wqkv(ckpt):
    """InternLM2's attention written out from its checkpoint tensors (fused wqkv, grouped rows, GQA,
    causal softmax) equals the converted model's attention module."""
    model = load(ckpt)
    state = load_file(ckpt / "model.safetensors")
    kv, heads, h = SIZES["num_key_value_heads"], SIZES["num_attention_heads"], SIZES["hidden_size"]
    d, groups, n = h // heads, heads // kv, 9
    x = torch.randn(1, n, h, generator=torch.Generator().manual_seed(0))
    positions = torch.arange(n)[None]
    cos, sin = model.model.rotary_emb(x, positions)
    with torch.no_grad():
        ours = model.model.layers[2].self_attn(x, position_embeddings=(cos, sin), attention_mask=None)[0]
        qkv = (x @ state["model.layers.2.attention.wqkv.weight"].T).view(1, n, kv, groups + 2, d)
        q = qkv[..., :groups, :].reshape(1, n, heads, d).transpose(1, 2)
        k = qkv[..., -2, :].transpose(1, 2).repeat_interleave(groups, dim=1)
        v = qkv[..., -1, :].transpose(1, 2).repeat_interleave(groups, dim=1)
        q, k = q * cos[:, None] + rotate_half(q) * sin[:, None], k * cos[:, None] + rotate_half(k) * sin[:, None]
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(d)
        scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
        out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(1, n, h)
        by_hand = out @ state["model.layers.2.attention.wo.weight"].T
    torch.testing.assert_close(ours, by_hand, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(4, 2, 8, 16), (8, 8, 4, 3)], ids=["gqa-weight", "mha-bias-like"])
def test_split_then_fuse_gives_the_original_bits(shape):
    kv, groups, d, cols = shape
    wqkv = torch.randn(kv * (groups + 2) * d, cols)
    q, k, v = internlm2.split_wqkv(wqkv, kv, groups, d)
    assert q.shape == (kv * groups * d, cols) and k.shape == v.shape == (kv * d, cols)
    assert torch.equal(internlm2.fuse_wqkv(q, k, v, kv, groups, d), wqkv)
    bias = torch.randn(kv * (groups + 2) * d)
    assert torch.equal(internlm2.fuse_wqkv(*internlm2.split_wqkv(bias, kv, groups, d), kv, groups, d), bias)


def test_save_pretrained_writes_the_checkpoint_back_bit_for_bit(ckpt, tmp_path):
    load(ckpt).save_pretrained(tmp_path / "again")
    before, after = load_file(ckpt / "model.safetensors"), load_file(tmp_path / "again" / "model.safetensors")
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_a_wqkv_that_does_not_fit_the_config_is_a_clear_error(ckpt, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(ckpt, bad)
    state = load_file(bad / "model.safetensors")
    state["model.layers.3.attention.wqkv.weight"] = state["model.layers.3.attention.wqkv.weight"][:-32]
    save_file(state, str(bad / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(MmtuneError) as info:
        load(bad)
    message = info.value.format()
    assert "model.layers.3.attention.wqkv.weight has 224 rows but" in message and "need 256" in message
    assert "from different checkpoints" in message and "\n" not in message


def test_the_tokenizer_is_built_natively_from_tokenizer_model(ckpt):
    import sentencepiece as spm
    from transformers import AutoTokenizer

    tok = load_pretrained(AutoTokenizer, ckpt, "the tokenizer", trust_remote_code=True)
    assert type(tok).__module__.startswith("transformers.") and tok.is_fast
    sp = spm.SentencePieceProcessor(model_file=str(ckpt / "tokenizer.model"))
    for text in ["Who are you? I am Nova.", "你是谁？我是小助手。", "  two  spaces\nand 123 digits", "café 😀"]:
        assert tok(text, add_special_tokens=False).input_ids == sp.encode(text)
    for special in SPECIALS:  # single ids, the tokenizer.model's own (not appended past the vocabulary)
        assert tok(special, add_special_tokens=False).input_ids == [sp.piece_to_id(special)]
    rendered = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert rendered == "<s><|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_the_internlm2_chat_template_matches_the_checkpoints_own(ckpt):
    from transformers import AutoTokenizer

    from mmtune.data.conversation import Message
    from mmtune.data.templates import get_template

    tok = load_pretrained(AutoTokenizer, ckpt, "the tokenizer")
    messages = [Message("system", "Be brief."), Message("user", "who are you?"), Message("assistant", "Nova."),
                Message("user", "你是谁")]
    ours = get_template("internlm2_chat").render(messages, add_generation_prompt=True)[0]
    official = tok.apply_chat_template([{"role": m.role, "content": m.content} for m in messages], tokenize=False,
                                       add_generation_prompt=True)
    assert ours == official
    assert get_template("auto", tok).stop_words() == ["<|im_end|>", "</s>"]  # the end of turn first, then eos


def test_llama_layout_loads_in_plain_transformers_with_the_same_logits(ckpt, tmp_path):
    from mmtune.export.layout import save_model

    model = load(ckpt)
    save_model(model, tmp_path / "llama")
    config = json.loads((tmp_path / "llama" / "config.json").read_text())
    assert config["model_type"] == "llama" and "auto_map" not in config and "bias" not in config
    ids = torch.randint(10, 2000, (1, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model(input_ids=ids).logits
    torch.save(ids, tmp_path / "ids.pt")
    code = ("import sys, torch; from transformers import AutoModelForCausalLM as A;"
            "m = A.from_pretrained(sys.argv[1], dtype=torch.float32).eval(); ids = torch.load(sys.argv[2]);"
            "assert type(m).__name__ == 'LlamaForCausalLM', type(m); torch.save(m(input_ids=ids).logits, sys.argv[3])")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "llama"), str(tmp_path / "ids.pt"),
                    str(tmp_path / "out.pt")], check=True, cwd=tmp_path)  # a process that never imports mmtune
    torch.testing.assert_close(torch.load(tmp_path / "out.pt"), ours, rtol=0, atol=1e-5)


def test_internlm2_layout_export_is_the_checkpoints_own_format(ckpt, tmp_path):
    from mmtune.export.layout import save_model

    model = load(ckpt)
    save_model(model, tmp_path / "ilm2", layout="internlm2", base=str(ckpt))
    assert json.loads((tmp_path / "ilm2" / "config.json").read_text()) == json.loads((ckpt / "config.json").read_text())
    again = load_file(tmp_path / "ilm2" / "model.safetensors")
    original = load_file(ckpt / "model.safetensors")
    assert again.keys() == original.keys() and all(torch.equal(again[k], original[k]) for k in original)
    with pytest.raises(MmtuneError, match="needs a text model trained from an InternLM2 checkpoint"):
        from mmtune.testing.tiny import tiny_lm_dir

        save_model(load(tiny_lm_dir("qwen2")), tmp_path / "x", layout="internlm2")
