"""Cross-entropy over the vocabulary in chunks, without keeping full-vocabulary logits.

A causal LM's training loss is `cross_entropy(lm_head(hidden), targets)`. Through autograd that
keeps the logits, their float32 copy and log-softmax (tokens x vocab each) alive from the end of
the forward to the start of the backward, then builds their gradients: on a Qwen2 vocabulary
(151,936) at 4k tokens that is ~2.5 GB per float32 tensor. `linear_cross_entropy` computes the
loss and, in the same pass, the gradients of the hidden states and the head weight, a chunk of
tokens at a time; only the chunk's logits exist at once, and what waits for the backward is the
hidden-state gradient (tokens x hidden) and, when the head trains, its weight gradient (which
autograd would allocate anyway). The arithmetic is the same as autograd's (softmax - one-hot),
so the loss and gradients equal the plain path's to rounding (tests/models/test_chunked_loss.py).

`ChunkedLoss.for_model(model)` gives the training loss of a model without changing the model:
the trainer's `compute_loss` calls it with the batch (`mmtune.train.trainer`). It runs the model's
own forward (through any DDP / DeepSpeed wrapper) with `logits_to_keep=1`, so the head projects one
position per row, takes the decoder's output (the head's input) with a forward hook that lives for
that one call, and computes the loss from it and the head's weight. Only for transformers classes
whose forward is the plain "decoder -> lm_head -> causal LM loss" (the allow-list below, checked by
the tests against the class's own forward). Evaluation and generation are untouched. Not used when
the head is not a plain `nn.Linear` (LoRA on `lm_head`, `modules_to_save`) or its weight is sharded
(DeepSpeed ZeRO-3, FSDP), where the weight is only whole inside the head's own forward.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from mmtune.constants import IGNORE_INDEX
from mmtune.models.patching import transformers_forward_class

log = logging.getLogger(__name__)

# Logit elements per chunk (float32) on GPUs: 32M = 128 MiB; Qwen2's 151,936 vocabulary takes 220
# tokens at once (GEMMs that keep the GPU busy; `estimate-memory` counts this size).
CHUNK_ELEMENTS = 1 << 25
# On CPU: 4M = 16 MiB. The chunk is alive at the end of the forward, when activations peak, and CPU
# GEMMs are as fast in small pieces: on the peer-bench kit (vocabulary 4,096) this took the packed
# peak RSS ~25 MiB lower than 2^25 at the same speed (2^20-2^22 measured alike).
CPU_CHUNK_ELEMENTS = 1 << 22
# Fewer tokens per chunk than this and large vocabularies get slow: small GEMMs, and (full
# fine-tunes) one read + write of the float32 head-gradient accumulator per chunk. Measured on CPU
# (Qwen2's 151,936 vocabulary, hidden 896, 1,024 tokens): 27 rows per chunk took 1.6-1.8x the plain
# loss's time, 128 rows or more was faster than it (BENCHMARKS.md).
MIN_CHUNK_ROWS = 256


def rows_per_chunk(vocab_size: int, budget: int) -> int:
    """Tokens per chunk: the elements budget over the vocabulary, but at least MIN_CHUNK_ROWS."""
    return max(MIN_CHUNK_ROWS, budget // vocab_size)
# transformers classes whose forward is decoder -> slice_logits_to_keep -> lm_head -> ForCausalLMLoss
# (no logit soft-capping or scaling, no auxiliary loss); subclasses that keep that forward qualify.
PLAIN_HEAD_CLASSES = frozenset({
    "LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM",
    "Phi3ForCausalLM", "GemmaForCausalLM", "Olmo2ForCausalLM", "LlavaForConditionalGeneration",
})


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, divisor, chunk_rows):
        want_hidden, want_weight, want_bias = ctx.needs_input_grad[:3]
        grad_hidden = torch.empty_like(hidden) if want_hidden else None
        # float32 accumulators across chunks; handed back in the parameters' dtypes
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if want_weight else None
        grad_bias = torch.zeros_like(bias, dtype=torch.float32) if want_bias else None
        total = hidden.new_zeros((), dtype=torch.float32)
        for start in range(0, hidden.shape[0], chunk_rows):
            h = hidden[start:start + chunk_rows]
            t = targets[start:start + chunk_rows]
            logits = nn.functional.linear(h, weight, bias).float()
            target_logits = logits.gather(1, t[:, None]).squeeze(1)
            # log-sum-exp and softmax in the logits' own memory: torch.logsumexp would allocate two
            # more chunk-sized float32 temporaries (12 bytes per logit at its peak instead of 4 + c)
            top = logits.amax(dim=-1, keepdim=True)
            sumexp = logits.sub_(top).exp_().sum(dim=-1)
            total += (sumexp.log() + top.squeeze(1) - target_logits).sum()
            # d(sum of losses)/d(logits) = softmax - one-hot
            grad = logits.div_(sumexp[:, None])
            grad[torch.arange(len(t), device=grad.device), t] -= 1
            if want_weight:
                grad_weight.addmm_(grad.t(), h.float())
            if want_bias:
                grad_bias += grad.sum(0)
            if want_hidden:
                torch.matmul(grad.to(h.dtype), weight, out=grad_hidden[start:start + chunk_rows])
            del logits, grad  # before the next chunk's logits exist, not after
        ctx.save_for_backward(grad_hidden, grad_weight, grad_bias)
        ctx.divisor = divisor
        ctx.dtypes = (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
        return total / divisor

    @staticmethod
    def backward(ctx, grad_loss):
        scale = grad_loss / ctx.divisor
        grads = []
        for g, dtype in zip(ctx.saved_tensors, ctx.dtypes):
            if g is None:
                grads.append(None)
                continue
            out = g.to(dtype)  # the head's float32 accumulator -> a bf16 copy: scale that copy in place
            grads.append(out.mul_(scale) if out is not g else g * scale)  # (no float32 temporary of V x h)
        return (*grads, None, None, None)


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                         targets: torch.Tensor, num_items_in_batch=None, ignore_index: int = IGNORE_INDEX,
                         chunk_rows: int | None = None) -> torch.Tensor:
    """`cross_entropy(linear(hidden, weight, bias).float(), targets)` reduced as transformers'
    causal-LM loss does: the mean over non-ignored targets, or their sum / `num_items_in_batch`
    when given (gradient accumulation across micro-batches). hidden (..., H), targets (...)."""
    hidden = hidden.reshape(-1, hidden.shape[-1])
    targets = targets.reshape(-1).to(hidden.device)
    keep = targets != ignore_index
    if not bool(keep.all()):  # padded / prompt positions: no logits at all
        hidden, targets = hidden[keep], targets[keep]
    divisor = num_items_in_batch if num_items_in_batch is not None else targets.numel()
    if torch.is_tensor(divisor):
        divisor = divisor.to(hidden.device)
    budget = CHUNK_ELEMENTS if hidden.device.type != "cpu" else CPU_CHUNK_ELEMENTS
    rows = chunk_rows or rows_per_chunk(weight.shape[0], budget)
    return _ChunkedLinearCrossEntropy.apply(hidden, weight, bias, targets, divisor, rows)


def _base(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model  # peft


def supports_chunked_loss(model) -> str | None:
    """None when the chunked loss can train `model` (a transformers model, peft-wrapped or not),
    else why not."""
    base = _base(model)
    if transformers_forward_class(base) not in PLAIN_HEAD_CLASSES:
        return f"{type(base).__name__}'s forward is not one mmtune knows to be decoder -> lm_head -> loss"
    return _head_problem(getattr(base, "lm_head", None))


def _head_problem(head) -> str | None:
    """Why `head` cannot feed `linear_cross_entropy` (None: it can)."""
    if type(head) is not nn.Linear:
        return f"its lm_head is a {type(head).__name__} (LoRA / modules_to_save on the head), not a plain Linear"
    if hasattr(head.weight, "ds_id") or type(head.weight).__name__ == "DTensor":
        return "its lm_head weight is sharded (ZeRO-3 / FSDP)"
    return None


@dataclass
class ChunkedLoss:
    """The causal-LM loss of one model, computed from its decoder's output and its head's weight."""

    decoder: nn.Module  # the module whose output's first field feeds lm_head (`model.model`)
    head: nn.Linear

    @classmethod
    def for_model(cls, model) -> "ChunkedLoss | None":
        """The chunked loss of `model`, or None (logged) when it keeps its own loss."""
        why_not = supports_chunked_loss(model)
        if why_not:
            log.info("chunked loss off: %s", why_not)
            return None
        base = _base(model)
        return cls(base.model, base.lm_head)

    def __call__(self, model, inputs: dict, num_items_in_batch=None):
        """(loss, outputs) of `model` (the model this was made for, or a DDP / DeepSpeed wrapper of
        it) on a training batch with `labels` (and the collator's `logits_to_keep` mask and
        `shift_labels`, when it gives them): the class's own loss, with no vocabulary-sized logits.
        `num_items_in_batch` divides the summed loss as transformers' causal-LM loss does."""
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        shift_labels = inputs.pop("shift_labels", None)
        keep = inputs.pop("logits_to_keep", 0)
        inputs.pop("num_items_in_batch", None)
        captured = []
        handle = self.decoder.register_forward_hook(lambda module, args, output: captured.append(output[0]))
        try:
            outputs = model(**inputs, logits_to_keep=1)  # the head projects one position per row
        finally:
            handle.remove()
        from transformers.modeling_utils import slice_logits_to_keep

        hidden = slice_logits_to_keep(captured[-1], keep)
        if shift_labels is None:  # tokens < n predict n, as transformers' ForCausalLMLoss shifts
            shift_labels = nn.functional.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:]
        loss = linear_cross_entropy(hidden, self.head.weight, self.head.bias, shift_labels,
                                    num_items_in_batch=num_items_in_batch)
        return loss, outputs
