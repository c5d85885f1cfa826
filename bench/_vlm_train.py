"""One VLM fine-tuning run for vlm_throughput.py, in this process; prints one `RESULT {json}` line.

Workers (each in a fresh process):
- `mm`: mmtune (this checkout's venv), packed rows, answers-only loss, through `run_training`.
- `hf`: a plain transformers Trainer with the processor as collator (the transformers VLM fine-tuning
  recipe: the chat template renders each conversation, the processor pads the batch and expands the
  images, labels are the input ids with padding and image tokens masked). No mmtune import.
- `trl`: TRL's SFTTrainer VLM path (dataset of `messages` + `images`, the processor as processing
  class; TRL trains VLMs on padded batches of whole conversations). No mmtune import.

All three: the same tiny model copy, the same conversations and images, the LLM trained in full with
the vision tower and projector frozen, fp32, AdamW (fused) lr 1e-4 linear without warmup, grad-norm
clip 1.0, no gradient accumulation, no checkpoint saving, `--steps` optimizer steps, about 8 samples
a step: the peers' micro-batch of 8 padded samples, mmtune's one packed row of 456 tokens.
Real tokens = tokens of the conversations (image tokens included, padding not) in the micro-batches
the steps trained on; real tok/s = real tokens / the Trainer's train_runtime.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

HYPER = {"lr": 1e-4, "micro_batch": 8, "seed": 42}
PACKED_ROW = 456  # mmtune: micro-batch 1 of one packed row this long = about 8 samples, as the peers' batch
PARTS = {  # the vision tower and projector that stay frozen (the families' defaults in mmtune)
    "qwen2_5_vl": ("model.visual",),
    "minicpmv4_6": ("model.vision_tower", "model.merger"),
}


def emit(result: dict) -> None:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps({**result, "peak_rss_mb": round(rss, 1)}), flush=True)


def load_records(assets: Path) -> list[dict]:
    return [json.loads(line) for line in (assets / "data" / "messages.jsonl").read_text().splitlines()]


class Counter:
    """Wraps a collator: real tokens (attention mask, or every token of a packed row) and positions of
    each micro-batch."""

    def __init__(self, inner):
        self.inner, self.batches = inner, []

    def __call__(self, rows):
        batch = self.inner(rows)
        ids = batch["input_ids"]
        real = int(batch["attention_mask"].sum()) if "attention_mask" in batch else int(ids.numel())
        self.batches.append((real, int(ids.numel())))
        return batch


def peer_processor(model_dir: Path):
    """The checkpoint's processor. torchvision does not run beside torch 2.13.0+cpu here (ENVIRONMENT.md),
    and transformers' video processors need it, so AutoProcessor fails on these families; the peers
    then get the processor built from its PIL image processor, tokenizer and chat template, with an
    object in the video processor's place (these runs have no video)."""
    import transformers
    from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer

    try:
        return AutoProcessor.from_pretrained(model_dir)
    except (ImportError, ValueError, OSError):
        pass
    config = json.loads((model_dir / "processor_config.json").read_text())
    cls = getattr(transformers, config.pop("processor_class"))
    image_processor = AutoImageProcessor.from_pretrained(model_dir)

    class NoVideo:  # what MiniCPM-V's processor reads off its video processor when it is built
        slice_mode, downsample_mode = True, getattr(image_processor, "downsample_mode", "16x")

    class Processor(cls):
        def check_argument_for_proper_class(self, name, argument):
            return type(argument) if isinstance(argument, NoVideo) else super().check_argument_for_proper_class(name, argument)

    return Processor(image_processor=image_processor, tokenizer=AutoTokenizer.from_pretrained(model_dir),
                     video_processor=NoVideo(), chat_template=(model_dir / "chat_template.jinja").read_text(),
                     **{k: v for k, v in config.items() if not isinstance(v, dict)})


def peer_model(model_dir: Path, family: str):
    import torch
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(HYPER["seed"])
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    for name, p in model.named_parameters():
        p.requires_grad_(not any(name.startswith(prefix + ".") for prefix in PARTS[family]))
    return model, peer_processor(model_dir)


def training_args(out: Path, steps: int, cls=None, **extra):
    from transformers import TrainingArguments

    cls = cls or TrainingArguments
    return cls(output_dir=str(out), per_device_train_batch_size=HYPER["micro_batch"], gradient_accumulation_steps=1,
               max_steps=steps, learning_rate=HYPER["lr"], lr_scheduler_type="linear", warmup_steps=0,
               max_grad_norm=1.0, weight_decay=0.0, optim="adamw_torch_fused", logging_steps=10, save_strategy="no",
               report_to=[], seed=HYPER["seed"], use_cpu=True, dataloader_num_workers=0, remove_unused_columns=False,
               **extra)


def finish(toolkit: str, trainer, counter: Counter, t0: float, steps: int, extra: dict | None = None) -> None:
    import torch

    out = trainer.train()
    trained = counter.batches[:steps]  # the dataloader collates one batch ahead
    real, padded = sum(b[0] for b in trained), sum(b[1] for b in trained)
    rt = out.metrics["train_runtime"]
    emit({"toolkit": toolkit, "steps": out.global_step, "real_tokens": real, "padded_tokens": padded,
          "train_runtime_s": round(rt, 2), "real_tok_s": round(real / rt, 1), "padded_tok_s": round(padded / rt, 1),
          "pad_fraction": round(1 - real / padded, 4), "wall_s": round(time.time() - t0, 1),
          "final_loss": round(out.training_loss, 4), "threads": torch.get_num_threads(), **(extra or {})})


def run_hf(assets: Path, family: str, steps: int, out: Path) -> None:
    import torch
    from PIL import Image
    from transformers import Trainer

    t0 = time.time()
    model, processor = peer_model(assets / family, family)
    image_id = model.config.image_token_id
    records = load_records(assets)

    def collate(examples):
        texts = [processor.apply_chat_template(ex["messages"], tokenize=False) for ex in examples]
        images = [[Image.open(assets / "data" / p).convert("RGB") for p in ex["images"]] for ex in examples]
        batch = processor(text=texts, images=images if any(images) else None, padding=True, return_tensors="pt")
        labels = batch["input_ids"].clone()
        labels[batch["attention_mask"] == 0] = -100
        labels[labels == image_id] = -100
        batch["labels"] = labels
        return batch

    counter = Counter(collate)
    trainer = Trainer(model=model, args=training_args(out, steps), train_dataset=records, data_collator=counter)
    finish("transformers Trainer", trainer, counter, t0, steps, {"torch": torch.__version__})


def run_trl(assets: Path, family: str, steps: int, out: Path) -> None:
    import torch
    import trl
    from datasets import Dataset
    from PIL import Image
    from trl import SFTConfig, SFTTrainer

    t0 = time.time()
    model, processor = peer_model(assets / family, family)
    records = load_records(assets)
    data = Dataset.from_list([{"messages": r["messages"],
                               "images": [Image.open(assets / "data" / p).convert("RGB") for p in r["images"]]}
                              for r in records])
    args = training_args(out, steps, SFTConfig, max_length=None, dataset_num_proc=None)
    trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=processor)
    counter = Counter(trainer.data_collator)
    trainer.data_collator = counter
    finish("TRL SFTTrainer", trainer, counter, t0, steps, {"trl": trl.__version__, "torch": torch.__version__})


def run_mm(assets: Path, family: str, steps: int, out: Path) -> None:
    import torch
    from transformers import TrainerCallback

    import mmtune.train.setup as setup
    from mmtune.config.load import validate_recipe
    from mmtune.train.run import run_training

    t0 = time.time()
    recipe = validate_recipe({
        "model": {"path": str(assets / family), "dtype": "float32", "attn_implementation": "sdpa"},
        "data": {"datasets": [{"path": str(assets / "data" / "messages.jsonl"), "format": "openai"}],
                 # one packed row of about the 8 samples a peer's micro-batch holds (~57 tokens each)
                 "image_folder": str(assets / "data"), "template": "auto", "max_length": PACKED_ROW,
                 "pack_to_max_length": True},
        "method": {"type": "full", "trainable": ["llm"]},
        "train": {"max_steps": steps, "micro_batch_size": 1, "gradient_accumulation": 1,
                  "lr": HYPER["lr"], "optimizer": "adamw_torch_fused", "scheduler": "linear", "warmup_ratio": 0.0,
                  "max_grad_norm": 1.0, "precision": "fp32", "seed": HYPER["seed"], "logging_steps": 10,
                  "save_steps": 0, "device": "cpu"},
        "eval": {"evaluation_inputs": []},
    }, where="bench mm")
    counters = []
    make = setup.MmtuneTrainer

    class Counting(make):  # count what the collator run_training built hands the steps
        def __init__(self, *args, data_collator=None, **kwargs):
            counters.append(Counter(data_collator))
            super().__init__(*args, data_collator=counters[-1], **kwargs)

    setup.MmtuneTrainer = Counting

    class NoSave(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            control.should_save = False

    res = run_training(recipe, out / "work", extra_callbacks=[NoSave()])
    end = next(h for h in reversed(res.log_history) if "train_runtime" in h)
    trained = counters[0].batches[:steps]
    real, padded = sum(b[0] for b in trained), sum(b[1] for b in trained)
    rt = end["train_runtime"]
    emit({"toolkit": "mmtune", "steps": steps, "real_tokens": real, "padded_tokens": padded,
          "train_runtime_s": round(rt, 2), "real_tok_s": round(real / rt, 1), "padded_tok_s": round(padded / rt, 1),
          "pad_fraction": round(1 - real / padded, 4), "wall_s": round(time.time() - t0, 1),
          "final_loss": round(end["train_loss"], 4), "threads": torch.get_num_threads(), "torch": torch.__version__})


if __name__ == "__main__":
    kind, assets, family, steps, out = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]), Path(sys.argv[5])
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    {"mm": run_mm, "hf": run_hf, "trl": run_trl}[kind](assets, family, steps, out)
