"""Training on a CUDA GPU: what the CPU suite cannot show (bf16 on the GPU, QLoRA's 4-bit CUDA layers,
the memory savers and the varlen packed attention on CUDA kernels).

Every test here is marked `gpu` and skipped without CUDA; `bench/gpu_check.sh tests` runs them on a
GPU machine (README "Tests"). Tiny models, so each run takes seconds.
"""

from __future__ import annotations

import pytest
import torch

from mmtune.testing.runs import NAME, self_cognition_recipe, write_self_cognition
from mmtune.testing.tiny import tiny_lm_dir

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def run(tmp_path, method: str, **train):
    from mmtune.models import varlen_attention
    from mmtune.train.run import run_training

    varlen_attention.reset()  # so this run checks the kernel, and logs it, again
    data = write_self_cognition(tmp_path / "self.jsonl")
    recipe = self_cognition_recipe(
        tiny_lm_dir("qwen2"), data, method={"type": method},
        train={"device": "cuda", "precision": "bf16", "max_steps": 150, "save_steps": 0, **train},
    )
    return run_training(recipe, tmp_path / "work")


def losses(result) -> list[float]:
    return [h["loss"] for h in result.log_history if "loss" in h]


@pytest.mark.parametrize("method,lr", [("lora", 3e-3), ("full", 1e-3)])
def test_bf16_training_on_cuda_learns_the_name(tmp_path, method, lr):
    result = run(tmp_path, method, lr=lr)
    assert losses(result)[-1] < losses(result)[0] / 4, losses(result)
    last = [s for s in result.samples if s["step"] == 150]
    if method == "lora":  # the CPU suite's recipe (tests/train/test_train_lora.py), now bf16 on CUDA
        assert last and NAME in last[0]["answer"], last
    log = (result.work_dir / "train.log").read_text()
    assert "device cuda" in log and "precision bf16" in log
    assert "loss: chunked cross-entropy" in log and "fused layers:" in log
    assert "torch's varlen flash kernel (checked against SDPA" in log, "packed rows did not take the varlen kernel"
    peaks = [h["peak_gpu_mem_gib"] for h in result.log_history if "loss" in h]
    assert peaks and 0 < peaks[-1] < 4, peaks  # a tiny model: far under a GiB of tensors
    assert "peak memory: GPU " in log


def test_qlora_on_cuda_quantizes_and_learns(tmp_path):
    pytest.importorskip("bitsandbytes")
    result = run(tmp_path, "qlora", lr=3e-3)
    assert losses(result)[-1] < losses(result)[0] / 4, losses(result)
    log = (result.work_dir / "train.log").read_text()
    assert "method qlora" in log


def test_memory_savers_match_the_plain_step_on_cuda():
    """Chunked loss + fused layers vs transformers' own loss and modules, bf16 on CUDA: same loss and
    gradients to bf16 rounding."""
    from transformers import AutoModelForCausalLM

    from contextlib import nullcontext

    from mmtune.models.chunked_loss import ChunkedLoss
    from mmtune.models.fused_layers import fused_layers

    def step(savers: bool):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir("qwen2"), dtype=torch.bfloat16).cuda().train()
        g = torch.Generator().manual_seed(1)
        ids = torch.randint(5, 200, (2, 64), generator=g).cuda()
        batch = {"input_ids": ids, "labels": ids, "use_cache": False}
        loss_fn = ChunkedLoss.for_model(model) if savers else None
        with fused_layers(model) if savers else nullcontext() as counts:
            assert not savers or (loss_fn is not None and all(counts))
            loss = loss_fn(model, batch)[0] if loss_fn else model(**batch).loss
            loss.backward()
        return loss.float().item(), {n: p.grad.float() for n, p in model.named_parameters() if p.grad is not None}

    (loss_a, grads_a), (loss_b, grads_b) = step(True), step(False)
    assert loss_a == pytest.approx(loss_b, rel=1e-2)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        a, b = grads_a[name].flatten(), grads_b[name].flatten()
        cos = torch.nn.functional.cosine_similarity(a, b, dim=0).item()
        assert cos > 0.99, (name, cos)
