"""Tiny models of a named transformers class and small padded / packed batches, for tests that
compare mmtune's memory savers (chunked loss, fused layers) with the class's own forward and backward."""

from __future__ import annotations

import torch

from mmtune.data.collate import FlatCollator, PaddingCollator


def tiny_causal_lm(class_name: str):
    import transformers

    model_cls = getattr(transformers, class_name)
    config = model_cls.config_class(
        vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, max_position_embeddings=128, tie_word_embeddings=False,
        pad_token_id=0, attn_implementation="sdpa",
        use_cache=False,  # as `mmtune train` sets it (with a cache, sdpa lets packed samples see each other)
    )
    torch.manual_seed(0)
    return model_cls(config).float()


def batches(vocab=97):
    g = torch.Generator().manual_seed(1)
    rows = []
    for n, prompt in ((11, 4), (7, 2), (15, 9)):
        ids = torch.randint(3, vocab, (n,), generator=g).tolist()
        rows.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return {"padded": PaddingCollator(0)(rows), "packed": FlatCollator(trained_logits_only=True)(rows)}


def loss_and_grads(model, batch, loss_fn=None):
    """(loss, parameter gradients) of one step: the model's own loss, or `loss_fn(model, batch)`'s
    (a ChunkedLoss, called as the trainer calls it)."""
    model.zero_grad(set_to_none=True)
    batch = {k: v.clone() for k, v in batch.items()}
    loss = loss_fn(model, batch)[0] if loss_fn is not None else model(**batch).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_same_step(ours: tuple, ref: tuple, msg: str = "") -> None:
    """Two `loss_and_grads` results agree: the same loss, and gradients for the same parameters."""
    (loss, grads), (ref_loss, ref_grads) = ours, ref
    torch.testing.assert_close(loss, ref_loss, msg=msg)
    assert grads.keys() == ref_grads.keys(), msg
    for key in grads:
        torch.testing.assert_close(grads[key], ref_grads[key], atol=1e-6, rtol=1e-4, msg=f"{msg} {key}")
