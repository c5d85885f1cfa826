"""The Trainer of a run: model made ready for its rows, collator, callbacks."""

from __future__ import annotations

import logging

from mmtune.builders.meta import resume_facts, run_meta
from mmtune.builders.model import sample_images
from mmtune.data.collate import FlatCollator, ImageBatch, PaddingCollator
from mmtune.models.families import base_model, image_token_id_of
from mmtune.models.packed_attention import flat_collator_options, use_packed_attention
from mmtune.errors import ConfigError, MmtuneError
from mmtune.models.remote_code import packing_problem
from mmtune.models.trainable import count_parameters, trainable_summary
from mmtune.train import callbacks as cb
from mmtune.train import launch
from mmtune.train.eval_callback import EvalDatasetCallback
from mmtune.train.host_memory import ReleaseHostMemoryCallback
from mmtune.train.trainer import MmtuneTrainer

log = logging.getLogger("mmtune.train")


def make_trainer(recipe, run, model, tokenizer, template, rows, eval_set=None, vision=None, extra_callbacks=None):
    from torch.utils.tensorboard import SummaryWriter
    from transformers.integrations import TensorBoardCallback
    from transformers.trainer_callback import ProgressCallback

    if rows.pack:  # sdpa -> per-sample attention over the flat row (eager and flash stay as they are)
        problem = packing_problem(model) or (vision.family.packing_problem(model) if vision is not None
                                              and vision.family.packing_problem else None)
        if problem:
            raise MmtuneError(f"packed rows cannot train this model: {problem}",
                              hint="set data.pack_to_max_length: false (one sample per row, padded)")
        log.info("packed rows: attention %s", use_packed_attention(model))
    trainable, total = count_parameters(model)
    log.info("parameters: %s trainable of %s (%.2f%%)", f"{trainable:,}", f"{total:,}", 100 * trainable / max(total, 1))
    if vision is not None:
        summary = trainable_summary(model, vision.family.parts)
        log.info("trainable by part: %s", ", ".join(f"{part} {t:,}/{n:,}" for part, (t, n) in summary.items()
                                                    if part != "all"))
    images = image_batch(vision)
    collator = (FlatCollator(**flat_collator_options(model), images=images) if rows.pack
                else PaddingCollator(tokenizer.pad_token_id, images=images))
    trainer = MmtuneTrainer(
        model=model,
        args=run.args,
        train_dataset=rows,
        shuffle=recipe.data.shuffle,
        part_lrs=part_lrs(recipe, vision),
        data_collator=collator,
        processing_class=tokenizer,
        callbacks=[
            launch.sample_chat_callback(sample_chat(recipe, run, tokenizer, template, vision),
                                        run.strategy.params_sharded),
            ReleaseHostMemoryCallback(),  # after the sample chats' on_train_begin
            cb.ReadableLogCallback(),
            cb.LossPlotCallback(run.work_dir),
            cb.MetaCallback(run_meta(recipe), resume_facts(recipe, launch.world_size())),
            TensorBoardCallback(tb_writer=SummaryWriter(str(run.work_dir / "tensorboard"))
                                if launch.is_main_process() else None),
            *(extra_callbacks or []),
        ],
    )
    if eval_set is not None:
        e = recipe.eval
        trainer.add_callback(EvalDatasetCallback(
            trainer, eval_set, tokenizer, template, every_n_steps=e.every_n_steps, max_length=recipe.data.max_length,
            system=recipe.data.system, batch_size=e.batch_size or recipe.train.micro_batch_size, generate=e.generate,
            max_new_tokens=e.max_new_tokens))
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(cb.QuietProgressCallback())
    return trainer


def part_lrs(recipe, vision) -> list[tuple[str, float]]:
    """[(module path, lr)] for the recipe's `train.projector_lr` / `train.vision_lr` (the projector
    first: it may sit inside the vision tower, as Qwen-VL's merger does)."""
    t = recipe.train
    if vision is None:
        if t.vision_lr or t.projector_lr:
            raise ConfigError("train.vision_lr / train.projector_lr are for vision-language models",
                              hint="remove them, or use train.lr")
        return []
    parts = vision.family.parts
    pairs = [(path, t.projector_lr) for path in parts.projectors] + [(parts.vision, t.vision_lr)]
    return [(path, lr) for path, lr in pairs if lr]


def image_batch(vision) -> ImageBatch | None:
    """How a batch's images go into the forward: the family's way of combining them, its image-token mask."""
    if vision is None:
        return None
    family = vision.family
    image_token_id = image_token_id_of(base_model(vision.model).config)
    token_types = (family.token_types, image_token_id) if family.token_types else None
    return ImageBatch(family.combine, token_types)


def sample_chat(recipe, run, tokenizer, template, vision=None) -> cb.SampleChatCallback:
    """Answers to `eval.evaluation_inputs` (with `evaluation_images` for a VLM) as training goes."""
    e = recipe.eval
    images = {}
    if vision is not None:
        images = {"images": sample_images(recipe), "vision": vision.images}
    return cb.SampleChatCallback(
        tokenizer, template, e.evaluation_inputs, every_n_steps=e.every_n_steps,
        system=e.system if e.system is not None else recipe.data.system, max_new_tokens=e.max_new_tokens,
        out_file=run.work_dir / "samples.jsonl", **images)
