"""data.shuffle: rows are drawn in a (seed, epoch)-determined shuffle by default, in order when off."""

from __future__ import annotations


def test_rows_shuffled_by_default_and_in_order_with_shuffle_off(tiny_qwen2_dir, tmp_path):
    from transformers import AutoModelForCausalLM, TrainingArguments

    from mmtune.train.trainer import MmtuneTrainer

    model = AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir)
    rows = [{"input_ids": [1, 2], "labels": [1, 2]}] * 20
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True, seed=3)
    shuffled = MmtuneTrainer(model=model, args=args, train_dataset=rows)._get_train_sampler()
    ordered = MmtuneTrainer(model=model, args=args, train_dataset=rows, shuffle=False)._get_train_sampler()
    assert list(ordered) == list(range(20))
    first = list(shuffled)
    assert sorted(first) == list(range(20)) and first != list(range(20))
    shuffled.set_epoch(1)
    assert list(shuffled) != first  # a new order each epoch


def test_peak_memory_reports_the_gpu_once_cuda_is_in_use(monkeypatch):
    import torch

    from mmtune.train.trainer import peak_memory

    cpu = peak_memory()
    assert list(cpu) == ["peak_rss_gib"] and cpu["peak_rss_gib"] > 0.05  # this test process holds torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 3 * 2**30 + 2**29)
    assert peak_memory() == {"peak_gpu_mem_gib": 3.5}
