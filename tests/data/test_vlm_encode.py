"""Image placeholders -> image tokens (single, multi, sliced images), length policy that never cuts
images, and the bad-image policies of training rows (resample / skip / stop past a threshold)."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from transformers import AutoImageProcessor

from mmtune.config.schema import SliceConfig
from mmtune.data.conversation import Conversation, Message
from mmtune.data.collate import cat_images
from mmtune.data.dataset import TrainRows
from mmtune.data.encode import ConversationEncoder, EncodedSample, fit_length
from mmtune.data.images import count_image_tokens, slice_grid
from mmtune.data.templates import get_template
from mmtune.data.vlm import SLICE_END, SLICE_START, ImageLoader, ImageSpec, LlavaImages, expand_images
from mmtune.errors import DataError
from mmtune.testing.tiny_vision import tiny_vision_dir

N = 16  # tokens per image of the tiny CLIP (64 px / 16 px patches)


@pytest.fixture()
def tok(tiny_tokenizer):
    import copy

    t = copy.deepcopy(tiny_tokenizer)
    t.add_tokens([SLICE_START, SLICE_END], special_tokens=True)
    return t


@pytest.fixture()
def folder(tmp_path):
    for name, size in (("a.png", (64, 64)), ("b.png", (64, 64)), ("big.png", (900, 450))):
        Image.new("RGB", size, (200, 10, 10)).save(tmp_path / name)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    return tmp_path


def spec_for(tok, folder, slicing=False):
    image_id = tok.convert_tokens_to_ids("<image>")
    extra = dict(slice_start_id=tok.convert_tokens_to_ids(SLICE_START), slice_end_id=tok.convert_tokens_to_ids(SLICE_END),
                 max_slice_nums=9, scale_resolution=448) if slicing else {}
    return ImageSpec(image_id, N, str(folder), tuple(tok("\n", add_special_tokens=False).input_ids), **extra)


def encode(tok, text, answer="It is red."):
    enc = ConversationEncoder(tok, get_template("chatml"), 4096)
    return enc.encode_full(Conversation([Message("user", text), Message("assistant", answer)]))


def test_single_and_multi_image_expansion(tok, folder):
    spec = spec_for(tok, folder)
    sample = encode(tok, "<image>\nWhat colour?")
    out, paths, grids = expand_images(sample, ["a.png"], spec, "d.json:record 0")
    assert out.input_ids.count(spec.image_token_id) == N
    assert len(out.input_ids) == len(sample.input_ids) - 1 + N
    assert all(out.labels[i] == -100 for i, t in enumerate(out.input_ids) if t == spec.image_token_id)
    assert out.n_trained == sample.n_trained and paths == [str((folder / "a.png").resolve())] and grids == [[1, 1]]
    two, _, _ = expand_images(encode(tok, "<image> and <image>: same?"), ["a.png", "b.png"], spec, "x")
    assert two.input_ids.count(spec.image_token_id) == 2 * N


def test_sliced_image_token_layout(tok, folder):
    spec = spec_for(tok, folder, slicing=True)
    out, _, grids = expand_images(encode(tok, "<image>\nDescribe."), ["big.png"], spec, "x")
    grid = tuple(grids[0])
    assert grid == slice_grid(900, 450, 9, 448) and grid != (1, 1)
    assert out.input_ids.count(spec.image_token_id) == count_image_tokens(grid, N)
    assert out.input_ids.count(spec.slice_start_id) == grid[0] * grid[1] == out.input_ids.count(spec.slice_end_id)


def test_placeholder_count_mismatch_and_escape_are_data_errors(tok, folder):
    spec = spec_for(tok, folder)
    with pytest.raises(DataError, match="d.json:record 3:images: 1 <image> placeholder.*2 image"):
        expand_images(encode(tok, "<image> hi"), ["a.png", "b.png"], spec, "d.json:record 3")
    with pytest.raises(DataError, match="outside"):
        expand_images(encode(tok, "<image> hi"), ["../etc/passwd"], spec, "d.json:record 3")


def test_length_policy_never_cuts_through_images(tok, folder):
    spec = spec_for(tok, folder)
    out, _, _ = expand_images(encode(tok, "<image>\nWhat?", answer="red " * 40), ["a.png"], spec, "x")
    first_image = out.input_ids.index(spec.image_token_id)
    cut, status = fit_length(out, first_image + 5, "truncate", spec.image_token_id)
    assert cut is None and status == "dropped"
    cut, status = fit_length(out, len(out.input_ids) - 10, "truncate", spec.image_token_id)
    assert status == "truncated" and cut.input_ids.count(spec.image_token_id) == N
    assert fit_length(out, len(out.input_ids) - 10, "drop", spec.image_token_id) == (None, "dropped")


class FakeEncoded(list):
    """A list of encoded sample dicts with the column access TrainRows uses."""

    def __getitem__(self, key):
        if isinstance(key, str):
            return [row[key] for row in self]
        return list.__getitem__(self, key)


def rows_for(folder, images_per_sample, **kwargs):
    loader = LlavaImages(None, ImageLoader(AutoImageProcessor.from_pretrained(tiny_vision_dir("clip"))))
    samples = FakeEncoded(
        {"input_ids": [1] * (4 + N), "labels": [-100] * 4 + [5] * N,
         "images": [str(folder / name)] if name else [], "grids": [[1, 1]] if name else [], "source": f"d.json:record {i}"}
        for i, name in enumerate(images_per_sample)
    )
    return TrainRows(samples, image_loader=loader, **kwargs)


def pixels(row):
    return cat_images(row["image_inputs"])["pixel_values"]


def test_rows_carry_pixel_values(folder):
    rows = rows_for(folder, ["a.png", None, "b.png"], pack=True, max_length=1000)
    [row] = [rows[i] for i in range(len(rows))]
    assert pixels(row).shape == (2, 3, 64, 64)


def test_bad_image_resample_and_skip_are_counted(folder, caplog):
    resample = rows_for(folder, ["broken.png", "a.png"], pack=False, max_length=1000, bad_images="resample", seed=1)
    row = resample[0]
    assert resample.bad == 1 and pixels(row).shape[0] == 1  # replaced by the good sample
    assert "d.json:record 0:images[0]" in caplog.text and "cannot decode image" in caplog.text
    skip = rows_for(folder, ["broken.png", "a.png", None], pack=True, max_length=1000, bad_images="skip")
    row = skip[0]
    assert skip.bad == 1 and pixels(row).shape[0] == 1
    assert len(row["input_ids"]) == 2 * (4 + N)  # the bad sample left its row


def test_too_many_bad_images_stop_training(folder):
    rows = rows_for(folder, ["missing.png"] * 30 + ["a.png"] * 10, pack=False, max_length=1000,
                    bad_images="skip", max_bad_fraction=0.2)
    with pytest.raises(DataError, match="more than data.max_bad_fraction 20%"):
        for i in range(len(rows)):
            rows[i]
