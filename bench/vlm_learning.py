"""Does a tiny VLM learn the mixed shapes task on a CPU? (issue #23, item 9)

    .venv/bin/python bench/vlm_learning.py qwen2_5_vl --seed 11 --n 3000 --steps 800
    .venv/bin/python bench/vlm_learning.py llava --seed 11 --steps 400 --set method.type=full
    .venv/bin/python bench/vlm_learning.py minicpmv4_6 --set data.processor.downsample_mode=4x
    .venv/bin/python bench/vlm_learning.py llava --questions shape   # one kind only: is the mix the limit?

The task: `make_shapes_dataset(questions=["colour", "shape"], choices=True, langs=("en", "zh"))` with
the given seed: open colour and shape questions and MMBench-style multiple choice (2-4 options),
English and Chinese. A recipe trains the tiny model (`qwen2_5_vl`, `minicpmv4_6`: mmtune.testing.tiny_vlm;
`llava`: the tiny Qwen2 + CLIP assembled), then the export answers the held-out open questions
(exact answer, after lower-casing and dropping punctuation) and `mmtune eval mmbench` scores the
held-out multiple choice. Prints one RESULT line (and appends it to --results).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def recipe_for(a, data: Path) -> dict:
    if a.family == "llava":
        from mmtune.testing.tiny import tiny_lm_dir
        from mmtune.testing.tiny_vision import tiny_vision_dir

        model = {"path": str(tiny_lm_dir("qwen2")), "dtype": "float32", "vision": {"path": str(tiny_vision_dir("clip"))}}
        template = "chatml"
    else:
        from mmtune.testing.tiny_vlm import tiny_vlm_dir

        model, template = {"path": str(tiny_vlm_dir(a.family)), "dtype": "float32"}, "auto"
    recipe = {
        "model": model,
        "data": {"datasets": [{"path": str(data / "finetune.json")}], "image_folder": str(data), "template": template,
                 "max_length": 512, "pack_to_max_length": True},
        "method": {"type": "full", "trainable": a.trainable.split(","), "lora": {"r": 32, "alpha": 64, "dropout": 0.0}},
        "train": {"max_steps": a.steps, "micro_batch_size": a.batch, "gradient_accumulation": 1, "lr": a.lr,
                  "warmup_ratio": 0.05, "precision": "fp32", "logging_steps": 50, "save_steps": a.steps,
                  "device": "cpu", "seed": a.seed},
        "eval": {"every_n_steps": 10**6, "evaluation_inputs": []},
    }
    import yaml

    for item in a.set:
        key, value = item.split("=", 1)
        node = recipe
        *parents, last = key.split(".")
        for k in parents:
            node = node.setdefault(k, {})
        node[last] = yaml.safe_load(value)
    return recipe


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("family", choices=["llava", "qwen2_5_vl", "minicpmv4_6"])
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--n", type=int, default=3000, help="images (a fifth held out)")
    p.add_argument("--size", type=int, default=96, help="image side in pixels")
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--trainable", default="vision,projector,llm")
    p.add_argument("--questions", default="colour,shape", help="question kinds (the mixed task: colour,shape)")
    p.add_argument("--set", action="append", default=[], help="recipe override KEY=YAML (repeatable)")
    p.add_argument("--out", default="/tmp/mmtune-vlm-learning")
    p.add_argument("--results", default="/tmp/mmtune-vlm-learning/results.jsonl")
    a = p.parse_args()

    from mmtune.cli.main import main as cli
    from mmtune.config.load import validate_recipe
    from mmtune.data.synth.shapes import make_shapes_dataset
    from mmtune.export.to_hf import checkpoint_to_hf
    from mmtune.infer.load import load_for_inference
    from mmtune.testing.runs import heldout_answers
    from mmtune.train.run import run_training

    out = Path(a.out) / f"{a.family}-seed{a.seed}-{time.strftime('%H%M%S')}"
    kinds = a.questions.split(",")
    suffix = "" if kinds == ["colour", "shape"] else "-" + "-".join(kinds)  # the mixed task keeps its old folder
    data = Path(a.out) / f"data-n{a.n}-seed{a.seed}-px{a.size}{suffix}"
    if not (data / "finetune.json").exists():
        make_shapes_dataset(data, n=a.n, seed=a.seed, size=a.size, questions=kinds, choices=True,
                            langs=("en", "zh"))
    recipe = validate_recipe(recipe_for(a, data))
    t0 = time.time()
    result = run_training(recipe, out / "work")
    train_s = time.time() - t0
    hf = checkpoint_to_hf(recipe, result.final_dir, out / "hf")
    answers = heldout_answers(load_for_inference(str(hf), device="cpu"), data / "heldout.json", data)
    open_acc = {cat: round(sum(x["right"] for x in answers if x["category"] == cat)
                           / max(1, sum(x["category"] == cat for x in answers)), 3) for cat in kinds}
    cli(["eval", "mmbench", str(hf), "--data-path", str(data / "mmbench_dev.tsv"), "--work-dir", str(out / "mmbench")])
    mmbench = json.loads((out / "mmbench" / "summary.json").read_text())["overall"]
    losses = [h["loss"] for h in result.log_history if "loss" in h]
    row = {"family": a.family, "questions": a.questions, "seed": a.seed, "n": a.n, "size": a.size, "steps": a.steps, "lr": a.lr,
           "trainable": a.trainable, "set": a.set, "train_s": round(train_s), "loss_first": round(losses[0], 3),
           "loss_last": round(losses[-1], 3), "open": open_acc, "mmbench": round(mmbench, 3)}
    print("RESULT " + json.dumps(row, ensure_ascii=False))
    Path(a.results).parent.mkdir(parents=True, exist_ok=True)
    with open(a.results, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
