"""The plain transformers Trainer on the GPU benchmark: no packing, dynamic padding to the longest
sample of the micro-batch, assistant-only labels (ChatML), bf16 weights and bf16 autocast, SDPA.
Optionally with liger-kernel (`TrainingArguments(use_liger_kernel=True)`). One `RESULT {json}` line.

    python3 bench/gpu/hf_baseline.py MODEL_DIR MESSAGES_JSONL OUT_DIR [--steps 100] [--micro-batch 16] [--liger]
"""

from __future__ import annotations

import argparse
import json
import time

import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _token_check import baseline_encoder  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("messages")
    p.add_argument("out")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--micro-batch", type=int, default=16)
    p.add_argument("--max-length", type=int, default=4096)
    p.add_argument("--liger", action="store_true")
    p.add_argument("--cpu", action="store_true", help="smoke test on CPU (fp32)")
    a = p.parse_args()
    t_start = time.time()
    tok = AutoTokenizer.from_pretrained(a.model)

    encode = baseline_encoder(tok, a.max_length)  # the kit baseline's ChatML encoding, assistant-only labels

    t0 = time.time()
    with open(a.messages) as f:
        data = [encode(json.loads(line)["messages"]) for line in f]
    prep_s = time.time() - t0

    def collate(batch):
        n = max(len(b["input_ids"]) for b in batch)
        return {"input_ids": torch.tensor([b["input_ids"] + [tok.pad_token_id] * (n - len(b["input_ids"])) for b in batch]),
                "labels": torch.tensor([b["labels"] + [-100] * (n - len(b["labels"])) for b in batch]),
                "attention_mask": torch.tensor([[1] * len(b["input_ids"]) + [0] * (n - len(b["input_ids"])) for b in batch])}

    counts = {"real": 0, "padded": 0}

    class CountingTrainer(Trainer):
        def compute_loss(self, model, inputs, *args, **kwargs):
            counts["real"] += int(inputs["attention_mask"].sum())
            counts["padded"] += inputs["attention_mask"].numel()
            return super().compute_loss(model, inputs, *args, **kwargs)

    dtype = torch.float32 if a.cpu else torch.bfloat16
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=dtype, attn_implementation="sdpa")
    args = TrainingArguments(output_dir=a.out, per_device_train_batch_size=a.micro_batch, gradient_accumulation_steps=1,
                             learning_rate=1e-5, max_steps=a.steps, lr_scheduler_type="linear", warmup_steps=0,
                             logging_steps=10, save_strategy="no", report_to=[], seed=42, dataloader_num_workers=0,
                             remove_unused_columns=False, bf16=not a.cpu, use_cpu=a.cpu, use_liger_kernel=a.liger)
    trainer = CountingTrainer(model=model, args=args, train_dataset=data, data_collator=collate)
    metrics = trainer.train().metrics
    rt = metrics["train_runtime"]
    res = {"toolkit": "hf-trainer" + (" + liger" if a.liger else ""), "method": "full", "packing": False,
           "torch": torch.__version__, "steps": a.steps, "micro_batch": a.micro_batch,
           "real_tokens": counts["real"], "padded_tokens": counts["padded"], "train_runtime_s": round(rt, 2),
           "real_tok_s": round(counts["real"] / rt, 1), "padded_tok_s": round(counts["padded"] / rt, 1),
           "pad_fraction": round(1 - counts["real"] / counts["padded"], 4), "prep_s": round(prep_s, 2),
           "wall_s": round(time.time() - t_start, 2), "final_loss": round(metrics.get("train_loss", float("nan")), 4)}
    if torch.cuda.is_available() and not a.cpu:
        res["cuda_peak_mem_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        res["cuda_peak_reserved_mb"] = round(torch.cuda.max_memory_reserved() / 2**20, 1)
    print("RESULT " + json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
