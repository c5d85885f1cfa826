"""mmtune_packed_sdpa on a LLaVA model and outside packed training.

Packed VLM rows (images and text-only samples in one flat row) must train exactly like the samples
run one by one, with the packed attention in the language model only: the vision tower keeps
plain sdpa. Outside packed rows (padded batches, generation with a cache) the implementation must
behave exactly like sdpa. The text-only LM equality tests live in tests/data/test_packing.py.
"""

from __future__ import annotations

import pytest
import torch

from mmtune.data.collate import FlatCollator, PaddingCollator
from mmtune.constants import IGNORE_INDEX
from mmtune.data.packing import concat_samples
from mmtune.models.llava import build_llava
from mmtune.models.packed_attention import (
    PACKED_SDPA,
    flat_collator_options,
    language_model,
    use_packed_attention,
)
from mmtune.testing.tiny import tiny_lm_dir
from mmtune.testing.tiny_vision import tiny_image, tiny_vision_dir

TEXTS = [
    ("<image>\nWhat color is the square?", " The square is blue and small."),
    ("<image>\nHow many shapes are there?", " Three."),
    ("Tell me a story about the old computer.", " One day a small model learned to write python code."),
    ("<image>\nDescribe the picture in detail please.", " A red circle on the left, a green star at the top."),
]


@pytest.fixture(scope="module", params=[("qwen2", "clip"), ("llama", "siglip")], ids=lambda p: f"{p[0]}-{p[1]}")
def llava(request):
    lm, vision = request.param
    torch.manual_seed(0)
    model, processor = build_llava(str(tiny_lm_dir(lm)), str(tiny_vision_dir(vision)), attn_implementation="sdpa")
    assert use_packed_attention(model) == PACKED_SDPA
    return model.float().eval(), processor


def vlm_samples(processor) -> list[dict]:
    """Encoded samples: input_ids with the image tokens expanded, labels on the answer, pixels."""
    out = []
    for k, (prompt, answer) in enumerate(TEXTS):
        image = [tiny_image(k)] if "<image>" in prompt else None
        enc = processor(images=image, text=[prompt + answer], return_tensors="pt")
        ids = enc["input_ids"][0].tolist()
        n_prompt = len(processor(images=image, text=[prompt], return_tensors="pt")["input_ids"][0])
        out.append({"input_ids": ids, "labels": [IGNORE_INDEX] * n_prompt + ids[n_prompt:],
                    "pixel_values": enc.get("pixel_values")})
    assert len({len(s["input_ids"]) for s in out}) == len(out)
    return out


def packed_rows(samples) -> list[dict]:
    rows = []
    for group in (samples[:2], samples[2:]):
        row = concat_samples(group)
        row["image_inputs"] = [{"pixel_values": s["pixel_values"]} for s in group if s["pixel_values"] is not None]
        rows.append(row)
    return rows


def solo(model, s, **kwargs):
    return model(input_ids=torch.tensor([s["input_ids"]]), pixel_values=s["pixel_values"], use_cache=False, **kwargs)


def test_only_the_language_model_gets_the_packed_attention(llava):
    model, _ = llava
    assert model.model.language_model.config._attn_implementation == PACKED_SDPA
    assert model.model.vision_tower.config._attn_implementation == "sdpa"
    assert language_model(model) is model.model.language_model
    assert flat_collator_options(model) == {"seq_lens": True, "trained_logits_only": True}


@torch.no_grad()
@pytest.mark.parametrize("seq_lens", [False, True], ids=["position_ids", "cu_seq_lens"])
def test_packed_vlm_rows_equal_solo_runs(llava, seq_lens):
    model, processor = llava
    samples = vlm_samples(processor)
    packed = model(**FlatCollator(seq_lens=seq_lens)(packed_rows(samples)), use_cache=False)
    nll, count, start = 0.0, 0, 0
    for s in samples:
        logits = solo(model, s).logits[0]
        n = len(s["input_ids"])
        assert (packed.logits[0, start : start + n] - logits).abs().max().item() < 1e-5
        labels = torch.tensor(s["labels"])
        nll += torch.nn.functional.cross_entropy(logits[:-1].double(), labels[1:], ignore_index=IGNORE_INDEX, reduction="sum")
        count += int((labels[1:] != IGNORE_INDEX).sum())
        start += n
    assert start == packed.logits.shape[1]
    assert packed.loss.item() == pytest.approx((nll / count).item(), rel=1e-5)
    kept = model(**FlatCollator(seq_lens=seq_lens, trained_logits_only=True)(packed_rows(samples)), use_cache=False)
    assert kept.logits.shape[0] == count
    assert kept.loss.item() == pytest.approx((nll / count).item(), rel=1e-5)


@torch.no_grad()
def test_negative_control_a_vlm_sample_that_sees_the_previous_one_changes(llava):
    model, processor = llava
    batch = FlatCollator(seq_lens=True)(packed_rows(vlm_samples(processor)))
    good = model(**batch, use_cache=False)
    cu = batch["cu_seq_lens_q"].tolist()
    merged = torch.tensor([cu[0], *cu[2:]], dtype=torch.int32)  # samples 0 and 1 as one
    leaky = model(**{**batch, "cu_seq_lens_q": merged, "cu_seq_lens_k": merged}, use_cache=False)
    assert (leaky.logits[0, cu[1] : cu[2]] - good.logits[0, cu[1] : cu[2]]).abs().max().item() > 1e-2
    assert (leaky.logits[0, : cu[1]] - good.logits[0, : cu[1]]).abs().max().item() < 1e-5


@pytest.mark.parametrize("trained_logits_only", [False, True], ids=["all_logits", "trained_logits"])
def test_packed_vlm_gradients_equal_solo_gradients(llava, trained_logits_only):
    model, processor = llava
    samples = vlm_samples(processor)
    model.train()
    try:
        model.zero_grad()
        model(**FlatCollator(trained_logits_only=trained_logits_only)(packed_rows(samples)), use_cache=False).loss.backward()
        packed = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        model.zero_grad()
        counts = [int((torch.tensor(s["labels"][1:]) != IGNORE_INDEX).sum()) for s in samples]
        for s, n in zip(samples, counts):
            out = solo(model, s, labels=torch.tensor([s["labels"]]))
            (out.loss * n / sum(counts)).backward()
        names = {n for n, p in model.named_parameters() if p.grad is not None}
        assert names == set(packed)
        assert any(n.startswith("model.vision_tower.") for n in names)  # images took part
        for name, p in model.named_parameters():
            if p.grad is not None:
                assert torch.allclose(packed[name], p.grad, rtol=1e-4, atol=1e-6), name
    finally:
        model.zero_grad()
        model.eval()


# --- outside packed rows it is plain sdpa ------------------------------------------------------------


@pytest.fixture(scope="module")
def lm_pair():
    from transformers import AutoModelForCausalLM

    path = tiny_lm_dir("qwen2")
    plain = AutoModelForCausalLM.from_pretrained(path, attn_implementation="sdpa", dtype=torch.float32).eval()
    packed = AutoModelForCausalLM.from_pretrained(path, attn_implementation="sdpa", dtype=torch.float32).eval()
    assert use_packed_attention(packed) == PACKED_SDPA
    return plain, packed


@torch.no_grad()
def test_padded_batches_match_sdpa(lm_pair):
    plain, packed = lm_pair
    rows = [{"input_ids": list(range(5, 5 + n)), "labels": list(range(5, 5 + n))} for n in (9, 4, 17)]
    batch = PaddingCollator(pad_token_id=0)(rows)
    a, b = plain(**batch, use_cache=False), packed(**batch, use_cache=False)
    real = batch["attention_mask"].bool()
    assert (a.logits[real] - b.logits[real]).abs().max().item() < 1e-5
    assert a.loss.item() == pytest.approx(b.loss.item(), rel=1e-6)


@torch.no_grad()
def test_generation_matches_sdpa(lm_pair):
    from transformers import AutoTokenizer

    plain, packed = lm_pair
    tiny_tokenizer = AutoTokenizer.from_pretrained(tiny_lm_dir("qwen2"), padding_side="left")
    enc = tiny_tokenizer(["Hello there", "What color is the big red circle?"], return_tensors="pt", padding=True)
    kwargs = dict(max_new_tokens=8, do_sample=False, pad_token_id=tiny_tokenizer.pad_token_id)
    assert torch.equal(plain.generate(**enc, **kwargs), packed.generate(**enc, **kwargs))
    one = tiny_tokenizer(["Tell me a story"], return_tensors="pt")
    assert torch.equal(plain.generate(**one, **kwargs), packed.generate(**one, **kwargs))


def test_eager_and_lora_models():
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    path = tiny_lm_dir("llama")
    eager = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager")
    assert use_packed_attention(eager) == "eager"  # eager stays eager
    assert flat_collator_options(eager) == {"seq_lens": False, "trained_logits_only": True}
    lora = get_peft_model(AutoModelForCausalLM.from_pretrained(path, attn_implementation="sdpa"),
                          LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    assert use_packed_attention(lora) == PACKED_SDPA
    assert lora.get_base_model().config._attn_implementation == PACKED_SDPA
    assert use_packed_attention(lora) == PACKED_SDPA  # twice is fine
    assert flat_collator_options(lora) == {"seq_lens": True, "trained_logits_only": True}
