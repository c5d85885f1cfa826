"""LLaVA-style training on the tiny models: pretrain (projector only) -> finetune from that projector
-> the model answers held-out shape questions well above chance; export loads in plain transformers
with the same logits; chat with --image and the XTuner-style --llava form."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from mmtune.export.to_hf import checkpoint_to_hf
from mmtune.infer.load import load_for_inference, load_llava_parts
from mmtune.testing.runs import heldout_answers, llava_runs

pytestmark = pytest.mark.slow


def test_pretrain_output_is_the_projector_alone():
    root, pre_recipe, pre, _, _ = llava_runs()
    files = sorted(p.name for p in pre.final_dir.iterdir())
    assert "projector.safetensors" in files and "projector.json" in files
    assert not any(f.startswith(("model", "adapter")) for f in files)
    info = json.loads((pre.final_dir / "projector.json").read_text())
    assert info["projector_type"] == "mlp2x_gelu" and info["image_tokens_per_image"] == 16
    losses = [h["loss"] for h in pre.log_history if "loss" in h]
    assert losses[-1] < losses[0]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root, _, _, ft_recipe, ft = llava_runs()
    out = checkpoint_to_hf(ft_recipe, ft.final_dir, tmp_path_factory.mktemp("llava") / "hf")
    return root, ft_recipe, ft, out


def test_finetune_trains_and_answers_about_the_evaluation_image(exported):
    root, _, ft, out = exported
    losses = [h["loss"] for h in ft.log_history if "loss" in h]
    assert losses[-1] < losses[0] / 2, losses
    # the sample-chat callback answered the evaluation image during training
    assert ft.samples and ft.samples[-1]["question"] == "What colour is the shape?"
    loaded = load_for_inference(str(out), device="cpu")
    assert loaded.vision is not None
    answers = heldout_answers(loaded, root / "shapes" / "heldout.json", root / "shapes", limit=4)
    assert all(a["answer"] for a in answers)


PLAIN = textwrap.dedent("""
    import json, sys, torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor
    path, image_path = sys.argv[1], sys.argv[2]
    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    processor = AutoProcessor.from_pretrained(path)
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    prompt = processor.tokenizer.apply_chat_template(
        [{"role": "user", "content": "<image>\\nWhat colour is the shape?"}], tokenize=False, add_generation_prompt=True)
    inputs = processor(images=[Image.open(image_path).convert("RGB")], text=prompt, return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits[0, -1]
    # the standard transformers call: list content through the processor's own chat template
    messages = [{"role": "user", "content": [{"type": "image", "url": image_path},
                                             {"type": "text", "text": "What colour is the shape?"}]}]
    listed = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt")
    assert listed["input_ids"].tolist() == inputs["input_ids"].tolist()
    assert torch.equal(listed["pixel_values"], inputs["pixel_values"])
    new = model.generate(**listed, max_new_tokens=6, do_sample=False)[0, listed["input_ids"].shape[1]:]
    assert not any(m == "mmtune" or m.startswith("mmtune.") for m in sys.modules)
    print(json.dumps({"ids": inputs["input_ids"][0].tolist(), "logits": logits.tolist(), "generated": new.tolist()}))
""")


def test_export_loads_in_plain_transformers_with_same_logits(exported):
    root, ft_recipe, ft, out = exported
    image_path = root / "shapes" / "images" / "heldout_00001.png"
    run = subprocess.run([sys.executable, "-c", PLAIN, str(out), str(image_path)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    plain = json.loads(run.stdout.strip().splitlines()[-1])
    # the same prompt through mmtune's trained (unmerged) model
    loaded = load_llava_parts(ft_recipe.model.path, ft_recipe.model.vision.path, str(ft.final_dir), device="cpu")
    from PIL import Image

    from mmtune.infer.engine import prompt_inputs

    from mmtune.data.conversation import Message

    inputs = prompt_inputs(loaded.model, loaded.tokenizer, loaded.template, [Message("user", "<image>\nWhat colour is the shape?")],
                            [Image.open(image_path).convert("RGB")], loaded.vision)
    assert inputs["input_ids"][0].tolist() == plain["ids"]
    with torch.no_grad():
        logits = loaded.model(**inputs).logits[0, -1]
    assert torch.allclose(logits, torch.tensor(plain["logits"]), atol=1e-4)
    with torch.no_grad():  # and transformers' generate from the list-content prompt answers as mmtune's model does
        ours = loaded.model.generate(**inputs, max_new_tokens=6, do_sample=False)[0, inputs["input_ids"].shape[1]:]
    assert plain["generated"] and ours.tolist() == plain["generated"]


def test_chat_cli_with_image(exported, capsys):
    from mmtune.cli.main import main

    root, _, _, out = exported
    image = root / "shapes" / "images" / "heldout_00002.png"
    assert main(["chat", str(out), "--image", str(image), "--query", "What colour is the shape?", "--max-new-tokens", "8"]) == 0
    assert "Assistant:" in capsys.readouterr().out
    assert main(["chat", str(out), "--image", str(root / "nope.png"), "--query", "x"]) == 2
    assert "image file not found" in capsys.readouterr().err


def test_chat_loop_switches_images(exported):
    """`/image PATH` in the terminal chat starts a new conversation about that image: each reply equals
    a one-shot answer about the same image; a missing image is an error line and the chat goes on."""
    import io

    from mmtune.data.images import open_image
    from mmtune.infer.chat import answer, chat_loop
    from mmtune.infer.engine import GenerationSettings

    root, _, _, out = exported
    loaded = load_for_inference(str(out), device="cpu")
    settings = GenerationSettings(max_new_tokens=8)
    paths = [root / "shapes" / "images" / f"heldout_0000{i}.png" for i in range(3)]
    question = "What colour is the shape?"
    lines = [f"/image {paths[0]}", question, f"/image {root / 'nope.png'}", question, f"/image {paths[1]} {paths[2]}",
             "/image", f"/image {paths[2]}", question]
    stdout = io.StringIO()
    chat_loop(loaded, settings, stdin=io.StringIO("\n".join(lines) + "\n"), stdout=stdout)
    text = stdout.getvalue()
    assert "/image PATH" in text.splitlines()[0]  # the help names the command for a vision model
    assert "image file not found" in text and "/image needs at least one path" in text
    assert text.count("(new conversation about 1 image(s))") == 2 and "about 2 image(s)" in text
    replies = [line.split("Assistant: ", 1)[1] for line in text.splitlines() if "Assistant: " in line]
    # the question after the failed /image still asks about paths[0], in the same conversation
    first = answer(loaded, [], question, settings, lambda s: None, [open_image(paths[0], "t")])
    last = answer(loaded, [], question, settings, lambda s: None, [open_image(paths[2], "t")])
    assert replies[0].strip() == first and replies[2].strip() == last, (replies, first, last)
    assert len(replies) == 3


def test_tiny_vlm_learns_the_colour_of_held_out_shapes(tmp_path):
    """The learning proof: a short finetune on colour questions (the `--questions colour` curriculum)
    takes held-out answers from chance (1 in 6 colours) to well above it. Images it never saw."""
    from mmtune.config.load import validate_recipe
    from mmtune.data.synth.shapes import make_shapes_dataset
    from mmtune.testing.tiny import tiny_lm_dir
    from mmtune.testing.tiny_vision import tiny_vision_dir
    from mmtune.train.run import run_training

    shapes = tmp_path / "shapes"
    make_shapes_dataset(shapes, n=600, seed=0, questions=["colour"])
    recipe = validate_recipe({
        "model": {"path": str(tiny_lm_dir("qwen2")), "dtype": "float32",
                  "vision": {"path": str(tiny_vision_dir("clip"))}},
        "data": {"datasets": [{"path": str(shapes / "finetune.json")}], "image_folder": str(shapes),
                 "template": "chatml", "max_length": 256, "pack_to_max_length": False},
        "method": {"type": "full", "stage": "finetune"},
        "train": {"max_steps": 400, "micro_batch_size": 16, "gradient_accumulation": 1, "lr": 1e-3, "precision": "fp32",
                  "logging_steps": 20, "save_steps": 400, "device": "cpu"},
        "eval": {"evaluation_inputs": []},
    })
    result = run_training(recipe, tmp_path / "work")
    out = checkpoint_to_hf(recipe, result.final_dir, tmp_path / "hf")
    answers = heldout_answers(load_for_inference(str(out), device="cpu"), shapes / "heldout.json", shapes, limit=60)
    assert {a["category"] for a in answers} == {"colour"} and len(answers) == 60
    accuracy = sum(a["right"] for a in answers) / len(answers)
    assert accuracy >= 0.5, f"held-out colour accuracy {accuracy:.2f} (chance 0.17): {answers[:6]}"

    # The same model on the MMBench-format dev split of those held-out images (4 options: chance 0.25),
    # through `mmtune eval mmbench` as a user runs it: letters or option texts are extracted and scored.
    from mmtune.cli.main import main

    assert main(["eval", "mmbench", str(out), "--data-path", str(shapes / "mmbench_dev.tsv"),
                 "--work-dir", str(tmp_path / "mmbench"), "--max-new-tokens", "8", "--no-progress"]) == 0
    summary = json.loads((tmp_path / "mmbench" / "summary.json").read_text())
    assert summary["n"] == 60 and set(summary["per_category"]) == {"colour"}
    assert summary["overall"] >= 0.5, summary
