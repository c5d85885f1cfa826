"""Which weights train: LoRA / QLoRA adapters via peft, or the full model."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def enable_activation_checkpointing(model) -> None:
    """Recompute each decoder layer's activations in the backward (non-reentrant checkpoints).

    transformers then also makes the input embeddings' output require grad, so a frozen base
    (LoRA, QLoRA) still passes gradients through the checkpointed layers."""
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()


def apply_method(model, method_cfg, *, gradient_checkpointing: bool = False):
    """Wrap `model` for the recipe's method and return it (a PeftModel for lora/qlora)."""
    if method_cfg.type == "full":
        if gradient_checkpointing:
            enable_activation_checkpointing(model)
        return model
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if method_cfg.type == "qlora":
        # peft's own checkpointing switch calls transformers' deprecated gradient_checkpointing_enable
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if gradient_checkpointing:
        enable_activation_checkpointing(model)
    lora = method_cfg.lora
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        modules_to_save=lora.modules_to_save or None,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, config)
    return model


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts; 4-bit weights count as their logical size."""
    trainable = total = 0
    for p in model.parameters():
        n = getattr(p, "ds_numel", p.numel())  # ZeRO-3 keeps a placeholder in p
        if hasattr(p, "quant_state") or p.__class__.__name__ == "Params4bit":
            n *= 2  # two 4-bit values per stored byte
        total += n
        if p.requires_grad:
            trainable += n
    return trainable, total
