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
