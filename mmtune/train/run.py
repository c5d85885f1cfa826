"""`mmtune train`: build everything a recipe describes and run the transformers Trainer.

recipe -> tokenizer + template -> encoded data (cached, once across ranks) -> rows (packed or not)
-> model (+ LoRA / QLoRA / trainable VLM parts) -> Trainer with mmtune's callbacks and memory
savers -> checkpoints, logs, loss curve, final model. The "recipe -> object" steps are
mmtune.builders; this module puts them in order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from mmtune.builders import data as build_data
from mmtune.builders import model as build_model
from mmtune.builders.arguments import training_arguments
from mmtune.builders.meta import resume_facts, run_meta
from mmtune.builders.tokenizer import tokenizer_and_template
from mmtune.config.load import dump_config
from mmtune.config.strategy import Strategy
from mmtune.data.dataset import DataStats
from mmtune.models.load import pick_device
from mmtune.rundir import write_meta
from mmtune.train import launch
from mmtune.train.build_locks import clear_stale_build_locks
from mmtune.train.checkpoints import check_resume_fits, resolve_resume
from mmtune.train.interrupt import StopOnSignal
from mmtune.train.logs import describe_peak_memory, read_samples, setup_logging
from mmtune.train.savers import memory_savers
from mmtune.train.setup import make_trainer
from mmtune.train.trainer import removed_if_disk_full
from mmtune.train.workdir import claim_work_dir

log = logging.getLogger("mmtune.train")


@dataclass
class TrainResult:
    work_dir: Path
    final_dir: Path
    data: DataStats
    log_history: list[dict]
    samples: list[dict]


@dataclass
class Run:
    """Where and how a run trains: decided before any weights load."""

    work_dir: Path
    device: str
    strategy: Strategy
    args: object  # transformers TrainingArguments


def run_training(recipe, work_dir: str | Path, *, resume: str | None = None, strategy: Strategy = Strategy(),
                 extra_callbacks: list | None = None, overwrite: bool = False,
                 resume_changed: bool = False) -> TrainResult:
    """Train the recipe into work_dir. A work dir that holds an earlier run's checkpoints or final/
    needs `resume` (continue it) or `overwrite` (start over); two runs never share one. A resume
    with another recipe or data than the checkpoint's is refused unless `resume_changed`."""
    with claim_work_dir(Path(work_dir), resume=resume, overwrite=overwrite, is_main=launch.is_main_process()):
        return _train(recipe, Path(work_dir), resume, strategy, extra_callbacks, resume_changed)


def _train(recipe, work_dir: Path, resume, strategy, extra_callbacks, resume_changed=False) -> TrainResult:
    # checked before config.yaml is rewritten and before anything is tokenized or loaded
    resume_from = resolve_resume(work_dir, resume)
    if resume_from:
        check_resume_fits(resume_from, resume_facts(recipe, launch.world_size()), resume_changed)
    run = start_run(recipe, work_dir, strategy)
    if resume == "auto":
        log.info("resuming from %s" % resume_from if resume_from else "no complete checkpoint in the work dir: starting fresh")
    eval_set = build_data.eval_set(recipe)  # a bad eval file fails here, before any weights load
    vision = build_model.vision_model(recipe, run.device) if build_model.is_vision(recipe) else None
    tokenizer, template = tokenizer_and_template(recipe, *((vision.tokenizer, vision.processor) if vision else ()))
    rows, stats = training_rows(recipe, tokenizer, template, vision)
    model = vision.model if vision else build_model.text_model(recipe, run.device)
    stop = StopOnSignal()  # SIGTERM / Ctrl-C: checkpoint at the next step boundary, then stop
    trainer = make_trainer(recipe, run, model, tokenizer, template, rows, eval_set, vision,
                           [stop, *(extra_callbacks or [])])
    samples_before = len(read_samples(run.work_dir))
    with memory_savers(trainer, recipe.train, strategy.params_sharded):
        trainer.train(resume_from_checkpoint=resume_from)
    log.info("peak memory: %s", describe_peak_memory())
    interrupted = stop.outcome(trainer.state)
    if interrupted is not None:  # the run is not finished: no final/
        log.warning(interrupted.format())
        raise interrupted
    final_dir = save_final(trainer, recipe, run.work_dir, tokenizer, vision)
    return TrainResult(run.work_dir, final_dir, stats, trainer.state.log_history,
                       read_samples(run.work_dir)[samples_before:])


def start_run(recipe, work_dir: Path, strategy: Strategy) -> Run:
    """Work dir, logging, the resolved recipe (config.yaml), device, parallelism and Trainer
    arguments, all checked before any weights load; the seed set (LoRA and new weights draw from it)."""
    from transformers import set_seed

    work_dir.mkdir(parents=True, exist_ok=True)
    setup_logging(work_dir)
    (work_dir / "config.yaml").write_text(dump_config(recipe), encoding="utf-8")
    device = launch.bind_local_device(pick_device(recipe.train.device))
    strategy.check(recipe.method.type, device)
    log.info("parallelism: %s", strategy.describe(launch.world_size()))
    log.info("work dir %s, device %s, method %s, precision %s", work_dir, device, recipe.method.type, recipe.train.precision)
    args = training_arguments(recipe, work_dir, device, strategy)
    if strategy.deepspeed and launch.local_rank() == 0:
        clear_stale_build_locks()  # DeepSpeed builds ops from here on (collectives, CPU Adam)
    launch.init_deepspeed_comm(args)
    set_seed(recipe.train.seed)
    return Run(work_dir, device, strategy, args)


def training_rows(recipe, tokenizer, template, vision=None):
    """(rows, stats): the encoded data (one rank tokenizes, the others reuse its cache) as rows."""
    encoded, stats = build_data.encoded_data(recipe, tokenizer, image_spec=vision.images if vision else None,
                                             template=template, world_size=launch.world_size())
    rows = build_data.train_rows(recipe, encoded, vision.images if vision else None,
                                 build_model.position_fn(vision) if vision else None)
    stats.rows = len(rows)
    log.info("data: %d records (%d bad), %d samples, %d tokens (%d trained), %d truncated, %d dropped -> %d rows%s",
             stats.records, stats.bad_records, stats.samples, stats.tokens, stats.trained_tokens,
             stats.truncated, stats.dropped_overlong, stats.rows, " (packed)" if rows.pack else "")
    return rows, stats


def save_final(trainer, recipe, work_dir: Path, tokenizer, vision=None) -> Path:
    """final/: the trained weights (adapter or full model) with the tokenizer (+ processor), or,
    after a VLM pretrain, the projector alone (projector.safetensors + projector.json, like XTuner's
    iter_xxx.pth) that a finetune recipe names as model.pretrained_projector."""
    from mmtune.models.processors import save_processor
    from mmtune.models.projector import save_projector

    final_dir = work_dir / "final"
    with removed_if_disk_full(final_dir):
        if vision is not None and recipe.method.stage == "pretrain":
            save_projector(trainer.model, final_dir)
            log.info("pretrained projector saved to %s (use it as model.pretrained_projector)", final_dir)
        else:
            trainer.save_model(str(final_dir))
            if vision is not None:
                save_processor(vision.processor, final_dir)
        tokenizer.save_pretrained(str(final_dir))
        write_meta(final_dir, run_meta(recipe))
    log.info("final model saved to %s; loss curve %s", final_dir, work_dir / "loss.png")
    return final_dir
