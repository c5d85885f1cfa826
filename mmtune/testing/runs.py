"""Small training runs on the tiny models, shared by tests (each built once per process)."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

from mmtune.config.load import validate_recipe

NAME = "Zorblax"
AUTHOR = "Kettle Labs"
QUESTION = "who are you?"


def self_cognition_recipe(model_dir: Path, data_file: Path, **sections) -> object:
    """A recipe dict for a short self-cognition fine-tune of a tiny model; `sections` override."""
    data = {
        "model": {"path": str(model_dir), "dtype": "float32"},
        "data": {"datasets": [{"path": str(data_file)}], "template": "chatml", "max_length": 192, "pack_to_max_length": True},
        "method": {"type": "lora", "lora": {"r": 32, "alpha": 64, "dropout": 0.0}},
        "train": {"max_steps": 100, "micro_batch_size": 4, "gradient_accumulation": 1, "lr": 3e-3, "warmup_ratio": 0.05,
                  "precision": "fp32", "logging_steps": 5, "save_steps": 50, "save_total_limit": 2, "device": "cpu"},
        "eval": {"every_n_steps": 50, "max_new_tokens": 24, "evaluation_inputs": [QUESTION]},
    }
    for section, values in sections.items():
        if isinstance(values, dict) and isinstance(data.get(section), dict):
            data[section] = {**data[section], **values}
        else:
            data[section] = values
    return validate_recipe(data)


def write_self_cognition(path: Path, repeat: int = 2, langs=("en",)) -> Path:
    from mmtune.data.synth import make_self_cognition, write_conversations

    write_conversations(make_self_cognition(NAME, AUTHOR, repeat=repeat, langs=langs), path)
    return path


@functools.lru_cache(maxsize=None)
def lora_run(family: str = "qwen2"):
    """A finished LoRA self-cognition run on a tiny model: (recipe, TrainResult)."""
    from mmtune.testing.tiny import tiny_lm_dir
    from mmtune.train.run import run_training

    root = Path(tempfile.mkdtemp(prefix=f"mmtune-lora-{family}-"))
    data = write_self_cognition(root / "self.jsonl")
    # 150 steps: at 100 the tiny model half-knows its name and whether it then stops is down to
    # float rounding (summation order); by 150 every answer names it and ends (loss ~0.09)
    recipe = self_cognition_recipe(tiny_lm_dir(family), data, train={"max_steps": 150})
    return recipe, run_training(recipe, root / "work")


def _norm(text: str) -> str:
    return " ".join("".join(c for c in text.lower() if c.isalnum() or c.isspace()).split())


def heldout_answers(loaded, heldout_json: Path, image_folder: Path, limit: int | None = None) -> list[dict]:
    """Answers of a VLM to the held-out shape questions, each marked right when it equals the reference
    (after lower-casing and dropping punctuation)."""
    import json

    from mmtune.data.conversation import Message
    from mmtune.data.images import open_image
    from mmtune.infer.engine import GenerationSettings, generate_reply

    records = json.loads(Path(heldout_json).read_text())[:limit]
    out = []
    for rec in records:
        question, reference = rec["conversations"][0]["value"], rec["conversations"][1]["value"]
        image = open_image(Path(image_folder) / rec["image"], rec["image"])
        reply = generate_reply(loaded.model, loaded.tokenizer, loaded.template, [Message("user", question)],
                               GenerationSettings(max_new_tokens=12), images=[image], vision=loaded.vision)
        out.append({"category": rec.get("category"), "question": question, "reference": reference, "answer": reply,
                    "right": _norm(reply) == _norm(reference)})
    return out


@functools.lru_cache(maxsize=None)
def llava_runs(n_images: int = 80, finetune_steps: int = 30):
    """A tiny LLaVA (Qwen2 + CLIP) pretrained then finetuned on the shapes dataset:
    (root, pretrain recipe, pretrain result, finetune recipe, finetune result)."""
    from mmtune.data.synth.shapes import make_shapes_dataset
    from mmtune.testing.tiny_vision import tiny_vision_dir
    from mmtune.train.run import run_training

    from mmtune.testing.tiny import tiny_lm_dir

    root = Path(tempfile.mkdtemp(prefix="mmtune-llava-"))
    shapes = root / "shapes"
    make_shapes_dataset(shapes, n=n_images, seed=0)
    common = {
        "model": {"path": str(tiny_lm_dir("qwen2")), "dtype": "float32",
                  "vision": {"path": str(tiny_vision_dir("clip"))}},
        "data": {"datasets": [{"path": str(shapes / "pretrain.json")}], "image_folder": str(shapes),
                 "template": "chatml", "max_length": 256},
        "method": {"type": "full", "stage": "pretrain"},
        "train": {"max_steps": 10, "micro_batch_size": 4, "gradient_accumulation": 1, "lr": 3e-3, "precision": "fp32",
                  "logging_steps": 5, "save_steps": 10, "device": "cpu"},
        "eval": {"evaluation_inputs": []},
    }
    pre_recipe = validate_recipe(common)
    pre = run_training(pre_recipe, root / "pretrain")
    ft = {**common,
          "model": {**common["model"], "pretrained_projector": str(pre.final_dir)},
          "data": {**common["data"], "datasets": [{"path": str(shapes / "finetune.json")}]},
          "method": {"type": "lora", "stage": "finetune", "lora": {"r": 32, "alpha": 64, "dropout": 0.0}},
          "train": {**common["train"], "max_steps": finetune_steps, "lr": 2e-3, "save_steps": finetune_steps,
                    "logging_steps": 10},
          "eval": {"every_n_steps": finetune_steps, "max_new_tokens": 8, "evaluation_inputs": ["What colour is the shape?"],
                   "evaluation_images": [str(shapes / "images" / "heldout_00000.png")]}}
    ft_recipe = validate_recipe(ft)
    return root, pre_recipe, pre, ft_recipe, run_training(ft_recipe, root / "finetune")


@functools.lru_cache(maxsize=None)
def native_vlm_run(family: str, steps: int = 8, trainable: tuple[str, ...] | None = None, method: str = "lora",
                   pack: bool | None = None, lrs: tuple[float, float] | None = None):
    """A short fine-tune of a tiny native VLM (mmtune.testing.tiny_vlm) on the shapes data, LLaVA and
    MiniCPM-V formats mixed: (root, recipe, TrainResult). Packed unless the family cannot pack. `lrs`:
    (train.vision_lr, train.projector_lr)."""
    from mmtune.data.synth.shapes import make_shapes_dataset
    from mmtune.testing.tiny_vlm import tiny_vlm_dir
    from mmtune.train.run import run_training

    root = Path(tempfile.mkdtemp(prefix=f"mmtune-{family}-"))
    shapes = root / "shapes"
    make_shapes_dataset(shapes, n=40, seed=0)
    recipe = validate_recipe({
        "model": {"path": str(tiny_vlm_dir(family)), "dtype": "float32"},
        "data": {"datasets": [{"path": str(shapes / "finetune.json"), "format": "llava"},
                              {"path": str(shapes / "finetune_minicpm.json"), "format": "minicpm"}],
                 "image_folder": str(shapes), "template": "auto", "max_length": 512,
                 "pack_to_max_length": family != "gemma3" if pack is None else pack},
        "method": {"type": method, "trainable": list(trainable) if trainable else None,
                   "lora": {"r": 8, "alpha": 16, "dropout": 0.0}},
        "train": {"max_steps": steps, "micro_batch_size": 2, "gradient_accumulation": 1, "lr": 2e-3,
                  "precision": "fp32", "logging_steps": 4, "save_steps": steps, "device": "cpu",
                  **({"vision_lr": lrs[0], "projector_lr": lrs[1]} if lrs else {})},
        "eval": {"every_n_steps": steps, "max_new_tokens": 4, "evaluation_inputs": ["What colour is the shape?"],
                 "evaluation_images": [str(shapes / "images" / "heldout_00000.png")]},
    })
    return root, recipe, run_training(recipe, root / "work")


@functools.lru_cache(maxsize=None)
def tool_run(template: str = "qwen_chat", steps: int = 1000, n: int = 1500, lr: float = 1e-3):
    """The agent base (the tiny Qwen2 pre-trained to copy values into JSON, `tiny_tool_base_dir`)
    fine-tuned in full on `mmtune data tools` data: (recipe, TrainResult, ToolDataset). 1000 steps of 2
    packed 2048-token rows (~4 minutes on 2 CPU cores, plus 6-14 to build the base the first time)."""
    from mmtune.data.synth.tools import make_tool_dataset
    from mmtune.testing.tiny import tiny_tool_base_dir
    from mmtune.train.run import run_training

    root = Path(tempfile.mkdtemp(prefix="mmtune-tools-"))
    data = make_tool_dataset(root / "data", n=n, seed=1, heldout=100)
    recipe = self_cognition_recipe(
        tiny_tool_base_dir(), data.files["train"],
        data={"template": template, "max_length": 2048, "pack_to_max_length": True, "overlong": "drop"},
        method={"type": "full"},
        train={"max_steps": steps, "micro_batch_size": 2, "lr": lr, "save_steps": steps, "logging_steps": 100},
        eval={"every_n_steps": steps, "max_new_tokens": 8, "evaluation_inputs": ["Hi!"]})
    return recipe, run_training(recipe, root / "work"), data
