"""End-to-end LoRA training on a tiny model: it must learn, and leave everything a user needs."""

from __future__ import annotations

import json

from mmtune.testing.runs import NAME, QUESTION, lora_run


def test_lora_run_learns_its_name():
    recipe, result = lora_run()
    losses = [h["loss"] for h in result.log_history if "loss" in h]
    assert losses[-1] < losses[0] / 4, losses
    first = [s for s in result.samples if s["step"] == 0]
    last = [s for s in result.samples if s["step"] == recipe.train.max_steps]
    assert first and NAME not in first[0]["answer"]
    assert last and NAME in last[0]["answer"], last


def test_lora_run_writes_logs_plots_and_checkpoints():
    recipe, result = lora_run()
    work = result.work_dir
    for name in ("train.log", "config.yaml", "loss.png", "loss.json", "samples.jsonl"):
        assert (work / name).is_file(), name
    assert list((work / "tensorboard").glob("events.*"))
    log = (work / "train.log").read_text()
    assert "[sample @ step 50]" in log and f"Q: {QUESTION}" in log
    assert "step 150/150" in log
    # peak memory with every training log entry (CPU: the process's peak RSS), eval entries without
    entries = [h for h in result.log_history if "loss" in h or "train_runtime" in h]
    assert entries and all(h.get("peak_rss_gib", 0) > 0.1 for h in entries), entries[-1]
    assert all("peak_gpu_mem_gib" not in h for h in result.log_history)
    rss = [h["peak_rss_gib"] for h in entries]
    assert rss == sorted(rss)  # a peak never goes down
    assert f"peak RSS {entries[-1]['peak_rss_gib']:.2f} GiB" in log
    assert "peak memory: RSS " in log
    # checkpoints every 50 steps, each with what resume and export need
    ckpt = work / "checkpoint-150"
    for name in ("adapter_model.safetensors", "adapter_config.json", "optimizer.pt", "trainer_state.json", "mmtune_meta.json"):
        assert (ckpt / name).is_file(), name
    meta = json.loads((result.final_dir / "mmtune_meta.json").read_text())
    assert meta["template"] == "chatml" and meta["method"] == "lora"
    # samples.jsonl has the answers at 0, 50, 100 and 150
    steps = sorted({json.loads(line)["step"] for line in (work / "samples.jsonl").read_text().splitlines()})
    assert steps == [0, 50, 100, 150]


def test_tokenization_is_cached_between_runs():
    from mmtune.data.dataset import encode_datasets
    from mmtune.models.load import load_tokenizer

    recipe, result = lora_run()
    tokenizer = load_tokenizer(recipe.model)
    encoded, stats = encode_datasets(recipe.data, tokenizer)
    assert stats.from_cache
    assert stats.samples == result.data.samples
