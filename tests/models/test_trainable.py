"""`trainable: [...]` decides exactly which weights change in a few optimizer steps."""

from __future__ import annotations

import copy
import functools
import subprocess
import sys
import textwrap

import pytest
import torch

from mmtune.config.schema import LoraConfig
from mmtune.errors import ConfigError
from mmtune.models.trainable import apply_trainable, trainable_summary
from mmtune.models.llava import build_llava
from mmtune.testing.tiny import tiny_lm_dir
from mmtune.testing.tiny_vision import tiny_image, tiny_vision_dir

LORA = LoraConfig(r=4, alpha=8, dropout=0.0)


@functools.cache
def _built(vision):
    torch.manual_seed(0)
    return build_llava(str(tiny_lm_dir("qwen2")), str(tiny_vision_dir(vision)))


def build(vision="clip"):
    """A fresh copy of the tiny LLaVA (tests freeze/wrap it, so each gets its own)."""
    return copy.deepcopy(_built(vision))


def batch(model, processor):
    texts = ["<image>\nWhat is it? A red square.", "<image>\nColor? Blue."]
    inputs = processor(images=[tiny_image(0), tiny_image(1)], text=texts, padding=True, return_tensors="pt")
    ignore = (inputs["input_ids"] == model.config.image_token_id) | (inputs["attention_mask"] == 0)
    inputs["labels"] = inputs["input_ids"].masked_fill(ignore, -100)
    return inputs


def train_steps(model, inputs, steps=3):
    """A few AdamW steps; returns {name: tensor} of the state dict before and after."""
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    model.train()
    for _ in range(steps):
        loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    after = model.state_dict()
    assert before.keys() == after.keys()
    return {k for k in before if not torch.equal(before[k], after[k])}, set(before)


def test_pretrain_trains_only_the_projector():
    model, processor = build()
    model = apply_trainable(model, ["projector"])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("model.multi_modal_projector.") for n in trainable)
    summary = trainable_summary(model)
    assert summary["projector"][0] == summary["projector"][1] > 0
    assert summary["vision"][0] == 0 and summary["llm"][0] == 0
    changed, keys = train_steps(model, batch(model, processor))
    projector_keys = {k for k in keys if k.startswith("model.multi_modal_projector.")}
    assert changed == projector_keys  # every projector tensor moved, nothing else did


def test_finetune_trains_projector_and_llm_lora_not_vision():
    model, processor = build()
    model = apply_trainable(model, ["projector", "llm.lora"], LORA)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any(".vision_tower." in n for n in trainable)
    assert any(".language_model." in n and "lora_" in n for n in trainable)
    assert any("multi_modal_projector.modules_to_save" in n for n in trainable)
    assert all("lora_" in n or "multi_modal_projector.modules_to_save" in n for n in trainable)
    summary = trainable_summary(model)
    assert summary["vision"][0] == 0 and 0 < summary["llm"][0] < summary["llm"][1]

    changed, keys = train_steps(model, batch(model, processor))
    assert not any(".vision_tower." in k for k in changed)
    assert all("lora_" in k or "multi_modal_projector.modules_to_save" in k for k in changed)
    assert any(".language_model." in k and "lora_B" in k for k in changed)
    copy = {k for k in keys if "multi_modal_projector.modules_to_save" in k}
    assert copy and copy <= changed


@pytest.mark.parametrize("vision", ["clip", "siglip"])
def test_vision_lora_only_inside_the_vision_tower(vision):
    model, processor = build(vision)
    model = apply_trainable(model, ["projector", "vision.lora"], LORA)
    lora = {n for n, _ in model.named_parameters() if "lora_" in n}
    assert lora and all(".vision_tower." in n for n in lora)
    # Only layers that feed vision_feature_layer=-2 (here layer 0 of 2) get LoRA; SigLIP's head none.
    assert all(".layers.0." in n for n in lora)
    changed, _ = train_steps(model, batch(model, processor))
    assert any(".vision_tower." in k and "lora_B" in k for k in changed)
    assert not any(".language_model." in k or "lm_head" in k for k in changed)


def test_other_combinations():
    model, _ = build()
    model = apply_trainable(model, ["projector", "llm.lora", "vision.lora"], LORA)
    lora = {n for n, _ in model.named_parameters() if "lora_" in n}
    assert any(".vision_tower." in n for n in lora) and any(".language_model." in n for n in lora)

    full_vision, _ = build()
    full_vision = apply_trainable(full_vision, ["projector", "llm.lora", "vision"], LORA)
    trainable = {n for n, p in full_vision.named_parameters() if p.requires_grad}
    assert any("vision_tower.modules_to_save" in n for n in trainable)  # saved with the adapter
    assert not any(".vision_tower." in n and "lora_" in n for n in trainable)

    full, _ = build()
    full = apply_trainable(full, ["projector", "llm"])
    summary = trainable_summary(full)
    assert summary["llm"][0] == summary["llm"][1] and summary["vision"][0] == 0
    assert full.lm_head.weight.requires_grad


@pytest.mark.parametrize(
    "trainable, match",
    [
        (["projector", "decoder"], "unknown trainable"),
        (["llm", "llm.lora"], "pick one"),
        (["llm", "vision.lora"], "cannot be combined"),
        ([], "empty"),
    ],
)
def test_bad_trainable_specs(trainable, match):
    model, _ = build()
    with pytest.raises(ConfigError, match=match):
        apply_trainable(model, trainable, LORA)


def test_lora_target_that_matches_nothing():
    model, _ = build()
    with pytest.raises(ConfigError, match="match no Linear layer in the vision"):
        apply_trainable(model, ["vision.lora"], LoraConfig(r=4, target_modules=["gate_proj"]))


def test_merged_finetune_exports_as_plain_llava(tmp_path):
    """LoRA + projector finetune, merged, saves as a LlavaForConditionalGeneration without peft."""
    model, processor = build()
    model = apply_trainable(model, ["projector", "llm.lora"], LORA)
    inputs = batch(model, processor)
    train_steps(model, inputs)
    merged = model.merge_and_unload().eval()
    assert type(merged).__name__ == "LlavaForConditionalGeneration"
    merged.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    probe = {k: v for k, v in inputs.items() if k != "labels"}
    torch.save(probe, tmp_path / "inputs.pt")
    with torch.no_grad():
        model.eval()
        expected = model(**probe).logits
    script = textwrap.dedent(
        """
        import sys, torch
        from transformers import AutoModelForImageTextToText
        model = AutoModelForImageTextToText.from_pretrained(sys.argv[1]).eval()
        with torch.no_grad():
            torch.save(model(**torch.load(sys.argv[1] + "/inputs.pt")).logits, sys.argv[1] + "/logits.pt")
        assert "mmtune" not in sys.modules and "peft" not in sys.modules
        """
    )
    run = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    torch.testing.assert_close(torch.load(tmp_path / "logits.pt"), expected, rtol=0, atol=1e-4)


def test_adapter_checkpoint_round_trip(tmp_path):
    """The peft dir a finetune saves reloads onto a freshly built LLaVA with the same outputs."""
    from peft import PeftModel

    model, processor = build()
    model = apply_trainable(model, ["projector", "llm.lora"], LORA)
    inputs = batch(model, processor)
    train_steps(model, inputs)
    model.save_pretrained(tmp_path / "adapter")
    probe = {k: v for k, v in inputs.items() if k != "labels"}
    with torch.no_grad():
        expected = model.eval()(**probe).logits
    fresh, _ = build()
    reloaded = PeftModel.from_pretrained(fresh, tmp_path / "adapter").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**probe).logits, expected, rtol=0, atol=1e-5)


# ---- the same policy for a text LM ------------------------------------------------------------------


def text_batch():
    ids = torch.randint(5, 200, (2, 12), generator=torch.Generator().manual_seed(0))
    return {"input_ids": ids, "labels": ids}


def test_text_defaults_are_llm_or_llm_lora_and_vlm_defaults_follow_the_stage():
    from mmtune.config.schema import MethodConfig
    from mmtune.models.trainable import trainable_groups

    assert trainable_groups(MethodConfig(type="full"), vision=False) == ["llm"]
    assert trainable_groups(MethodConfig(type="qlora"), vision=False) == ["llm.lora"]
    assert trainable_groups(MethodConfig(type="lora", stage="pretrain"), vision=True) == ["projector"]
    assert trainable_groups(MethodConfig(type="full"), vision=True) == ["projector", "llm"]
    assert trainable_groups(MethodConfig(trainable=["projector", "vision"]), vision=True) == ["projector", "vision"]


def test_text_lora_adapts_every_linear_but_the_head_and_full_trains_everything():
    from transformers import AutoModelForCausalLM

    lora = apply_trainable(AutoModelForCausalLM.from_pretrained(tiny_lm_dir("qwen2")), ["llm.lora"], LORA)
    changed, names = train_steps(lora, text_batch())
    assert changed and all("lora_" in k for k in changed)
    adapted = {k.split(".lora_")[0].rsplit(".", 1)[-1] for k in changed}
    assert adapted == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    full = AutoModelForCausalLM.from_pretrained(tiny_lm_dir("qwen2"))
    assert apply_trainable(full, ["llm"], LORA) is full and all(p.requires_grad for p in full.parameters())


def test_text_models_refuse_vision_groups():
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir("qwen2"))
    with pytest.raises(ConfigError, match=r"unknown trainable group\(s\) \['projector'\] for a text model"):
        apply_trainable(model, ["projector", "llm.lora"], LORA)
