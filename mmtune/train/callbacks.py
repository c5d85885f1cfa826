"""Trainer callbacks: sample chats during training, readable logs, loss curve, NaN guard."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback

from mmtune.data.conversation import IMAGE_PLACEHOLDER, Message
from mmtune.errors import MmtuneError
from mmtune.rundir import write_manifest, write_meta
from mmtune.infer.engine import GenerationSettings, generate_reply

log = logging.getLogger("mmtune.train")


class SampleChatCallback(TrainerCallback):
    """Answer the recipe's `evaluation_inputs` before training, every N steps and at the end
    (XTuner's EvaluateChatHook), so the user sees the model change. Answers go to the log and
    to `samples.jsonl` in the work dir."""

    def __init__(self, tokenizer, template, inputs, *, every_n_steps: int, system: str | None, max_new_tokens: int,
                 out_file: Path, images=(), vision=None):
        self.tokenizer = tokenizer
        self.template = template
        self.inputs = list(inputs)
        # VLM: one image for every input, or one per input (XTuner's evaluation_images)
        self.images = list(images)
        self.vision = vision
        self.every = every_n_steps
        self.system = system
        self.settings = GenerationSettings(max_new_tokens=max_new_tokens)
        self.out_file = Path(out_file)
        self._last_step = -1

    def answer_all(self, model, step: int) -> list[dict]:
        results = []
        for k, question in enumerate(self.inputs):
            image = self.images[k if len(self.images) > 1 else 0] if self.images else None
            text = question if image is None or IMAGE_PLACEHOLDER in question else f"{IMAGE_PLACEHOLDER}\n{question}"
            messages = ([Message("system", self.system)] if self.system else []) + [Message("user", text)]
            answer = generate_reply(model, self.tokenizer, self.template, messages, self.settings,
                                    images=[image] if image is not None else None, vision=self.vision)
            results.append({"step": step, "question": question, "answer": answer})
            log.info("[sample @ step %d] Q: %s\n    A: %s", step, question, answer)
        with self.out_file.open("a", encoding="utf-8") as f:
            for r in results:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        self._last_step = step
        return results

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self.inputs and state.is_world_process_zero and state.global_step == 0:
            self.answer_all(model, 0)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.inputs and state.is_world_process_zero and state.global_step % self.every == 0:
            self.answer_all(model, state.global_step)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if self.inputs and state.is_world_process_zero and self._last_step != state.global_step:
            self.answer_all(model, state.global_step)


class ReadableLogCallback(TrainerCallback):
    """One line per logging step in the log: step, loss, lr, grad norm; and a NaN guard."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs:
            return
        loss = logs.get("loss")
        # every rank logs the same (all-reduced) loss, so every rank stops here: a guard on rank 0
        # alone would leave the others waiting in the next collective
        if loss is not None and not math.isfinite(loss):
            raise MmtuneError(
                f"loss became {loss} at step {state.global_step}",
                hint="lower train.lr, use bf16 instead of fp16, or check the data with `mmtune data check`",
            )
        if not state.is_world_process_zero:
            return
        fields = [f"step {state.global_step}/{state.max_steps}"]
        for key in ("loss", "learning_rate", "grad_norm", "train_loss"):
            if key in logs:
                fields.append(f"{key} {logs[key]:.4g}")
        for key, name in (("peak_gpu_mem_gib", "peak GPU mem"), ("peak_rss_gib", "peak RSS")):
            if key in logs and len(fields) > 1:
                fields.append(f"{name} {logs[key]:.2f} GiB")
        if len(fields) > 1:
            log.info("  ".join(fields))


class LossPlotCallback(TrainerCallback):
    """Write the loss curve (`loss.png`, with the eval loss if any) and its numbers (`loss.json`) at the end of training."""

    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir)

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            write_loss_curve(state.log_history, self.out_dir)


def write_loss_curve(log_history: list[dict], out_dir: Path) -> Path | None:
    points = [(h["step"], h["loss"]) for h in log_history if "loss" in h and "step" in h]
    if not points:
        return None
    (out_dir / "loss.json").write_text(json.dumps([{"step": s, "loss": v} for s, v in points]))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=2, label="training loss")
    evals = [(h["step"], h["eval_loss"]) for h in log_history if "eval_loss" in h and "step" in h]
    if evals:  # eval.datasets (see eval_callback.py)
        ax.plot([p[0] for p in evals], [p[1] for p in evals], marker="s", markersize=4, label="eval loss")
        ax.legend()
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title("mmtune training loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = out_dir / "loss.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


class MetaCallback(TrainerCallback):
    """Store what export and chat need (recipe, template) inside every checkpoint, then, as the last
    write, its manifest: every file with its size, and what resume compares (`resume_facts`)."""

    def __init__(self, meta: dict, resume_facts: dict | None = None):
        self.meta = meta
        self.resume_facts = resume_facts or {}

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if ckpt.is_dir():
                write_meta(ckpt, self.meta)
                write_manifest(ckpt, self.resume_facts)


class QuietProgressCallback(ProgressCallback):
    """The progress bar without the raw metric dicts under it (ReadableLogCallback logs those)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        pass
