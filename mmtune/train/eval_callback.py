"""Score the recipe's held-out data (`eval.datasets`) during training.

    eval:
      every_n_steps: 100
      datasets: [{path: data/heldout.jsonl}]
      max_samples: 200        # a fixed random subset (null: all)
      generate: false         # true: also exact / contains match of generated answers (slow)

Before training, every `eval.every_n_steps` optimizer steps and at the last step, the model (in eval
mode, no grad, batched; train mode restored after) gets `mmtune eval text`'s metrics on the eval
conversations (`mmtune.eval.text.evaluate_text`: token-mean NLL over the answer tokens, encoded with
the training template, `data.system` and `data.max_length`). They go through `Trainer.log`, so they
land in `trainer_state.json`'s log history as `eval_loss`, `eval_ppl` (+ `eval_exact_match`,
`eval_contains_match`) and in TensorBoard as `eval/loss`, `eval/ppl`, ...; train.log gets one readable
line per evaluation.

The files are read when training starts, before any weights load (mmtune.data.eval_set), and a bad
record stops the run with its place (file:record N:field): eval data is not skipped over like
training data, since silently scoring fewer records would change what the numbers mean.

Several processes: each rank scores its own share of the conversations (padded with repeats of the
first one to the same count, so every rank runs the same number of forward passes and `generate`
calls, which ZeRO-3 / FSDP need since each is a collective); the sums are all-reduced, and every rank
logs the same numbers (only rank 0 writes train.log and TensorBoard).
"""

from __future__ import annotations

import logging
import math
import time

from transformers import TrainerCallback

from mmtune.data.conversation import Conversation
from mmtune.data.eval_set import EvalSet
from mmtune.errors import DataError
from mmtune.train import launch

log = logging.getLogger("mmtune.train")


class EvalDatasetCallback(TrainerCallback):
    """Evaluate an `EvalSet` at step 0 (fresh runs), every `every_n_steps` and at the last step,
    logging through `trainer.log` (see the module doc)."""

    def __init__(self, trainer, eval_set: EvalSet, tokenizer, template, *, every_n_steps: int, max_length: int,
                 system: str | None, batch_size: int, generate: bool = False, max_new_tokens: int = 64):
        self.trainer = trainer
        self.tokenizer = tokenizer
        self.template = template
        self.every = every_n_steps
        self.max_length = max_length
        self.system = system
        self.batch_size = batch_size
        self.generate = generate
        self.max_new_tokens = max_new_tokens
        self.conversations = self._scorable(eval_set)
        self._last_step = -1

    def _scorable(self, eval_set: EvalSet) -> list[Conversation]:
        """The conversations with answer tokens within max_length (encoded as evaluate_text will);
        the others are left out here, once, so every rank scores the same set at every step."""
        from mmtune.data.encode import ConversationEncoder

        encoder = ConversationEncoder(self.tokenizer, self.template, self.max_length, "truncate", self.system)
        kept, tokens = [], 0
        for conv in eval_set.conversations:
            try:
                sample = encoder.encode(conv)
            except DataError as e:
                raise DataError(e.message, where=e.where or conv.source, hint=e.hint) from None
            if sample is not None and sample.n_trained:
                kept.append(conv)
                tokens += sample.n_trained
        if not kept:
            raise DataError(f"no eval conversation has an answer within data.max_length {self.max_length} tokens",
                            where="eval.datasets")
        left_out = len(eval_set.conversations) - len(kept)
        log.info("eval data: %d conversations (%d in the files%s), %d answer tokens%s; every %d steps",
                 len(kept), eval_set.records, "" if eval_set.records == len(eval_set.conversations) else ", eval.max_samples",
                 tokens, f", {left_out} left out (answer beyond max_length)" if left_out else "", self.every)
        return kept

    # ---- when

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step == 0:
            self.evaluate(model, 0, control)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        step = state.global_step
        if step != self._last_step and (step % self.every == 0 or step >= state.max_steps):
            self.evaluate(model, step, control)

    # ---- what

    def evaluate(self, model, step: int, control=None) -> dict:
        """Score this rank's share, sum over ranks, log; the logged metrics."""
        from mmtune.eval.text import evaluate_text

        start = time.perf_counter()
        shard, n_real = shard_for_rank(self.conversations, launch.rank(), launch.world_size())
        result = evaluate_text(model, self.tokenizer, self.template, shard, max_new_tokens=self.max_new_tokens,
                               max_length=self.max_length, system=self.system, batch_size=self.batch_size,
                               generate=self.generate)
        sums = reduce_sums(shard_sums(result["samples"][:n_real]))
        metrics = metrics_from_sums(sums, self.generate)
        # Trainer.log ends with on_log, which clears control.should_log: keep the training-loss log of
        # this step, which the Trainer writes after on_step_end, when one is due
        should_log = control.should_log if control is not None else False
        self.trainer.log(dict(metrics))
        if control is not None:
            control.should_log = self.trainer.control.should_log = should_log
        self._last_step = step
        parts = [f"loss {metrics['eval_loss']:.4f}", f"ppl {metrics['eval_ppl']:.4g}"]
        if self.generate:
            parts += [f"exact {metrics['eval_exact_match']:.3f}", f"contains {metrics['eval_contains_match']:.3f}"]
        log.info("[eval @ step %d] %s  (%d conversations, %d answer tokens, %.1fs)", step, "  ".join(parts),
                 int(sums["n"]), int(sums["tokens"]), time.perf_counter() - start)
        return metrics


def shard_for_rank(items: list, rank: int, world: int) -> tuple[list, int]:
    """(this rank's items padded to the same count on every rank, how many of them are real)."""
    if world <= 1:
        return list(items), len(items)
    mine = items[rank::world]
    per_rank = max(1, math.ceil(len(items) / world))
    return mine + [items[0]] * (per_rank - len(mine)), len(mine)


SUM_KEYS = ("nll", "tokens", "exact", "contains", "n")


def shard_sums(samples: list[dict]) -> dict[str, float]:
    """Summed NLL, answer tokens, exact / contains matches and count of `evaluate_text` samples."""
    sums = dict.fromkeys(SUM_KEYS, 0.0)
    for s in samples:
        if s["n_tokens"]:
            sums["nll"] += s["loss"] * s["n_tokens"]
            sums["tokens"] += s["n_tokens"]
        sums["exact"] += bool(s.get("exact_match"))
        sums["contains"] += bool(s.get("contains_match"))
        sums["n"] += 1
    return sums


def reduce_sums(sums: dict[str, float]) -> dict[str, float]:
    """The sums over all ranks (all-reduce; the sums themselves in a single process)."""
    import torch
    import torch.distributed as dist

    if launch.world_size() <= 1 or not (dist.is_available() and dist.is_initialized()):
        return sums
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    total = torch.tensor([sums[k] for k in SUM_KEYS], dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return dict(zip(SUM_KEYS, total.tolist()))


def metrics_from_sums(sums: dict[str, float], generate: bool) -> dict[str, float]:
    loss = sums["nll"] / sums["tokens"]
    metrics = {"eval_loss": loss, "eval_ppl": math.exp(min(loss, 700.0))}
    if generate:
        metrics["eval_exact_match"] = sums["exact"] / sums["n"]
        metrics["eval_contains_match"] = sums["contains"] / sums["n"]
    return metrics
