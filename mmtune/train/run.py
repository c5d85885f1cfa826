"""Build everything a recipe describes and run the transformers Trainer.

recipe -> tokenizer + template -> cached encoded data -> rows (packed or not) -> model (+ LoRA /
QLoRA) -> Trainer with our callbacks -> checkpoints, logs, loss curve, final model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from mmtune.config.load import dump_config
from mmtune.data.collate import FlatCollator, PaddingCollator
from mmtune.data.dataset import DataStats, TrainRows
from mmtune.data.templates import Template, get_template
from mmtune.errors import MmtuneError
from mmtune.models.adapters import apply_method, count_parameters
from mmtune.models.chunked_loss import use_chunked_loss
from mmtune.models.fused_layers import use_fused_layers
from mmtune.models.load import load_causal_lm, load_tokenizer, pick_device
from mmtune.models.packed_attention import flat_collator_options, use_packed_attention
from mmtune.train import callbacks as cb
from mmtune.train import launch
from mmtune.train.checkpoints import resolve_resume
from mmtune.train.eval_callback import EvalDatasetCallback, read_eval_set
from mmtune.train.host_memory import ReleaseHostMemoryCallback

log = logging.getLogger("mmtune.train")


@dataclass
class TrainResult:
    work_dir: Path
    final_dir: Path
    data: DataStats
    log_history: list[dict]
    samples: list[dict]


def setup_logging(work_dir: Path) -> None:
    """Readable log lines to the console and to work_dir/train.log."""
    logger = logging.getLogger("mmtune")
    if launch.quiet_other_ranks(logger):  # rank > 0 of a multi-process run: warnings only, no log file
        return
    logger.setLevel(logging.INFO)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    launch.remove_own_handlers(logger)
    for handler in (logging.FileHandler(work_dir / "train.log", encoding="utf-8"), logging.StreamHandler()):
        handler.setFormatter(fmt)
        handler._mmtune = True
        logger.addHandler(handler)
    logger.propagate = False


def training_arguments(recipe, work_dir: Path, device: str, deepspeed: str | dict | None,
                       fsdp: str | None = None, fsdp_offload: bool = False):
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
        deepspeed=deepspeed,
        ddp_find_unused_parameters=False if recipe.method.type != "full" else None,
        **launch.fsdp_arguments(fsdp, fsdp_offload),
    )


def run_training(recipe, work_dir: str | Path, *, resume: str | None = None, deepspeed=None,
                 fsdp: str | None = None, fsdp_offload: bool = False, extra_callbacks: list | None = None) -> TrainResult:
    from transformers.trainer_callback import ProgressCallback

    from mmtune.train.trainer import MmtuneTrainer
    from transformers.integrations import TensorBoardCallback

    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    setup_logging(work_dir)
    (work_dir / "config.yaml").write_text(dump_config(recipe), encoding="utf-8")
    device = launch.bind_local_device(pick_device(recipe.train.device))
    log.info("parallelism: %s", launch.check_strategy(recipe, deepspeed, fsdp, fsdp_offload, device))
    log.info("work dir %s, device %s, method %s, precision %s", work_dir, device, recipe.method.type, recipe.train.precision)

    args = training_arguments(recipe, work_dir, device, deepspeed, fsdp, fsdp_offload)  # validates before loading weights
    launch.init_deepspeed_comm(args)
    from transformers import set_seed

    set_seed(recipe.train.seed)  # LoRA / new-weight init draws from the global RNG
    eval_set = read_eval_set(recipe)  # eval.datasets: a bad file fails here, before any weights load
    vlm = None
    if recipe.model.vision is not None:  # the VLM's tokenizer (image token) comes with its model
        from mmtune.train.vlm import build_vlm

        vlm = build_vlm(recipe, device)
        tokenizer = vlm.tokenizer
    else:
        tokenizer = load_tokenizer(recipe.model)
    template = get_template(recipe.data.template, tokenizer)
    if isinstance(template, Template):
        # Checkpoints then carry the training format, so exported tokenizers reproduce it.
        tokenizer.chat_template = template.to_jinja()
    # one rank tokenizes, the others reuse its cache
    encoded, stats = launch.encode_once(recipe, tokenizer, image_spec=vlm.image_spec if vlm else None)
    rows = TrainRows(encoded, pack=recipe.data.pack_to_max_length, max_length=recipe.data.max_length,
                     seed=recipe.train.seed, image_loader=vlm.image_loader if vlm else None,
                     bad_images=recipe.data.bad_images, max_bad_fraction=recipe.data.max_bad_fraction)
    stats.rows = len(rows)
    log.info("data: %d records (%d bad), %d samples, %d tokens (%d trained), %d truncated, %d dropped -> %d rows%s",
             stats.records, stats.bad_records, stats.samples, stats.tokens, stats.trained_tokens,
             stats.truncated, stats.dropped_overlong, stats.rows, " (packed)" if rows.pack else "")

    resume_from = resolve_resume(work_dir, resume)
    if resume == "auto":
        log.info("resuming from %s" % resume_from if resume_from else "no complete checkpoint in the work dir: starting fresh")

    if vlm is not None:
        model = vlm.model
    else:
        model = load_causal_lm(
            recipe.model,
            precision=recipe.train.precision,
            quantize_4bit=recipe.method.type == "qlora",
            device=device,
        )
        model.config.use_cache = False  # needed for packed rows and gradient checkpointing
        model = apply_method(model, recipe.method, gradient_checkpointing=recipe.train.gradient_checkpointing)
    if rows.pack:  # sdpa -> per-sample attention over the flat row (eager and flash stay as they are)
        log.info("packed rows: attention %s", use_packed_attention(model))
    # the forward replacements below need whole weights: under ZeRO-3 / FSDP a weight is whole only
    # while the module's own hooks have gathered it
    sharded = launch.params_sharded(args)
    if recipe.train.chunked_loss:
        if sharded:
            log.info("chunked loss off: the lm_head weight is sharded (ZeRO-3 / FSDP)")
        elif use_chunked_loss(model):
            log.info("loss: chunked cross-entropy (no full-vocabulary logits)")
    if recipe.train.fused_layers:
        if sharded:
            log.info("fused layers off: parameters are sharded (ZeRO-3 / FSDP)")
        else:
            norms, mlps = use_fused_layers(model)
            if norms or mlps:
                log.info("fused layers: %d RMSNorm and %d SwiGLU MLP modules keep only their inputs for backward",
                         norms, mlps)
    trainable, total = count_parameters(model)
    log.info("parameters: %s trainable of %s (%.2f%%)", f"{trainable:,}", f"{total:,}", 100 * trainable / max(total, 1))

    meta = {
        "base_model": recipe.model.path,
        "method": recipe.method.type,
        "template": recipe.data.template,
        "system": recipe.data.system,
        "trust_remote_code": recipe.model.trust_remote_code,
    }
    if vlm is not None:
        from mmtune.train.vlm import vlm_meta

        meta.update(vlm_meta(recipe))
    from torch.utils.tensorboard import SummaryWriter

    sample_cb = cb.SampleChatCallback(
        tokenizer, template, recipe.eval.evaluation_inputs,
        every_n_steps=recipe.eval.every_n_steps,
        system=recipe.eval.system if recipe.eval.system is not None else recipe.data.system,
        max_new_tokens=recipe.eval.max_new_tokens,
        out_file=work_dir / "samples.jsonl",
        **(vlm_sample_inputs(recipe, vlm) if vlm else {}),
    )
    trainer = MmtuneTrainer(
        model=model,
        args=args,
        train_dataset=rows,
        shuffle=recipe.data.shuffle,
        data_collator=FlatCollator(**flat_collator_options(model)) if rows.pack else PaddingCollator(tokenizer.pad_token_id),
        processing_class=tokenizer,
        callbacks=[
            launch.sample_chat_callback(sample_cb, args),
            ReleaseHostMemoryCallback(),  # after the sample chats' on_train_begin
            cb.ReadableLogCallback(),
            cb.LossPlotCallback(work_dir),
            cb.MetaCallback(meta),
            TensorBoardCallback(tb_writer=SummaryWriter(str(work_dir / "tensorboard")) if launch.is_main_process() else None),
            *(extra_callbacks or []),
        ],
    )
    if eval_set is not None:
        trainer.add_callback(EvalDatasetCallback.from_recipe(trainer, eval_set, tokenizer, template, recipe))
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(cb.QuietProgressCallback())
    samples_before = len(_read_samples(work_dir))
    trainer.train(resume_from_checkpoint=resume_from)
    log.info("peak memory: %s", describe_peak_memory())

    final_dir = work_dir / "final"
    if vlm is not None:
        from mmtune.train.vlm import save_final

        save_final(trainer, vlm, recipe, final_dir)
    else:
        trainer.save_model(str(final_dir))
    tokenizer.save_pretrained(str(final_dir))
    cb.write_meta(final_dir, meta)
    log.info("final model saved to %s; loss curve %s", final_dir, work_dir / "loss.png")
    return TrainResult(work_dir, final_dir, stats, trainer.state.log_history, _read_samples(work_dir)[samples_before:])


def describe_peak_memory() -> str:
    """This process's peak memory in words: GPU (allocated by tensors, and reserved by torch's
    caching allocator, which is what nvidia-smi shows less the CUDA context) or host RSS."""
    import torch

    from mmtune.train.trainer import peak_memory

    peak = peak_memory()
    if "peak_gpu_mem_gib" in peak:
        return (f"GPU {peak['peak_gpu_mem_gib']:.2f} GiB allocated, "
                f"{torch.cuda.max_memory_reserved() / 2**30:.2f} GiB reserved (this process)")
    return f"RSS {peak['peak_rss_gib']:.2f} GiB (this process)"


def vlm_sample_inputs(recipe, vlm) -> dict:
    """The evaluation images and how the model takes them, for the sample-chat callback."""
    from mmtune.data.images import open_image
    from mmtune.infer.vision import VisionInputs

    images = [open_image(p, f"eval.evaluation_images[{k}]") for k, p in enumerate(recipe.eval.evaluation_images)]
    return {"images": images, "vision": VisionInputs(vlm.image_spec, vlm.image_loader)}


def _read_samples(work_dir: Path) -> list[dict]:
    import json

    path = work_dir / "samples.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
