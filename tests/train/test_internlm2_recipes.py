"""Every shipped InternLM2 recipe, end to end through the CLI on the tiny InternLM2-layout checkpoint:
train (packing on) -> convert -> merge -> chat, and the LLaVA pretrain -> finetune -> export -> chat.

The recipes are used as shipped, with `--set` pointing them at the tiny model and data and shrinking
the schedule; the exported models load in plain transformers, in a process that never imports mmtune."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mmtune.cli.main import main
from mmtune.testing.runs import write_self_cognition
from mmtune.testing.tiny_internlm2 import tiny_internlm2_dir

SHORT = ["train.max_steps=3", "train.save_steps=0", "train.logging_steps=1", "train.device=cpu", "train.precision=fp32",
         "model.dtype=float32", "train.micro_batch_size=2", "train.gradient_accumulation=1", "data.max_length=192",
         "eval.evaluation_inputs=[]", "method.lora.r=8"]


def sets(*items: str) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def loads_plainly(path: Path, auto_class: str = "AutoModelForCausalLM") -> dict:
    """The exported directory's config, after loading it with plain transformers (no mmtune)."""
    code = (f"import sys; from transformers import AutoTokenizer, {auto_class} as A; A.from_pretrained(sys.argv[1]);"
            "AutoTokenizer.from_pretrained(sys.argv[1])")
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, cwd=path.parent)
    return json.loads((path / "config.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["internlm2_chat_1_8b_lora", "internlm2_chat_1_8b_qlora", "internlm2_chat_1_8b_full"])
def test_text_recipe_trains_exports_merges_and_chats(recipe, tmp_path, capsys):
    model = tiny_internlm2_dir()
    data = write_self_cognition(tmp_path / "self.jsonl", repeat=1)
    args = sets(f"model.path={model}", f"data.datasets.0.path={data}", *SHORT)
    work, hf, merged = tmp_path / "work", tmp_path / "hf", tmp_path / "merged"
    assert main(["train", recipe, "--work-dir", str(work), *args]) == 0
    log = (work / "train.log").read_text()
    assert "(packed)" in log and "packed rows: attention mmtune_packed_sdpa" in log and "step 3/3  loss" in log
    assert main(["convert", "to-hf", recipe, str(work / "final"), str(hf), *args]) == 0
    if recipe.endswith("full"):
        assert loads_plainly(hf)["model_type"] == "llama"  # a full model: plain Llama layout
        chat_dir = hf
    else:
        assert json.loads((hf / "adapter_config.json").read_text())["base_model_name_or_path"] == str(model)
        assert main(["convert", "merge", str(model), str(hf), str(merged)]) == 0
        assert loads_plainly(merged)["model_type"] == "llama"
        assert main(["convert", "merge", str(model), str(hf), str(tmp_path / "merged_ilm2"), "--layout", "internlm2"]) == 0
        assert json.loads((tmp_path / "merged_ilm2" / "config.json").read_text())["model_type"] == "internlm2"
        assert_same_logits(merged, tmp_path / "merged_ilm2")
        chat_dir = merged
    capsys.readouterr()
    assert main(["chat", str(chat_dir), "--query", "who are you?", "--max-new-tokens", "6"]) == 0
    assert "Assistant:" in capsys.readouterr().out


def assert_same_logits(a: Path, b: Path) -> None:
    """The two layouts of one merged model compute the same function."""
    import torch
    from transformers import AutoModelForCausalLM

    from mmtune.models.load import load_pretrained

    ids = torch.randint(10, 2000, (1, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        la, lb = (load_pretrained(AutoModelForCausalLM, p, "the model", dtype=torch.float32)(input_ids=ids).logits
                  for p in (a, b))
    torch.testing.assert_close(la, lb, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_llava_recipes_pretrain_finetune_export_and_chat(tmp_path, capsys):
    from mmtune.data.synth.shapes import make_shapes_dataset
    from mmtune.testing.tiny_vision import tiny_vision_dir

    shapes = tmp_path / "shapes"
    make_shapes_dataset(shapes, n=20, seed=0)
    common = [f"model.path={tiny_internlm2_dir()}", f"model.vision.path={tiny_vision_dir('clip')}",
              f"data.image_folder={shapes}", *SHORT, "train.micro_batch_size=4", "data.max_length=256",
              "eval.evaluation_images=[]"]
    pre, ft, hf = tmp_path / "pre", tmp_path / "ft", tmp_path / "hf"
    assert main(["train", "llava_internlm2_chat_1_8b_clip_vit_large_p14_336_pretrain", "--work-dir", str(pre),
                 *sets(*common, f"data.datasets.0.path={shapes / 'pretrain.json'}")]) == 0
    assert (pre / "final" / "projector.safetensors").is_file()
    finetune = "llava_internlm2_chat_1_8b_clip_vit_large_p14_336_finetune"
    ft_args = sets(*common, f"data.datasets.0.path={shapes / 'finetune.json'}", f"model.pretrained_projector={pre / 'final'}")
    assert main(["train", finetune, "--work-dir", str(ft), *ft_args]) == 0
    assert main(["convert", "to-hf", finetune, str(ft / "final"), str(hf), *ft_args]) == 0
    config = loads_plainly(hf, "AutoModelForImageTextToText")
    assert config["model_type"] == "llava" and config["text_config"]["model_type"] == "llama"
    capsys.readouterr()
    image = shapes / "images" / "heldout_00000.png"
    assert main(["chat", str(hf), "--image", str(image), "--query", "What colour is the shape?",
                 "--max-new-tokens", "4"]) == 0
    assert "Assistant:" in capsys.readouterr().out
