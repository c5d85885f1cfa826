"""Export of a native VLM family's LoRA run (LLM LoRA, vision LoRA and a trained projector merged):
a plain transformers directory that a process which never imports mmtune loads with
`AutoModelForImageTextToText`, giving the logits of mmtune's unmerged model; its image processor and
tokenizer (with the chat template) load with the Auto classes too; chat works on it."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from mmtune.data.conversation import Message
from mmtune.data.images import open_image
from mmtune.export.servable import serving_problems
from mmtune.export.to_hf import checkpoint_to_hf
from mmtune.infer.load import load_for_inference
from mmtune.testing.runs import native_vlm_run
from mmtune.testing.tiny_vlm import BUILDERS

pytestmark = pytest.mark.slow

PLAIN = textwrap.dedent("""
    import json, sys, torch
    from PIL import Image
    from safetensors.torch import load_file
    from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer
    path, inputs_file, image_path = sys.argv[1:4]
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32).eval()
    inputs = load_file(inputs_file)
    with torch.no_grad():
        logits = model(**inputs).logits[0, -1]
    pixels = AutoImageProcessor.from_pretrained(path)(images=[[Image.open(image_path).convert("RGB")]],
                                                       return_tensors="pt")["pixel_values"]
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert not any(m == "mmtune" or m.startswith("mmtune.") for m in sys.modules)
    print(json.dumps({"logits": logits.tolist(), "pixels_equal": bool(torch.equal(pixels, inputs["pixel_values"])),
                      "class": type(model).__name__, "template": tokenizer.chat_template is not None,
                      "dtype": str(next(model.parameters()).dtype)}))
""")


@pytest.mark.parametrize("family", list(BUILDERS))
def test_merged_export_loads_without_mmtune_with_the_same_logits(family, tmp_path):
    root, recipe, result = native_vlm_run(family, trainable=("projector", "llm.lora", "vision.lora"))
    out = checkpoint_to_hf(recipe, result.final_dir, tmp_path / "hf")
    assert not (out / "adapter_config.json").exists()  # merged: one model
    assert serving_problems(out) == []  # what vLLM, SGLang and LMDeploy read is there
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == json.loads((Path(recipe.model.path) / "config.json").read_text())["model_type"]

    # mmtune's own trained model, unmerged: base + adapter
    trained = load_for_inference(recipe.model.path, adapter=str(result.final_dir), device="cpu")
    image_path = root / "shapes" / "images" / "heldout_00001.png"
    image = open_image(image_path, "test")
    text, _ = trained.template.render([Message("user", "<image>\nWhat colour is the shape?")], add_generation_prompt=True)
    inputs = {k: v.contiguous() for k, v in trained.vision.prompt_inputs(text, [image]).items()
              if k != "attention_mask"}
    with torch.no_grad():
        expected = trained.model(**inputs).logits[0, -1]
    save_file(inputs, str(tmp_path / "inputs.safetensors"))

    run = subprocess.run([sys.executable, "-c", PLAIN, str(out), str(tmp_path / "inputs.safetensors"), str(image_path)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    plain = json.loads(run.stdout.strip().splitlines()[-1])
    assert plain["pixels_equal"] and plain["template"] and plain["dtype"] == "torch.float32"
    torch.testing.assert_close(torch.tensor(plain["logits"]), expected, rtol=1e-4, atol=1e-4)

    # and the export chats through mmtune, from what it recorded
    exported = load_for_inference(str(out), device="cpu")
    assert exported.vision is not None
    text2, _ = exported.template.render([Message("user", "<image>\nWhat colour is the shape?")], add_generation_prompt=True)
    assert text2 == text
