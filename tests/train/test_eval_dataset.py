"""`eval.datasets`: held-out data scored during training (eval/loss, eval/ppl, match rates), logged to
the Trainer's log history, TensorBoard and train.log; recipe keys; a bad eval file stops the run
before any weights load."""

from __future__ import annotations

import json
import math

import pytest

from mmtune.config.load import apply_overrides, validate_recipe
from mmtune.data.conversation import Conversation, Message
from mmtune.data.synth import write_conversations
from mmtune.errors import ConfigError, DataError
from mmtune.testing.runs import AUTHOR, NAME, self_cognition_recipe, write_self_cognition
from mmtune.builders.data import eval_set as read_eval_set
from mmtune.train.eval_callback import metrics_from_sums, shard_for_rank, shard_sums
from mmtune.train.run import run_training

STEPS, EVERY = 25, 10  # evals at 0, 10, 20 and 25 (the end)
HELD_OUT = ["Could you tell me who you are?", "who are you exactly?", "What do people call you?",
            "Please tell me your name.", "Who are you, assistant?", "Introduce yourself briefly."]
REFERENCE = f"I am {NAME}, an AI assistant developed by {AUTHOR}."


def write_held_out(path, questions=HELD_OUT):
    convs = [Conversation([Message("user", q), Message("assistant", REFERENCE)]) for q in questions]
    return write_conversations(convs, path)


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_qwen2_dir):
    """A packed LoRA run of 25 steps that scores 6 held-out conversations (and generates) every 10 steps."""
    tmp = tmp_path_factory.mktemp("eval-dataset")
    recipe = self_cognition_recipe(
        tiny_qwen2_dir, write_self_cognition(tmp / "self.jsonl", repeat=1),
        train={"max_steps": STEPS, "logging_steps": 5, "save_steps": STEPS, "lr": 1e-3},  # smooth at this lr
        eval={"every_n_steps": EVERY, "evaluation_inputs": [], "datasets": [{"path": str(write_held_out(tmp / "heldout.jsonl"))}],
              "generate": True, "batch_size": 4, "max_new_tokens": 8},
    )
    return recipe, run_training(recipe, tmp / "work")


def eval_entries(result) -> list[dict]:
    return [h for h in result.log_history if "eval_loss" in h]


def test_eval_loss_is_logged_at_the_eval_steps_and_falls(run):
    recipe, result = run
    entries = eval_entries(result)
    assert [h["step"] for h in entries] == [0, 10, 20, 25]
    losses = [h["eval_loss"] for h in entries]
    assert losses[-1] < losses[0] / 2, losses
    for h in entries:
        assert h["eval_ppl"] == pytest.approx(math.exp(h["eval_loss"]))
        assert 0.0 <= h["eval_exact_match"] <= h["eval_contains_match"] <= 1.0
    assert entries[0]["eval_contains_match"] == 0.0  # the untrained model does not know its name
    # the training loss is still logged at every logging step, eval steps included
    assert [h["step"] for h in result.log_history if "loss" in h] == [1, 5, 10, 15, 20, 25]
    state = json.loads(sorted(result.work_dir.glob("checkpoint-*/trainer_state.json"))[-1].read_text())
    assert [h["step"] for h in state["log_history"] if "eval_loss" in h] == [0, 10, 20, 25]


def test_eval_metrics_reach_tensorboard_and_train_log(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    recipe, result = run
    acc = EventAccumulator(str(result.work_dir / "tensorboard"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"eval/loss", "eval/ppl", "eval/exact_match", "eval/contains_match", "train/loss"} <= set(tags), tags
    board = {e.step: e.value for e in acc.Scalars("eval/loss")}
    history = {h["step"]: h["eval_loss"] for h in eval_entries(result)}
    assert sorted(board) == sorted(history)
    for step, value in history.items():
        assert board[step] == pytest.approx(value, rel=1e-5)
    log = (result.work_dir / "train.log").read_text()
    assert "eval data: 6 conversations" in log
    for step in (0, 10, 20, 25):
        assert log.count(f"[eval @ step {step}] loss ") == 1, step
    assert "contains " in log


def test_in_training_eval_equals_mmtune_eval_text(run):
    """The last eval is `mmtune eval text`'s loss on the saved adapter: same template, same encoding."""
    from mmtune.data.formats import read_file
    from mmtune.eval.text import evaluate_text
    from mmtune.infer.load import load_for_inference

    recipe, result = run
    loaded = load_for_inference(recipe.model.path, adapter=str(result.final_dir), device="cpu")
    convs, _ = read_file(recipe.eval.datasets[0].path)
    offline = evaluate_text(loaded.model, loaded.tokenizer, loaded.template, convs, generate=False,
                            max_length=recipe.data.max_length, system=recipe.data.system)
    assert eval_entries(result)[-1]["eval_loss"] == pytest.approx(offline["loss"], rel=1e-4)


# ---------------------------------------------------------------- failing early


def test_bad_eval_record_fails_before_any_weights_load(tmp_path, tiny_qwen2_dir):
    bad = tmp_path / "heldout.jsonl"
    write_held_out(bad, HELD_OUT[:3])
    lines = bad.read_text().splitlines()
    lines[1] = json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": "again"}]})
    bad.write_text("\n".join(lines) + "\n")
    recipe = self_cognition_recipe(tiny_qwen2_dir, write_self_cognition(tmp_path / "self.jsonl", repeat=1),
                                   eval={"datasets": [{"path": str(bad)}], "evaluation_inputs": []})
    with pytest.raises(DataError) as info:
        run_training(recipe, tmp_path / "work")
    message = info.value.format()
    assert f"{bad}:record 1:messages[1].role" in message and "roles do not alternate" in message
    assert "1 bad record(s) of 3" in message and "mmtune data check" in message and "\n" not in message
    log = (tmp_path / "work" / "train.log").read_text()
    assert "parameters:" not in log and "data:" not in log  # stopped before tokenizing and loading the model
    assert not (tmp_path / "work" / "tensorboard").exists()


def test_missing_or_empty_eval_file_is_named(tmp_path, tiny_qwen2_dir):
    data = write_self_cognition(tmp_path / "self.jsonl", repeat=1)
    recipe = self_cognition_recipe(tiny_qwen2_dir, data, eval={"datasets": [{"path": str(tmp_path / "nope.jsonl")}]})
    with pytest.raises(DataError, match="nope.jsonl: file not found"):
        read_eval_set(recipe)
    (tmp_path / "empty.jsonl").write_text("")
    recipe = self_cognition_recipe(tiny_qwen2_dir, data, eval={"datasets": [{"path": str(tmp_path / "empty.jsonl")}]})
    with pytest.raises(DataError, match="empty.jsonl: file is empty"):
        read_eval_set(recipe)


def test_vlm_recipe_with_eval_datasets_is_refused(tmp_path):
    recipe = validate_recipe({"model": {"path": "lm", "vision": {"path": "clip"}},
                              "data": {"datasets": [{"path": "train.json"}]},
                              "eval": {"datasets": [{"path": str(write_held_out(tmp_path / "h.jsonl"))}]}})
    with pytest.raises(ConfigError, match="eval.datasets scores text models only"):
        read_eval_set(recipe)


def test_max_samples_picks_a_fixed_subset(tmp_path, tiny_qwen2_dir):
    held = write_held_out(tmp_path / "h.jsonl")
    recipe = self_cognition_recipe(tiny_qwen2_dir, held, eval={"datasets": [{"path": str(held)}], "max_samples": 4})
    first, again = read_eval_set(recipe), read_eval_set(recipe)
    assert first.records == 6 and len(first.conversations) == 4
    assert [c.source for c in first.conversations] == [c.source for c in again.conversations]
    assert read_eval_set(recipe.model_copy(update={"eval": recipe.eval.model_copy(update={"datasets": []})})) is None


# ---------------------------------------------------------------- recipe keys


MINIMAL = {"model": {"path": "m"}, "data": {"datasets": [{"path": "train.jsonl"}]}}


def recipe_error(eval_section: dict) -> str:
    with pytest.raises(ConfigError) as info:
        validate_recipe({**MINIMAL, "eval": eval_section})
    return info.value.format()


def test_eval_keys_defaults_and_values():
    defaults = validate_recipe(MINIMAL).eval
    assert (defaults.datasets, defaults.max_samples, defaults.generate, defaults.batch_size) == ([], None, False, None)
    data = apply_overrides(MINIMAL, ["eval.datasets=[{path: held.json, format: llava}]", "eval.max_samples=50",
                                     "eval.generate=true", "eval.batch_size=2"])
    ev = validate_recipe(data).eval
    assert [(d.path, d.format) for d in ev.datasets] == [("held.json", "llava")]
    assert (ev.max_samples, ev.generate, ev.batch_size) == (50, True, 2)


@pytest.mark.parametrize("eval_section, expected", [
    ({"eval_dataset": [{"path": "h.jsonl"}]}, "unknown key 'eval.eval_dataset' (did you mean 'eval.datasets'?)"),
    ({"datasets": [{"path": "h.jsonl", "repeat": 3}]}, "entry 0 (h.jsonl) sets repeat: 3, but eval data is scored once"),
    ({"datasets": [{"path": "h.jsonl", "format": "csv"}]}, "eval.datasets.0.format: Input should be"),
    ({"datasets": [{"format": "openai"}]}, "missing required key 'eval.datasets.0.path'"),
    ({"max_samples": 0}, "eval.max_samples: Input should be greater than or equal to 1"),
    ({"generate": "sometimes"}, "eval.generate: Input should be a valid boolean"),
])
def test_bad_eval_keys_are_named(eval_section, expected):
    message = recipe_error(eval_section)
    assert expected in message, message
    assert "\n" not in message


# ---------------------------------------------------------------- several processes


def test_shards_cover_every_item_once_with_equal_counts():
    items = list(range(7))
    shards = [shard_for_rank(items, r, 3) for r in range(3)]
    assert {len(s) for s, _ in shards} == {3}  # the same number of forward passes on every rank
    real = sorted(x for s, n in shards for x in s[:n])
    assert real == items
    assert shard_for_rank(items[:1], 1, 2) == ([0], 0)  # fewer items than ranks: padding only
    assert shard_for_rank(items, 0, 1) == (items, 7)


def test_sums_give_the_token_mean_loss():
    samples = [{"loss": 2.0, "n_tokens": 3, "exact_match": True, "contains_match": True},
               {"loss": 1.0, "n_tokens": 1, "exact_match": False, "contains_match": True}]
    halves = [shard_sums(samples[:1]), shard_sums(samples[1:])]
    total = {k: halves[0][k] + halves[1][k] for k in halves[0]}
    metrics = metrics_from_sums(total, generate=True)
    assert metrics["eval_loss"] == pytest.approx(7 / 4)
    assert metrics["eval_ppl"] == pytest.approx(math.exp(7 / 4))
    assert (metrics["eval_exact_match"], metrics["eval_contains_match"]) == (0.5, 1.0)
    assert set(metrics_from_sums(total, generate=False)) == {"eval_loss", "eval_ppl"}


@pytest.mark.slow
def test_two_processes_score_the_whole_set_once(tmp_path, tiny_qwen2_dir):
    """`NPROC_PER_NODE=2 mmtune train` (gloo): each rank scores its share of 5 conversations (3 + 2, padded
    to 3), and the all-reduced numbers are the single-process `evaluate_text` numbers of the same weights."""
    import os
    import subprocess
    import sys

    from mmtune.config.load import dump_config
    from mmtune.data.formats import read_file
    from mmtune.eval.text import evaluate_text
    from mmtune.infer.load import load_for_inference

    held = write_held_out(tmp_path / "heldout.jsonl", HELD_OUT[:5])
    recipe = self_cognition_recipe(
        tiny_qwen2_dir, write_self_cognition(tmp_path / "self.jsonl", repeat=1),
        train={"max_steps": 2, "logging_steps": 1, "save_steps": 2, "micro_batch_size": 2},
        eval={"every_n_steps": 1, "evaluation_inputs": [], "datasets": [{"path": str(held)}], "batch_size": 2,
              "generate": True, "max_new_tokens": 4},
    )
    path = tmp_path / "recipe.yaml"
    path.write_text(dump_config(recipe), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env.update(NPROC_PER_NODE="2", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", MMTUNE_CACHE=str(tmp_path / "cache"))
    work = tmp_path / "work"
    proc = subprocess.run([sys.executable, "-m", "mmtune", "train", str(path), "--work-dir", str(work)], env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = json.loads((work / "checkpoint-2" / "trainer_state.json").read_text())
    logged = {h["step"]: h["eval_loss"] for h in state["log_history"] if "eval_loss" in h}
    assert sorted(logged) == [0, 1, 2]
    assert all(0.0 <= h["eval_contains_match"] <= 1.0 for h in state["log_history"] if "eval_loss" in h)
    log = (work / "train.log").read_text()
    assert "parallelism: 2 process(es), data parallel (DDP)" in log
    assert log.count("[eval @ step 2] loss ") == 1 and "(5 conversations, " in log

    convs, _ = read_file(held)
    base = load_for_inference(recipe.model.path, template="chatml", device="cpu")
    before = evaluate_text(base.model, base.tokenizer, base.template, convs, generate=False, max_length=recipe.data.max_length)
    assert logged[0] == pytest.approx(before["loss"], rel=1e-4)  # LoRA starts as the identity
    tuned = load_for_inference(recipe.model.path, adapter=str(work / "final"), device="cpu")
    after = evaluate_text(tuned.model, tuned.tokenizer, tuned.template, convs, generate=False, max_length=recipe.data.max_length)
    assert logged[2] == pytest.approx(after["loss"], rel=1e-4)
