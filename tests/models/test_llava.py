"""Building LLaVA from a tiny LM + tiny vision encoder; projector save/load; export without mmtune."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from mmtune.errors import MmtuneError
from mmtune.models.llava import build_llava, ensure_image_token, image_tokens_per_image
from mmtune.models.projector import load_projector, save_projector
from mmtune.testing.tiny import tiny_lm_dir
from mmtune.testing.tiny_vision import tiny_image, tiny_vision_dir

PROMPT = "<image>\nWhat color is the square?"


def build(vision="clip", lm="qwen2", seed=0, **kwargs):
    torch.manual_seed(seed)
    return build_llava(str(tiny_lm_dir(lm)), str(tiny_vision_dir(vision)), **kwargs)


@pytest.fixture(scope="module")
def clip_llava():
    return build("clip")


@pytest.fixture(scope="module")
def siglip_llava():
    return build("siglip")


def image_inputs(processor, n=1):
    return processor(images=[tiny_image(i) for i in range(n)], text=[PROMPT] * n, return_tensors="pt")


def test_only_the_projector_is_new(clip_llava):
    from transformers import AutoModelForCausalLM, CLIPVisionModel

    model, _ = clip_llava
    lm = AutoModelForCausalLM.from_pretrained(tiny_lm_dir("qwen2"))
    vision = CLIPVisionModel.from_pretrained(tiny_vision_dir("clip"))
    core = model.model
    for name, value in lm.model.state_dict().items():
        assert torch.equal(core.language_model.state_dict()[name], value), name
    assert torch.equal(model.lm_head.weight, lm.lm_head.weight)
    assert model.lm_head.weight is core.language_model.embed_tokens.weight  # Qwen2 ties them; still tied
    for name, value in vision.state_dict().items():
        assert torch.equal(core.vision_tower.state_dict()[name], value), name
    seen = {n for n, _ in model.named_parameters()}
    new = {n for n in seen if not n.startswith(("model.language_model.", "model.vision_tower."))}
    assert new == {f"model.multi_modal_projector.linear_{i}.{p}" for i in (1, 2) for p in ("weight", "bias")}
    assert not any(p.is_meta for p in model.parameters())


def test_untied_llama_lm_keeps_its_head():
    from transformers import AutoModelForCausalLM

    model, processor = build("siglip", lm="llama")
    lm = AutoModelForCausalLM.from_pretrained(tiny_lm_dir("llama"))
    assert torch.equal(model.lm_head.weight, lm.lm_head.weight)
    assert model.lm_head.weight is not model.model.language_model.embed_tokens.weight
    out = model(**image_inputs(processor))
    assert torch.isfinite(out.logits).all()


@pytest.mark.parametrize(
    "vision, select, strategy, tokens",
    [("clip", "patch", "default", 16), ("clip", "cls_patch", "full", 17), ("siglip", "patch", "full", 16)],
)
def test_image_token_counts(vision, select, strategy, tokens, clip_llava, siglip_llava):
    if select == "patch":
        model, processor = clip_llava if vision == "clip" else siglip_llava
    else:
        model, processor = build(vision, vision_feature_select=select)
    assert model.config.vision_feature_select_strategy == strategy
    assert image_tokens_per_image(model.config) == tokens == model.config.image_seq_length
    inputs = image_inputs(processor, n=2)
    per_row = (inputs["input_ids"] == model.config.image_token_id).sum(dim=1)
    assert per_row.tolist() == [tokens, tokens]
    labels = inputs["input_ids"].masked_fill(inputs["input_ids"] == model.config.image_token_id, -100)
    with torch.no_grad():
        out = model(**inputs, labels=labels)
    # the projected features of each image (transformers 5.24+: image_outputs.pooler_output, one per image)
    features = out.image_outputs.pooler_output
    assert [tuple(f.shape) for f in features] == [(tokens, model.config.text_config.hidden_size)] * 2
    assert torch.isfinite(out.loss)


def test_siglip_has_no_cls_to_keep():
    with pytest.raises(MmtuneError, match="cls_patch"):
        build("siglip", vision_feature_select="cls_patch")


def test_wrong_image_token_count_raises(clip_llava):
    model, processor = clip_llava
    inputs = image_inputs(processor)
    ids = inputs["input_ids"]
    first = int((ids[0] == model.config.image_token_id).nonzero()[0])
    inputs["input_ids"] = torch.cat([ids[:, :first], ids[:, first + 1 :]], dim=1)  # one image token short
    inputs["attention_mask"] = inputs["attention_mask"][:, 1:]
    with pytest.raises(Exception, match="Image features and image tokens do not match"):
        model(**inputs)


def test_bad_vision_feature_layer():
    with pytest.raises(MmtuneError, match="vision_feature_layer"):
        build("clip", vision_feature_layer=-9)


def test_missing_image_token_is_added(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_dir("qwen2"))
    lm = AutoModelForCausalLM.from_pretrained(tiny_lm_dir("qwen2"))
    rows = lm.get_input_embeddings().weight.shape[0]
    old = lm.get_input_embeddings().weight[:rows].clone()
    assert ensure_image_token(tokenizer, lm) == tokenizer.convert_tokens_to_ids("<image>") < rows  # already there
    new_id = ensure_image_token(tokenizer, lm, token="<video>")
    assert new_id == rows and lm.get_input_embeddings().weight.shape[0] == rows + 1
    assert torch.equal(lm.get_input_embeddings().weight[:rows], old)
    assert tokenizer.encode("<video><video>", add_special_tokens=False) == [new_id, new_id]


def test_projector_round_trip(clip_llava, tmp_path):
    model, _ = clip_llava
    out = save_projector(model, tmp_path / "proj")
    info = json.loads((out / "projector.json").read_text())
    assert info["projector_type"] == "mlp2x_gelu"
    assert (info["input_dim"], info["hidden_dim"], info["output_dim"]) == (64, 128, 128)
    assert info["vision_feature_layer"] == -2 and info["vision_feature_select"] == "patch"
    assert info["image_tokens_per_image"] == 16
    assert info["llm"] == str(tiny_lm_dir("qwen2")) and info["vision_encoder"] == str(tiny_vision_dir("clip"))

    other, _ = build("clip", seed=1)
    before = other.model.multi_modal_projector.state_dict()
    reference = model.model.multi_modal_projector.state_dict()
    assert not torch.equal(before["linear_1.weight"], reference["linear_1.weight"])
    load_projector(other, out)
    for key, value in other.model.multi_modal_projector.state_dict().items():
        assert torch.equal(value, reference[key]), key


def _smaller_lm(path):
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_dir("qwen2"))
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True,
    )
    Qwen2ForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def test_projector_for_another_model_is_refused(clip_llava, tmp_path):
    model, _ = clip_llava
    save_projector(model, tmp_path / "proj")
    small, _ = build_llava(_smaller_lm(tmp_path / "lm64"), str(tiny_vision_dir("clip")))
    with pytest.raises(MmtuneError, match="_dim is 128 but this model needs 64"):
        load_projector(small, tmp_path / "proj")
    with_cls, _ = build("clip", vision_feature_select="cls_patch")
    with pytest.raises(MmtuneError, match="vision_feature_select"):
        load_projector(with_cls, tmp_path / "proj")
    with pytest.raises(MmtuneError, match="not a saved projector"):
        load_projector(model, tmp_path)


LOAD_WITHOUT_MMTUNE = textwrap.dedent(
    """
    import sys, torch
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from PIL import Image
    path, remote = sys.argv[1], sys.argv[2] == "1"
    model = AutoModelForImageTextToText.from_pretrained(path, trust_remote_code=remote).eval()
    processor = AutoProcessor.from_pretrained(path, trust_remote_code=remote)
    inputs = processor(images=Image.open(path + "/probe.png"), text=sys.argv[3], return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
    torch.save({"logits": logits, "input_ids": inputs["input_ids"]}, path + "/probe.pt")
    assert "mmtune" not in sys.modules, "loading imported mmtune"
    print(type(model).__name__, type(processor).__name__)
    """
)


def export_and_reload(model, processor, out, remote=False):
    """Save, reload in a fresh interpreter that never imports mmtune; (our logits, its result)."""
    model.save_pretrained(out)
    processor.save_pretrained(out)
    tiny_image(7).save(out / "probe.png")
    inputs = processor(images=tiny_image(7), text=PROMPT, return_tensors="pt")
    with torch.no_grad():
        logits = model.eval()(**inputs).logits
    run = subprocess.run(
        [sys.executable, "-c", LOAD_WITHOUT_MMTUNE, str(out), "1" if remote else "0", PROMPT],
        cwd=out, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return inputs, logits, torch.load(out / "probe.pt"), run.stdout


def test_export_loads_in_plain_transformers(clip_llava, tmp_path):
    model, processor = clip_llava
    inputs, logits, theirs, stdout = export_and_reload(model, processor, tmp_path / "export")
    assert "LlavaForConditionalGeneration LlavaProcessor" in stdout
    assert torch.equal(theirs["input_ids"], inputs["input_ids"])
    torch.testing.assert_close(theirs["logits"], logits, rtol=0, atol=1e-5)


def test_resampler_projector_builds_trains_and_exports(tmp_path):
    model, processor = build("siglip", projector="resampler", resampler_query_nums=8)
    assert image_tokens_per_image(model.config) == 8
    inputs = image_inputs(processor, n=2)
    assert (inputs["input_ids"] == model.config.image_token_id).sum(dim=1).tolist() == [8, 8]
    labels = inputs["input_ids"].masked_fill(inputs["input_ids"] == model.config.image_token_id, -100)
    model.train()
    model(**inputs, labels=labels).loss.backward()
    assert model.model.multi_modal_projector.query.grad.abs().sum() > 0

    save_projector(model, tmp_path / "proj")
    info = json.loads((tmp_path / "proj" / "projector.json").read_text())
    assert (info["projector_type"], info["query_nums"]) == ("resampler", 8)
    mlp, _ = build("siglip")
    with pytest.raises(MmtuneError, match="projector_type"):
        load_projector(mlp, tmp_path / "proj")

    model.zero_grad()
    inputs, logits, theirs, stdout = export_and_reload(model, processor, tmp_path / "export", remote=True)
    assert (tmp_path / "export" / "modeling_llava_resampler.py").exists()
    assert "LlavaResamplerForConditionalGeneration LlavaResamplerProcessor" in stdout
    assert torch.equal(theirs["input_ids"], inputs["input_ids"])
    torch.testing.assert_close(theirs["logits"], logits, rtol=0, atol=1e-5)


def test_resampler_needs_a_square_grid():
    with pytest.raises(MmtuneError, match="resampler"):
        build("clip", projector="resampler", vision_feature_select="cls_patch")
