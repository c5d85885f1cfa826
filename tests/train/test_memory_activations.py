"""The activation term of `estimate-memory` against what autograd really keeps.

For Llama-style decoder layers (Qwen2 with grouped key/value heads, Llama with plain multi-head
attention) the bytes `decoder_layer_bytes` predicts per token must equal the bytes of the tensors
transformers' modules save for backward (counted with saved-tensor hooks, each storage once,
parameters excluded; one layer = a 3-layer model minus a 2-layer one), for full fine-tunes and LoRA,
bf16 and fp32, with and without `train.fused_layers`, sdpa and eager attention. On a GPU the flash /
memory-efficient kernels save the same q, k, v, output and log-sum-exp as the CPU's flash kernel.
"""

from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch

from mmtune.estimate import Setup, count_model, decoder_layer_bytes

SEQ = 64


def config(family: str, layers: int):
    from transformers import LlamaConfig, Qwen2Config

    common = dict(hidden_size=128, intermediate_size=352, num_hidden_layers=layers, num_attention_heads=4,
                  vocab_size=512, max_position_embeddings=256)
    if family == "qwen2":
        return Qwen2Config(num_key_value_heads=2, **common)
    return LlamaConfig(num_key_value_heads=4, **common)


def saved_bytes(family: str, layers: int, *, dtype, method: str, fused: bool, attention: str) -> int:
    from transformers import AutoModelForCausalLM

    from mmtune.models.fused_layers import fused_layers

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config(family, layers), attn_implementation=attention).to(dtype)
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear"))
    with fused_layers(model) if fused else nullcontext() as counts:
        assert not fused or counts != (0, 0)
        return _saved_bytes(model.train(), dtype)


def _saved_bytes(model, dtype) -> int:
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params and SEQ in t.shape:  # per-token tensors, not autocast's weight copies
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    ids = torch.randint(3, 500, (1, SEQ), generator=torch.Generator().manual_seed(1))
    # bf16 training runs under autocast (the Trainer's bf16=True), which decides what LoRA's fp32 adapters keep
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16), \
            torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(input_ids=ids, use_cache=False)
    del out
    return sum(storages.values())


CASES = [
    ("qwen2", torch.bfloat16, "full", False, "sdpa"),
    ("qwen2", torch.bfloat16, "full", True, "sdpa"),
    ("qwen2", torch.bfloat16, "lora", False, "sdpa"),
    ("qwen2", torch.bfloat16, "lora", True, "sdpa"),
    ("qwen2", torch.float32, "full", False, "sdpa"),
    ("qwen2", torch.float32, "lora", True, "sdpa"),
    ("llama", torch.bfloat16, "full", False, "sdpa"),
    ("llama", torch.bfloat16, "full", False, "eager"),
    ("llama", torch.float32, "lora", False, "eager"),
]


@pytest.mark.parametrize("family,dtype,method,fused,attention", CASES,
                         ids=["-".join(map(str, (c[0], str(c[1]).split(".")[1], *c[2:]))) for c in CASES])
def test_decoder_layer_bytes_equal_what_autograd_keeps(family, dtype, method, fused, attention):
    kw = dict(dtype=dtype, method=method, fused=fused, attention=attention)
    measured = (saved_bytes(family, 3, **kw) - saved_bytes(family, 2, **kw)) / SEQ
    size = count_model(config(family, 3))
    setup = Setup(method=method, precision="bf16" if dtype == torch.bfloat16 else "fp32", seq_len=SEQ,
                  attention=attention, fused_layers=fused, lora_rank=8)
    predicted = decoder_layer_bytes(size, setup, SEQ, 2 if dtype == torch.bfloat16 else 4, method)
    assert predicted == pytest.approx(measured, rel=0.01), (predicted, measured)


def test_the_count_reads_the_shapes_that_matter():
    size = count_model(config("qwen2", 3))
    assert (size.hidden_size, size.intermediate_size, size.kv_size, size.num_heads) == (128, 352, 64, 4)
    assert count_model(config("llama", 3)).kv_size == 128  # no grouped key/value heads


def test_fused_layers_count_only_where_they_run():
    size = count_model(config("qwen2", 3))
    plain, fused = (Setup(method="full", fused_layers=f) for f in (False, True))
    assert decoder_layer_bytes(size, fused, SEQ, 2, "full") < decoder_layer_bytes(size, plain, SEQ, 2, "full")
    zero3 = Setup(method="full", fused_layers=True, strategy="zero3")  # off under ZeRO-3, as in training
    assert decoder_layer_bytes(size, zero3, SEQ, 2, "full") == decoder_layer_bytes(size, plain, SEQ, 2, "full")
