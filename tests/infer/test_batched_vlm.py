"""Batched generation with images, every VLM family: prompts of different lengths and image sizes,
left-padded into one generate call with the images combined as the family combines them in
training, give the replies (and the next-token logits) of one prompt at a time."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from mmtune.data.conversation import Message
from mmtune.infer.engine import GenerationSettings, _left_padded, generate_replies, generate_reply, prompt_inputs
from mmtune.infer.load import load_for_inference
from mmtune.testing.tiny_vlm import BUILDERS, tiny_vlm_dir

IMAGES = [((64, 48), (255, 0, 0)), ((40, 72), (0, 0, 255)), ((56, 56), (0, 255, 0))]
QUESTIONS = ["<image>\nWhat colour?", "<image>\nWhat shape is it, tell me please?", "<image>\nhi"]


@pytest.fixture(scope="module")
def tiny_llava_dir(tmp_path_factory):
    from mmtune.models.llava import build_llava
    from mmtune.testing.tiny import tiny_lm_dir
    from mmtune.testing.tiny_vision import tiny_vision_dir

    out = tmp_path_factory.mktemp("llava")
    model, processor = build_llava(str(tiny_lm_dir("qwen2")), str(tiny_vision_dir("clip")))
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


@pytest.mark.parametrize("family", [*BUILDERS, "llava"])
def test_batched_replies_and_logits_equal_one_by_one(family, tiny_llava_dir):
    path = tiny_llava_dir if family == "llava" else tiny_vlm_dir(family)
    loaded = load_for_inference(str(path), device="cpu", template="chatml" if family == "llava" else None)
    model, tokenizer, template, vision = loaded.model, loaded.tokenizer, loaded.template, loaded.vision
    pictures = [[Image.new("RGB", size, colour)] for size, colour in IMAGES]
    conversations = [[Message("user", q)] for q in QUESTIONS]
    settings = GenerationSettings(max_new_tokens=6)

    batched = generate_replies(model, tokenizer, template, conversations, settings, images=pictures, vision=vision)
    single = [generate_reply(model, tokenizer, template, c, settings, images=p, vision=vision)
              for c, p in zip(conversations, pictures)]
    assert batched == single

    # the next-token logits too (some tiny models end their reply at once, which proves little)
    each = [prompt_inputs(model, tokenizer, template, c, p, vision) for c, p in zip(conversations, pictures)]
    assert len({x["input_ids"].shape[1] for x in each}) > 1  # padding is exercised
    with torch.no_grad():
        together = model(**_left_padded(each, tokenizer.pad_token_id or 0, model)).logits[:, -1]
        alone = torch.cat([model(**x).logits[:, -1] for x in each])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-4)


def test_a_batch_mixing_prompts_with_and_without_images(tiny_llava_dir):
    loaded = load_for_inference(str(tiny_llava_dir), device="cpu", template="chatml")
    conversations = [[Message("user", QUESTIONS[0])], [Message("user", "just text")]]
    pictures = [[Image.new("RGB", (32, 32))], []]
    settings = GenerationSettings(max_new_tokens=4)
    got = generate_replies(loaded.model, loaded.tokenizer, loaded.template, conversations, settings, images=pictures,
                           vision=loaded.vision)
    assert got == [generate_reply(loaded.model, loaded.tokenizer, loaded.template, c, settings, images=p or None,
                                  vision=loaded.vision) for c, p in zip(conversations, pictures)]
