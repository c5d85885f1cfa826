"""`estimate-memory` against the peak tensor memory of a real training step, measured on CPU.

torch's memory profiler (its memory timeline) records every tensor a step allocates and frees
on the CPU, which is what `torch.cuda.max_memory_allocated` sees on a GPU: parameters, optimizer
states, activations, logits and loss buffers, gradients. One AdamW step (the second, so the
optimizer states exist) of a 2-layer Qwen2 with a 64k vocabulary in bf16, the estimate without its
CUDA overhead next to it. The CPU loss chunk is smaller than the GPU's, so the estimate is asked with
the CPU's chunk budget. The estimate adds its parts; a single step of a full fine-tune frees
activations while gradients appear, so there the sum errs high (it must never be under).
"""

from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch

import mmtune.models.chunked_loss as chunked
from mmtune.testing.profiling import ProfiledPeak
import mmtune.estimate as M

SEQ, VOCAB = 512, 64000


def config():
    from transformers import Qwen2Config

    return Qwen2Config(hidden_size=256, intermediate_size=704, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, vocab_size=VOCAB, tie_word_embeddings=True, max_position_embeddings=1024)


class Lora:
    r, alpha, target_modules, modules_to_save = 8, 16, "all-linear", []


def profiled_peak(method: str, savers: bool) -> int:
    from transformers import AutoModelForCausalLM

    from mmtune.models.fused_layers import fused_layers

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config(), attn_implementation="sdpa").to(torch.bfloat16)
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear"))
    loss_fn = chunked.ChunkedLoss.for_model(model) if savers else None
    with fused_layers(model) if savers else nullcontext():
        return _peak_of_second_step(model.train(), loss_fn)


def _peak_of_second_step(model, loss_fn) -> int:
    """One AdamW step, then the profiled peak of the next."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5, fused=True)
    ids = torch.randint(3, VOCAB - 10, (1, SEQ), generator=torch.Generator().manual_seed(0))

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16):  # as the Trainer runs bf16=True
            batch = {"input_ids": ids, "labels": ids, "use_cache": False}
            loss = loss_fn(model, batch)[0] if loss_fn else model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)  # as the Trainer does

    step()
    with ProfiledPeak() as profiled:
        step()
    return profiled.peak


@pytest.mark.parametrize("method,savers,low,high", [
    ("lora", False, 0.95, 1.05), ("lora", True, 0.93, 1.07),
    ("full", False, 1.0, 1.2), ("full", True, 1.0, 1.35),
], ids=["lora-plain", "lora-chunked-fused", "full-plain", "full-chunked-fused"])
def test_estimate_against_the_profiled_peak_of_a_step(method, savers, low, high, monkeypatch):
    measured = profiled_peak(method, savers)
    monkeypatch.setattr(chunked, "CHUNK_ELEMENTS", chunked.CPU_CHUNK_ELEMENTS)  # the chunk this CPU step used
    size = M.count_model(config(), Lora if method == "lora" else None)
    est = M.estimate(size, M.Setup(method=method, precision="bf16", seq_len=SEQ, chunked_loss=savers,
                                   fused_layers=savers, lora_rank=8))
    predicted = est.total - est.parts["overhead"]
    assert low <= predicted / measured <= high, (predicted / 2**20, measured / 2**20, est.parts)


def test_the_chunked_loss_keeps_one_chunk_at_a_time():
    """Peak of the loss and its backward: the hidden-state gradient plus one chunk's fp32 logits and their
    bf16 copy, 4 + 2 bytes per logit (not torch.logsumexp's two extra temporaries, nor the previous
    chunk's logits)."""
    n, h, rows = 2048, 256, 256
    hidden = torch.randn(n, h, dtype=torch.bfloat16, requires_grad=True)
    weight = torch.randn(VOCAB, h, dtype=torch.bfloat16)
    targets = torch.randint(0, VOCAB, (n,))
    with ProfiledPeak() as profiled:
        chunked.linear_cross_entropy(hidden, weight, None, targets, chunk_rows=rows).backward()
    peak = profiled.peak - profiled.start
    one_chunk = rows * VOCAB * (4 + 2) + n * h * 2
    assert one_chunk <= peak <= one_chunk * 1.1, (peak, one_chunk)
