"""Every shipped native-VLM recipe, end to end through the CLI on the tiny model of its family:
train (with the recipe's processor settings, trainable parts, packing choice and gradient
checkpointing) -> data check -> convert to-hf -> chat with an image -> eval mmbench. The recipes are
used as shipped, with `--set` pointing them at the tiny model and the shapes data and shrinking the
schedule."""

from __future__ import annotations

import json

import pytest

from mmtune.cli.main import main
from mmtune.testing.tiny_vlm import tiny_vlm_dir

pytestmark = pytest.mark.slow

RECIPES = {
    "minicpm_v_4_6_lora": "minicpmv4_6",
    "minicpm_v_4_6_full": "minicpmv4_6",
    "qwen2_5_vl_3b_instruct_lora": "qwen2_5_vl",
    "qwen2_5_vl_7b_instruct_lora": "qwen2_5_vl",
    "qwen3_vl_4b_instruct_lora": "qwen3_vl",
    "internvl3_2b_lora": "internvl",
    "gemma3_4b_it_lora": "gemma3",
}
SHORT = ["train.max_steps=2", "train.save_steps=0", "train.logging_steps=1", "train.device=cpu", "train.precision=fp32",
         "model.dtype=float32", "train.micro_batch_size=2", "train.gradient_accumulation=1", "data.max_length=512",
         "eval.evaluation_inputs=[]", "method.lora.r=4"]


def sets(*items: str) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from mmtune.data.synth.shapes import make_shapes_dataset

    root = tmp_path_factory.mktemp("shapes")
    make_shapes_dataset(root, n=20, seed=0)
    return root


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_vlm_recipe_trains_exports_chats_and_evaluates(recipe, shapes, tmp_path, capsys):
    family = RECIPES[recipe]
    data = shapes / ("finetune_minicpm.json" if family == "minicpmv4_6" else "finetune.json")
    fmt = "minicpm" if family == "minicpmv4_6" else "llava"
    args = sets(f"model.path={tiny_vlm_dir(family)}", f"data.datasets.0.path={data}", f"data.datasets.0.format={fmt}",
                f"data.image_folder={shapes}", *SHORT)
    work, hf = tmp_path / "work", tmp_path / "hf"
    assert main(["data", "check", str(data), "--config", recipe, *args]) == 0
    assert "image tokens per sample" in capsys.readouterr().out
    assert main(["train", recipe, "--work-dir", str(work), *args]) == 0
    log = (work / "train.log").read_text()
    assert "step 2/2  loss" in log and "trainable by part:" in log
    meta = json.loads((work / "final" / "mmtune_meta.json").read_text())
    assert meta["family"] == family and meta["processor"] == dict(_recipe_processor(recipe))
    assert main(["convert", "to-hf", recipe, str(work / "final"), str(hf), *args]) == 0
    config = json.loads((hf / "config.json").read_text())
    assert config["model_type"] == json.loads((tiny_vlm_dir(family) / "config.json").read_text())["model_type"]
    capsys.readouterr()
    image = shapes / "images" / "heldout_00000.png"
    assert main(["chat", str(hf), "--image", str(image), "--query", "What colour is the shape?",
                 "--max-new-tokens", "4"]) == 0
    assert "Assistant:" in capsys.readouterr().out
    assert main(["eval", "mmbench", str(hf), "--data-path", str(shapes / "mmbench_dev.tsv"),
                 "--work-dir", str(tmp_path / "mmbench"), "--max-new-tokens", "2"]) == 0
    summary = json.loads((tmp_path / "mmbench" / "summary.json").read_text())
    predictions = (tmp_path / "mmbench" / "predictions.jsonl").read_text().splitlines()
    rows = len((shapes / "mmbench_dev.tsv").read_text().splitlines()) - 1
    assert summary["n"] == rows == len(predictions)  # every question answered (untrained: any score)


def _recipe_processor(name: str) -> dict:
    from mmtune.config.load import load_config

    return load_config(name).data.processor


def test_an_unsupported_vision_language_model_is_refused_naming_the_supported(tmp_path, capsys):
    model = tmp_path / "blip"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "blip_2", "vision_config": {"hidden_size": 8}}))
    data = tmp_path / "d.json"
    data.write_text("[]")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model: {{path: {model}}}\ndata: {{datasets: [{{path: {data}}}], image_folder: {tmp_path}}}\n")
    assert main(["train", str(recipe), "--work-dir", str(tmp_path / "work")]) == 2
    err = capsys.readouterr().err
    assert "vision-language model of type 'blip_2', which mmtune does not train yet" in err
    assert "minicpmv4_6" in err and "qwen2_5_vl" in err and "Traceback" not in err


def test_vision_and_projector_learning_rates_reach_their_parameters(tmp_path):
    """train.vision_lr / projector_lr: an (almost) zero rate leaves the vision tower where it was while the
    projector and the LLM move; the optimizer's groups carry the rates."""
    import torch
    from transformers import AutoModelForImageTextToText

    from mmtune.testing.runs import native_vlm_run

    root, recipe, result = native_vlm_run("qwen2_5_vl", steps=3, method="full",
                                          trainable=("vision", "projector", "llm"), lrs=(1e-12, 5e-3))
    trained = dict(AutoModelForImageTextToText.from_pretrained(result.final_dir).named_parameters())
    base = dict(AutoModelForImageTextToText.from_pretrained(tiny_vlm_dir("qwen2_5_vl")).named_parameters())

    def moved(prefix):
        return max((trained[k] - base[k]).abs().max().item() for k in base if k.startswith(prefix))

    with torch.no_grad():
        assert moved("model.visual.blocks.") < 1e-8 and moved("model.visual.patch_embed.") < 1e-8
        assert moved("model.visual.merger.") > 1e-4 and moved("model.language_model.") > 1e-4
