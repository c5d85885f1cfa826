"""The transformers TrainingArguments of a recipe."""

from __future__ import annotations

from pathlib import Path

from mmtune.config.strategy import Strategy
from mmtune.errors import MmtuneError


def training_arguments(recipe, work_dir: Path, device: str, strategy: Strategy = Strategy()):
    """Validated before any weights load (an impossible combination fails here)."""
    from transformers import TrainingArguments

    t = recipe.train
    if t.precision == "fp16" and device != "cuda":
        raise MmtuneError("fp16 training needs a CUDA GPU", hint="use train.precision: bf16 or fp32 on CPU")
    return TrainingArguments(
        output_dir=str(work_dir),
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.micro_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation,
        learning_rate=t.lr,
        weight_decay=t.weight_decay,
        adam_beta2=t.adam_beta2,
        optim=t.optimizer,
        lr_scheduler_type=t.scheduler,
        warmup_steps=t.warmup_ratio,
        max_grad_norm=t.max_grad_norm,
        bf16=t.precision == "bf16",
        fp16=t.precision == "fp16",
        use_cpu=device == "cpu",
        seed=t.seed,
        data_seed=t.seed,
        logging_steps=t.logging_steps,
        logging_first_step=True,
        save_strategy="steps" if t.save_steps else "no",  # 0: no checkpoints, only final/
        save_steps=t.save_steps or None,
        save_total_limit=t.save_total_limit,
        dataloader_num_workers=t.dataloader_workers,
        remove_unused_columns=False,
        report_to="none",  # TensorBoard is added as a callback with our own log dir
        ddp_find_unused_parameters=False if recipe.method.type != "full" else None,
        **strategy.training_arguments(),
    )
