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
