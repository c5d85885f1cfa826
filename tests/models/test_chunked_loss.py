"""The chunked cross-entropy equals transformers' own loss, and its gradients autograd's.

Function level: loss and the gradients of hidden states, head weight and bias against
`cross_entropy(linear(...).float())`, over several chunks, with ignored targets, with
`num_items_in_batch`, in bfloat16, and with a frozen head (no weight gradient at all). Model level:
every class of the allow-list, built from a tiny real config, trains to the same loss and the same
parameter gradients through `ChunkedLoss` (called as the trainer's `compute_loss` calls it) as through
its own forward, for `labels` (padded batches) and for the packed collator's `logits_to_keep` +
`shift_labels`; LoRA through peft; and a LLaVA model. The model itself is left as it was.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmtune.models.chunked_loss import PLAIN_HEAD_CLASSES, ChunkedLoss, linear_cross_entropy, supports_chunked_loss
from mmtune.testing.classes import assert_same_step, batches, loss_and_grads, tiny_causal_lm


def plain_loss(hidden, weight, bias, targets, num_items_in_batch=None):
    logits = nn.functional.linear(hidden, weight, bias).float()
    reduction = "sum" if num_items_in_batch is not None else "mean"
    loss = nn.functional.cross_entropy(logits, targets, ignore_index=-100, reduction=reduction)
    return loss / num_items_in_batch if num_items_in_batch is not None else loss


def make_inputs(dtype=torch.float32, n=37, h=16, v=50, bias=True, ignored=(3, 4, 20)):
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(n, h, generator=g).to(dtype).requires_grad_()
    weight = torch.randn(v, h, generator=g).to(dtype).requires_grad_()
    b = torch.randn(v, generator=g).to(dtype).requires_grad_() if bias else None
    targets = torch.randint(0, v, (n,), generator=g)
    targets[list(ignored)] = -100
    return hidden, weight, b, targets


def grads_of(loss, tensors):
    return torch.autograd.grad(loss * 3.0, [t for t in tensors if t is not None])  # a non-unit upstream gradient


@pytest.mark.parametrize("chunk_rows", [1, 8, 1000])
@pytest.mark.parametrize("num_items", [None, 50])
def test_loss_and_gradients_equal_autograd(chunk_rows, num_items):
    hidden, weight, bias, targets = make_inputs()
    ours = linear_cross_entropy(hidden, weight, bias, targets, num_items_in_batch=num_items, chunk_rows=chunk_rows)
    ref = plain_loss(hidden, weight, bias, targets, num_items)
    torch.testing.assert_close(ours, ref)
    ours_grads = grads_of(ours, (hidden, weight, bias))
    for a, b in zip(ours_grads, grads_of(ref, (hidden, weight, bias)), strict=True):
        torch.testing.assert_close(a, b)
    assert ours_grads[0][[3, 4, 20]].abs().max() == 0  # ignored positions get exactly zero gradient


def test_default_chunk_follows_the_device_budget(monkeypatch):
    import mmtune.models.chunked_loss as cl

    hidden, weight, bias, targets = make_inputs()  # vocabulary 50
    seen = []
    real_apply = cl._ChunkedLinearCrossEntropy.apply
    monkeypatch.setattr(cl._ChunkedLinearCrossEntropy, "apply", lambda *a: seen.append(a[-1]) or real_apply(*a))
    monkeypatch.setattr(cl, "CPU_CHUNK_ELEMENTS", 50 * 6)
    monkeypatch.setattr(cl, "MIN_CHUNK_ROWS", 2)
    torch.testing.assert_close(linear_cross_entropy(hidden, weight, bias, targets), plain_loss(hidden, weight, bias, targets))
    assert seen == [6]  # CPU tensors: the CPU budget (GPU tensors get CHUNK_ELEMENTS)
    assert cl.CPU_CHUNK_ELEMENTS < cl.CHUNK_ELEMENTS


def test_large_vocabularies_still_get_chunks_of_256_tokens():
    import mmtune.models.chunked_loss as cl

    assert cl.rows_per_chunk(4096, cl.CPU_CHUNK_ELEMENTS) == 1024  # the budget decides for small vocabularies
    assert cl.rows_per_chunk(151936, cl.CPU_CHUNK_ELEMENTS) == 256  # not 27: small GEMMs and many accumulator passes
    assert cl.rows_per_chunk(151936, cl.CHUNK_ELEMENTS) == 256
    assert cl.rows_per_chunk(32000, cl.CHUNK_ELEMENTS) == 1048


def test_bfloat16_matches_autograd_within_rounding():
    hidden, weight, bias, targets = make_inputs(torch.bfloat16, n=64, h=32, v=300, bias=False)
    ours = linear_cross_entropy(hidden, weight, None, targets, chunk_rows=16)
    ref = plain_loss(hidden, weight, None, targets)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, ref, atol=1e-2, rtol=1e-2)
    g_ours, g_ref = grads_of(ours, (hidden, weight)), grads_of(ref, (hidden, weight))
    for a, b in zip(g_ours, g_ref):
        assert a.dtype == b.dtype == torch.bfloat16
        torch.testing.assert_close(a.float(), b.float(), atol=2e-2, rtol=5e-2)


def test_frozen_head_gets_no_weight_gradient():
    hidden, weight, bias, targets = make_inputs(bias=False)
    weight.requires_grad_(False)
    loss = linear_cross_entropy(hidden, weight, None, targets, chunk_rows=5)
    loss.backward()
    assert weight.grad is None and hidden.grad is not None
    ref_hidden = hidden.detach().clone().requires_grad_()
    plain_loss(ref_hidden, weight, None, targets).backward()
    torch.testing.assert_close(hidden.grad, ref_hidden.grad)


def test_a_wrong_implementation_would_be_caught():
    """The comparison is sharp enough to see a gradient that misses the one-hot term."""
    hidden, weight, bias, targets = make_inputs()
    ref = grads_of(plain_loss(hidden, weight, bias, targets), (hidden,))[0]
    logits = nn.functional.linear(hidden, weight, bias).float()
    keep = targets != -100
    softmax_only = torch.zeros_like(hidden)
    softmax_only[keep] = (logits[keep].softmax(-1) @ weight) * 3.0 / keep.sum()
    with pytest.raises(AssertionError):
        torch.testing.assert_close(softmax_only, ref)


# --- models ---------------------------------------------------------------------------------------

TEXT_CLASSES = sorted(PLAIN_HEAD_CLASSES - {"LlavaForConditionalGeneration"})


@pytest.mark.parametrize("class_name", TEXT_CLASSES)
def test_each_allowed_class_trains_exactly_as_its_own_forward(class_name):
    model = tiny_causal_lm(class_name).train()
    for name, batch in batches().items():
        ref = loss_and_grads(model, batch)
        other = tiny_causal_lm(class_name).train()
        chunked = ChunkedLoss.for_model(other)
        assert chunked is not None
        assert_same_step(loss_and_grads(other, batch, chunked), ref, f"{class_name} {name}")


def test_num_items_in_batch_and_no_vocabulary_sized_logits():
    model = tiny_causal_lm("Qwen2ForCausalLM").train()
    batch = batches()["padded"]
    ref = model(**batch, num_items_in_batch=torch.tensor(40)).loss
    loss, out = ChunkedLoss.for_model(model)(model, batch, torch.tensor(40))
    torch.testing.assert_close(loss, ref)
    assert out.logits.shape == (batch["input_ids"].shape[0], 1, 97)  # the head ran on one position per row


def test_the_model_is_left_as_it_was():
    """No method of the model is replaced and no hook outlives a call: evaluation and generation
    run exactly the class's forward."""
    model = tiny_causal_lm("LlamaForCausalLM").train()
    chunked = ChunkedLoss.for_model(model)
    chunked(model, batches()["packed"])
    assert "forward" not in vars(model) and model.forward.__func__ is type(model).forward
    assert not chunked.decoder._forward_hooks and not model._forward_hooks
    generated = model.eval().generate(batches()["padded"]["input_ids"][:1, :5], max_new_tokens=3, do_sample=False)
    assert generated.shape == (1, 8)


def test_lora_through_peft_matches_and_trains_only_adapters():
    from peft import LoraConfig, get_peft_model

    def lora():
        torch.manual_seed(0)
        m = get_peft_model(tiny_causal_lm("Qwen2ForCausalLM"), LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
        return m.train()

    batch = batches()["packed"]
    ref_loss, ref_grads = loss_and_grads(lora(), batch)
    model = lora()
    loss, grads = loss_and_grads(model, batch, ChunkedLoss.for_model(model))
    torch.testing.assert_close(loss, ref_loss)
    assert grads.keys() == ref_grads.keys() and all("lora_" in k for k in grads)
    for key in grads:
        torch.testing.assert_close(grads[key], ref_grads[key], atol=1e-6, rtol=1e-4)


def test_refused_where_the_head_is_not_plain():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_causal_lm("Qwen2ForCausalLM"), LoraConfig(r=4, target_modules=["q_proj", "lm_head"]))
    assert "lm_head" in supports_chunked_loss(model)
    assert ChunkedLoss.for_model(model) is None

    class Custom(nn.Module):
        def forward(self, x):
            return x

    assert "not one mmtune knows" in supports_chunked_loss(Custom())


def test_llava_trains_exactly_as_its_own_forward():
    from mmtune.models.llava import build_llava
    from mmtune.testing.tiny import tiny_lm_dir
    from mmtune.testing.tiny_vision import tiny_image, tiny_vision_dir

    def build():
        torch.manual_seed(0)
        model, processor = build_llava(str(tiny_lm_dir("qwen2")), str(tiny_vision_dir("clip")), attn_implementation="sdpa")
        return model.float().train(), processor

    model, processor = build()
    enc = processor(images=[tiny_image(0)], text=["<image>\nWhat is it? A red square."], return_tensors="pt")
    labels = enc["input_ids"].clone()
    labels[:, : labels.shape[1] - 4] = -100
    batch = {**enc, "labels": labels}
    ref_loss, ref_grads = loss_and_grads(model, batch)
    other, _ = build()
    loss, grads = loss_and_grads(other, batch, ChunkedLoss.for_model(other))
    torch.testing.assert_close(loss, ref_loss)
    assert any(k.startswith("model.vision_tower") or "vision" in k for k in grads)  # images reached the loss
    for key in grads:
        torch.testing.assert_close(grads[key], ref_grads[key], atol=1e-6, rtol=1e-4)
