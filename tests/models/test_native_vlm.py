"""The vision-language families transformers ships, on their tiny models (mmtune.testing.tiny_vlm):
input ids as the processor's own `apply_chat_template` makes them, exactly the answers trained,
packed rows that train exactly as the same samples one by one (loss and gradients, mrope
included), packing refused where it cannot be exact, processor settings built into the processor.
"""

from __future__ import annotations

import functools

import pytest
import torch
from PIL import Image

from mmtune.constants import IGNORE_INDEX
from mmtune.data.collate import FlatCollator, ImageBatch, PaddingCollator
from mmtune.data.conversation import Conversation, Message
from mmtune.data.dataset import TrainRows
from mmtune.data.encode import ConversationEncoder
from mmtune.data.processor_images import ProcessorImages
from mmtune.data.templates import ProcessorTemplate
from mmtune.errors import DataError, MmtuneError
from mmtune.models.families import FAMILIES, family_for_type, family_of, image_token_id_of
from mmtune.models.packed_attention import flat_collator_options, use_packed_attention
from mmtune.models.processors import load_processor, with_knobs
from mmtune.testing.tiny_vlm import BUILDERS, tiny_vlm_dir

NATIVE = list(BUILDERS)


class FakeEncoded(list):
    """Encoded samples with the column access TrainRows uses."""

    def __getitem__(self, key):
        if isinstance(key, str):
            return [row[key] for row in self]
        return list.__getitem__(self, key)


@functools.lru_cache(maxsize=None)
def loaded(name: str):
    from transformers import AutoConfig, AutoModelForImageTextToText

    path = tiny_vlm_dir(name)
    family = family_for_type(AutoConfig.from_pretrained(path).model_type)
    processor = load_processor(path, video_stub=family.video_stub)
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa")
    return model.eval(), processor, family


def picture(w: int, h: int, seed: int) -> Image.Image:
    g = torch.Generator().manual_seed(seed)
    return Image.fromarray((torch.rand(h, w, 3, generator=g) * 255).to(torch.uint8).numpy())


# (messages, image sizes): single- and multi-image, multi-turn, a system message, text only
CONVERSATIONS = [
    ([Message("user", "<image>\nWhat colour is the shape?"), Message("assistant", "It is red.")], [(100, 70)]),
    ([Message("system", "Answer briefly."), Message("user", "Hello there."), Message("assistant", "Hi."),
      Message("user", "<image>\nAnd what is this?"), Message("assistant", "A blue square on the left.")], [(60, 60)]),
    ([Message("user", "Compare <image> and <image>, please."), Message("assistant", "The first one is larger."),
      Message("user", "Which is brighter?"), Message("assistant", "The second.")], [(120, 40), (56, 90)]),
    ([Message("user", "Tell me a story about an old computer."), Message("assistant", "Once a small model learned.")],
     []),
]


def as_parts(messages, pictures) -> list[dict]:
    """The conversation as a user of the processor writes it: image parts carrying the images."""
    from mmtune.data.templates import content_parts

    it = iter(pictures)
    out = []
    for m in messages:
        parts = [dict(p, image=next(it)) if p["type"] == "image" else p for p in content_parts(m.content)]
        out.append({"role": m.role, "content": parts})
    return out


def encode(name, messages, pictures):
    _, processor, _ = loaded(name)
    template = ProcessorTemplate(processor.tokenizer, processor=processor)
    text, spans = template.render(messages)
    sample, keep, _ = ProcessorImages(processor).encode(text, spans, pictures, "test.json:record 0", resolve=False)
    return sample, keep, template


def label_runs(sample) -> list[list[int]]:
    runs, run = [], []
    for label in sample.labels:
        if label == IGNORE_INDEX:
            if run:
                runs.append(run)
            run = []
        else:
            run.append(label)
    return runs + ([run] if run else [])


@pytest.mark.parametrize("name", NATIVE)
@pytest.mark.parametrize("k", range(len(CONVERSATIONS)))
def test_ids_are_the_processors_own_and_only_the_answers_train(name, k):
    messages, sizes = CONVERSATIONS[k]
    _, processor, _ = loaded(name)
    pictures = [picture(w, h, i) for i, (w, h) in enumerate(sizes)]
    sample, keep, template = encode(name, messages, pictures)
    reference = processor.apply_chat_template(as_parts(messages, pictures), tokenize=True, return_dict=True)
    assert sample.input_ids == list(reference["input_ids"][0])
    [end_of_turn] = template.stop_words()[:1]
    answers = [m.content for m in messages if m.role == "assistant"]
    decoded = [processor.tokenizer.decode(run) for run in label_runs(sample)]
    assert [d.strip() for d in decoded] == [a + end_of_turn for a in answers]
    image_id = image_token_id_of(loaded(name)[0].config)
    n_image = sample.input_ids.count(image_id)
    assert (n_image > 0) == bool(sizes)
    assert all(label != image_id for label in sample.labels)
    if sizes:  # a cut must keep every image token
        assert image_id not in sample.input_ids[keep:] and image_id in sample.input_ids[:keep]


@pytest.fixture()
def image_files(tmp_path):
    paths = []
    for i, (w, h) in enumerate([(100, 70), (60, 60), (120, 40), (56, 90)]):
        picture(w, h, i).save(tmp_path / f"{i}.png")
        paths.append(f"{i}.png")
    return tmp_path, paths


def encoded_samples(name, folder, paths):
    _, processor, _ = loaded(name)
    template = ProcessorTemplate(processor.tokenizer, processor=processor)
    encoder = ConversationEncoder(processor.tokenizer, template, 4096)
    images = ProcessorImages(processor, image_folder=str(folder))
    it = iter(paths)
    convs, image_lists = [], []
    for messages, sizes in CONVERSATIONS:
        convs.append(Conversation(list(messages)))
        image_lists.append([next(it) for _ in sizes])
    results = images.encode_samples(encoder, convs, image_lists, [f"d.json:record {i}" for i in range(len(convs))])
    samples = FakeEncoded({"input_ids": r[0].input_ids, "labels": r[0].labels, "images": r[2], "grids": r[3],
                           "source": f"d.json:record {i}"} for i, r in enumerate(results))
    return samples, images


PACKABLE = [n for n in NATIVE if FAMILIES[n].packing_problem is None or FAMILIES[n].packing_problem(loaded(n)[0]) is None]


def grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name", PACKABLE)
def test_a_packed_row_trains_exactly_as_its_samples_one_by_one(name, image_files):
    model, processor, family = loaded(name)
    model.train()  # no dropout in these configs; train mode as in training
    folder, paths = image_files
    samples, images = encoded_samples(name, folder, paths)
    position_fn = functools.partial(family.positions, model) if family.positions else None
    token_types = (family.token_types, image_token_id_of(model.config)) if family.token_types else None
    batching = ImageBatch(family.combine, token_types)
    packed_rows = TrainRows(samples, pack=True, max_length=100_000, image_loader=images, position_fn=position_fn)
    solo_rows = TrainRows(samples, pack=False, max_length=100_000, image_loader=images)
    assert len(packed_rows) == 1
    use_packed_attention(model)
    try:
        model.zero_grad()
        batch = FlatCollator(**flat_collator_options(model), images=batching)([packed_rows[0]])
        if family.positions is not None:  # mrope: text positions over 3 rope rows, restarting per sample
            assert batch["position_ids"].shape[:2] == (4, 1)
        packed = model(**batch, use_cache=False).loss
        packed.backward()
        packed_grads = grads(model)
        total, weighted, expected = 0, 0.0, {}
        for i in range(len(solo_rows)):
            model.zero_grad()
            row = solo_rows[i]
            n = sum(1 for label in row["labels"][1:] if label != IGNORE_INDEX)
            loss = model(**PaddingCollator(processor.tokenizer.pad_token_id, images=batching)([row]), use_cache=False).loss
            (loss * n).backward()
            for key, g in grads(model).items():
                expected[key] = expected.get(key, 0) + g
            total += n
            weighted += loss.item() * n
    finally:
        model.zero_grad()
        model.eval()
    assert packed.item() == pytest.approx(weighted / total, rel=1e-5)
    assert set(packed_grads) == set(expected)
    vision_grads = [k for k in expected if k.startswith(family.parts.vision)]
    assert vision_grads, "the images must reach the loss"
    for key, g in expected.items():
        torch.testing.assert_close(packed_grads[key], g / total, rtol=1e-4, atol=1e-6, msg=key)


def test_packing_is_refused_where_it_cannot_be_exact():
    from types import SimpleNamespace

    gemma, *_ = loaded("gemma3")
    assert "both ways" in FAMILIES["gemma3"].packing_problem(gemma)
    text = SimpleNamespace(layer_types=["linear_attention", "full_attention", "linear_attention"])
    fake = SimpleNamespace(config=SimpleNamespace(get_text_config=lambda: text))
    assert "2 linear-attention layers" in FAMILIES["minicpmv4_6"].packing_problem(fake)
    assert FAMILIES["minicpmv4_6"].packing_problem(loaded("minicpmv4_6")[0]) is None  # the tiny one: full attention


@pytest.mark.parametrize("name", NATIVE)
def test_the_family_entry_names_real_parts(name):
    model, _, family = loaded(name)
    assert family_of(model.config) is family
    for path in (family.parts.vision, *family.parts.projectors, family.parts.llm):
        assert sum(p.numel() for p in model.get_submodule(path).parameters()) > 0
    vision = model.get_submodule(family.parts.vision)
    blocks = [m for n, m in vision.named_modules() if n.split(".")[-1] == family.parts.vision_blocks]
    assert len(blocks) == 1 and len(blocks[0]) == model.config.vision_config.num_hidden_layers \
        if hasattr(model.config.vision_config, "num_hidden_layers") else len(blocks[0]) == model.config.vision_config.depth
    groups = {family.parts.group_of(n) for n, _ in model.named_parameters()}
    assert groups == {"vision", "projector", "llm"}


def test_unsupported_model_type_lists_the_families():
    from types import SimpleNamespace

    with pytest.raises(MmtuneError, match="not a vision-language family.*supported: .*minicpmv4_6.*qwen2_5_vl"):
        family_of(SimpleNamespace(model_type="blip_2"))


# ---- processor settings --------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "knobs"), [
    ("qwen2_5_vl", {"min_pixels": 28 * 28, "max_pixels": 28 * 28 * 4}),
    ("minicpmv4_6", {"downsample_mode": "4x", "max_slice_nums": 2}),
    ("internvl", {"max_patches": 1}),
    ("smolvlm", {"do_image_splitting": False}),
])
def test_processor_settings_change_the_image_tokens_and_are_built_in(name, knobs, tmp_path):
    from mmtune.models.processors import save_processor

    _, processor, family = loaded(name)
    assert set(knobs) <= set(family.knobs)
    rebuilt, left = with_knobs(processor, knobs)
    assert left == {}
    image = picture(300, 200, 0)
    before = ProcessorImages(processor).prompt_inputs(f"x {processor.image_token} y", [image])["input_ids"]
    after = ProcessorImages(rebuilt).prompt_inputs(f"x {processor.image_token} y", [image])["input_ids"]
    assert before.shape != after.shape
    save_processor(rebuilt, tmp_path)
    again = load_processor(tmp_path, video_stub=family.video_stub)
    assert torch.equal(ProcessorImages(again).prompt_inputs(f"x {processor.image_token} y", [image])["input_ids"], after)


def test_a_knob_the_family_lacks_is_refused():
    from mmtune.models.families import check_knobs

    with pytest.raises(MmtuneError, match="sets max_slice_nums, which qwen2_5_vl processors do not take") as e:
        check_knobs(FAMILIES["qwen2_5_vl"], {"max_slice_nums": 9})
    assert "min_pixels, max_pixels" in e.value.format()


# ---- bad input ----------------------------------------------------------------------------------------


def test_an_image_the_processor_rejects_is_a_data_error_naming_the_record():
    _, processor, _ = loaded("qwen2_5_vl")
    template = ProcessorTemplate(processor.tokenizer, processor=processor)
    text, spans = template.render([Message("user", "<image>\nWhat?"), Message("assistant", "A dot.")])
    with pytest.raises(DataError, match=r"d.json:record 7:images: the processor rejects") as e:
        ProcessorImages(processor).encode(text, spans, [picture(3, 700, 0)], "d.json:record 7", resolve=False)
    assert "\n" not in e.value.format()


def test_more_placeholders_than_images_is_a_data_error():
    _, processor, _ = loaded("minicpmv4_6")
    template = ProcessorTemplate(processor.tokenizer, processor=processor)
    text, spans = template.render([Message("user", "<image> and <image>?"), Message("assistant", "Same.")])
    with pytest.raises(DataError, match=r"d.json:record 2:images: 2 image placeholder\(s\) .* but 1 image"):
        ProcessorImages(processor).encode(text, spans, [picture(60, 60, 0)], "d.json:record 2", resolve=False)


def test_the_same_data_in_another_folder_is_encoded_with_its_own_image_paths(tmp_path, isolated_dataset_cache):
    """The encoded samples keep resolved image paths, so the image folder is part of the cache key: a
    copy of the data elsewhere (same files, same contents) is not served the first copy's paths."""
    import shutil

    from mmtune.config.load import validate_recipe
    from mmtune.data.dataset import encode_datasets
    from mmtune.data.synth.shapes import make_shapes_dataset

    _, processor, _ = loaded("qwen2_5_vl")
    first = tmp_path / "first"
    make_shapes_dataset(first, n=5, seed=0)
    second = tmp_path / "second"
    shutil.copytree(first, second)
    template = ProcessorTemplate(processor.tokenizer, processor=processor)
    for folder in (first, second):
        recipe = validate_recipe({"model": {"path": str(tiny_vlm_dir("qwen2_5_vl"))},
                                  "data": {"datasets": [{"path": str(folder / "finetune.json")}],
                                           "image_folder": str(folder), "template": "auto", "max_length": 512}})
        encoded, stats = encode_datasets(recipe.data, processor.tokenizer, image_spec=ProcessorImages(
            processor, image_folder=str(folder)), template=template)
        paths = [p for row in encoded["images"] for p in row]
        assert paths and all(p.startswith(str(folder.resolve())) for p in paths)
        assert stats.from_cache is False
