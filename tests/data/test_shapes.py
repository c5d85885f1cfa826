"""Shapes dataset: deterministic, all splits written, held-out images unseen, formats read back, MMBench TSVs."""

from __future__ import annotations

import argparse
import base64
import csv
import io
import json
import re
from pathlib import Path

import pytest
from PIL import Image

from mmtune.cli.data import register
from mmtune.data.check import check_file
from mmtune.data.formats import read_file
from mmtune.data.synth.shapes import COLOURS, MMBENCH_COLUMNS, QUESTIONS, SHAPES, make_shapes_dataset
from mmtune.errors import MmtuneError

JSON_FILES = {"pretrain": "llava", "finetune": "llava", "finetune_minicpm": "minicpm", "heldout": "llava"}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shapes")
    make_shapes_dataset(out, n=30, seed=0)
    return out


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def read_tsv(path: Path) -> list[dict]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def record_images(record: dict) -> list[str]:
    image = record.get("image")
    if image is None:
        return []
    return list(image.values()) if isinstance(image, dict) else [image]


def test_files_and_splits(shapes):
    names = {p.name for p in shapes.iterdir()}
    assert names == {"images", "pretrain.json", "finetune.json", "finetune_minicpm.json", "heldout.json",
                     "mmbench_dev.tsv", "mmbench_test.tsv"}
    images = sorted(p.name for p in (shapes / "images").iterdir())
    assert len(images) == 30
    assert sum(name.startswith("train_") for name in images) == 24  # a fifth held out
    assert sum(name.startswith("heldout_") for name in images) == 6
    with Image.open(shapes / "images" / images[0]) as img:
        assert img.size == (64, 64) and img.format == "PNG"


def test_deterministic(shapes, tmp_path):
    make_shapes_dataset(tmp_path / "again", n=30, seed=0)
    assert tree(tmp_path / "again") == tree(shapes)
    make_shapes_dataset(tmp_path / "other", n=30, seed=1)
    other = tree(tmp_path / "other")
    assert other.keys() == tree(shapes).keys() and other != tree(shapes)


def test_heldout_images_never_in_training(shapes):
    train = set()
    for name in ("pretrain", "finetune", "finetune_minicpm"):
        for record in json.loads((shapes / f"{name}.json").read_text()):
            train.update(record_images(record))
    heldout = {image for r in json.loads((shapes / "heldout.json").read_text()) for image in record_images(r)}
    assert len(heldout) == 6 and all(p.startswith("images/heldout_") for p in heldout)
    assert train and all(p.startswith("images/train_") for p in train)
    assert not train & heldout
    train_bytes = {(shapes / p).read_bytes() for p in train}
    mmbench = {row["image"] for name in ("mmbench_dev", "mmbench_test") for row in read_tsv(shapes / f"{name}.tsv")}
    heldout_b64 = {base64.b64encode((shapes / p).read_bytes()).decode() for p in heldout}
    assert mmbench == heldout_b64  # MMBench rows use held-out images only, all of them
    assert not {base64.b64decode(b) for b in mmbench} & train_bytes


@pytest.mark.parametrize("name, format", JSON_FILES.items())
def test_formats_read_back(shapes, name, format):
    convs, errors = read_file(shapes / f"{name}.json", errors="collect")
    assert errors == [] and convs
    assert all(c.messages[-1].role == "assistant" for c in convs)
    report = check_file(shapes / f"{name}.json", image_folder=shapes)
    assert report.ok and report.format == format and report.n_good == len(convs), report.errors


def test_record_kinds(shapes):
    pretrain, _ = read_file(shapes / "pretrain.json")
    assert len(pretrain) == 24
    assert all(c.messages[0].content.startswith("<image>\n") or c.messages[0].content.endswith("\n<image>")
               for c in pretrain)
    finetune, _ = read_file(shapes / "finetune.json")
    assert any(not c.images for c in finetune)  # text-only records mixed in
    assert any(len(c.messages) >= 4 for c in finetune) and any(len(c.messages) == 2 and c.images for c in finetune)
    questions = {c.messages[0].content.replace("<image>", "").strip() for c in finetune if c.images}
    assert len(questions) >= 10  # several phrasings
    minicpm, _ = read_file(shapes / "finetune_minicpm.json")
    pairs = [c for c in minicpm if len(c.images) == 2]
    assert pairs and all(c.messages[0].content.startswith("<image>\n<image>\n") for c in pairs)
    assert {c.messages[1].content for c in pairs} <= {"Yes.", "No.", "The first image.", "The second image.",
                                                      "They have the same number."}
    raw = json.loads((shapes / "finetune_minicpm.json").read_text())
    assert any(set(r["image"]) == {"<image_00>", "<image_01>"} for r in raw if isinstance(r["image"], dict))


def test_answers_short_and_consistent(shapes):
    captions = {r["image"]: r["conversations"][1]["value"] for r in json.loads((shapes / "pretrain.json").read_text())}
    caption_form = re.compile(rf"^(A ({'|'.join(COLOURS)}) ({'|'.join(SHAPES)}) (on the left|on the right|at the top"
                              rf"|at the bottom|in the center)|(Two|Three) ({'|'.join(COLOURS)}) "
                              rf"({'|'.join(SHAPES)})s)\.$")
    assert all(caption_form.match(c) for c in captions.values()), captions
    for record in json.loads((shapes / "finetune.json").read_text()):
        turns = record["conversations"]
        for question, reply in zip(turns[::2], turns[1::2]):
            assert len(reply["value"].split()) <= 12
            if "image" not in record:
                continue
            q = question["value"].replace("<image>", "").strip()
            caption = captions[record["image"]].lower()
            if q in QUESTIONS["colour"]:
                assert reply["value"].lower().rstrip(".") in caption
            elif q in QUESTIONS["shape"]:
                assert reply["value"].lower().rstrip(".").removeprefix("a ") in caption
            elif q in QUESTIONS["caption"]:
                assert reply["value"].lower() == caption
    for record in json.loads((shapes / "heldout.json").read_text()):
        assert record["category"] in ("shape", "colour", "count", "position", "existence")
        assert len(record["conversations"]) == 2 and len(record["conversations"][1]["value"].split()) <= 4


def test_mmbench_tsv(shapes):
    dev = read_tsv(shapes / "mmbench_dev.tsv")
    test = read_tsv(shapes / "mmbench_test.tsv")
    with (shapes / "mmbench_dev.tsv").open() as f:
        assert f.readline().rstrip("\n").split("\t") == MMBENCH_COLUMNS
    with (shapes / "mmbench_test.tsv").open() as f:
        assert f.readline().rstrip("\n").split("\t") == [c for c in MMBENCH_COLUMNS if c != "answer"]
    assert dev and test and all("answer" not in row for row in test)
    assert {row["category"] for row in dev + test} >= {"shape", "colour", "count", "existence"}
    for row in dev + test:
        options = [row[letter] for letter in "ABCD" if row[letter]]
        assert 2 <= len(options) <= 4 and [row[letter] for letter in "ABCD"][:len(options)] == options
        assert row["question"] and row["l2-category"] and row["hint"] == ""
        img = Image.open(io.BytesIO(base64.b64decode(row["image"], validate=True)))
        assert img.format == "PNG" and img.size == (64, 64)
    assert all(row["answer"] in "ABCD" and row[row["answer"]] for row in dev)
    assert [int(row["index"]) for row in dev] == list(range(len(dev)))
    assert {len([row[x] for x in "ABCD" if row[x]]) for row in dev + test} == {2, 3, 4}


def test_size_and_limits(tmp_path):
    result = make_shapes_dataset(tmp_path / "s", n=4, seed=3, size=32)
    assert (result.n_train_images, result.n_heldout_images) == (2, 2)
    with Image.open(tmp_path / "s" / "images" / "train_00000.png") as img:
        assert img.size == (32, 32)
    with pytest.raises(MmtuneError, match="--n must be at least 4"):
        make_shapes_dataset(tmp_path / "t", n=3)
    with pytest.raises(MmtuneError, match="--size must be at least 16"):
        make_shapes_dataset(tmp_path / "t", n=10, size=8)


def test_cli_shapes(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="mmtune")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["data", "shapes", "-o", str(tmp_path / "d"), "--n", "10", "--seed", "2", "--size", "48"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert f"drew 8 training and 2 held-out images (48x48) in {tmp_path / 'd' / 'images'}" in out
    assert f"to {tmp_path / 'd' / 'finetune_minicpm.json'}" in out and "rows to" in out
    assert (tmp_path / "d" / "mmbench_test.tsv").is_file()


def test_questions_limit_finetune_heldout_and_mmbench_to_the_chosen_kinds(tmp_path):
    result = make_shapes_dataset(tmp_path / "s", n=40, seed=0, questions=["colour", "count"])
    finetune = json.loads((tmp_path / "s" / "finetune.json").read_text())
    assert len(finetune) == 2 * result.n_train_images  # two single-turn questions per image, nothing else
    colour_answers = {f"{c.capitalize()}." for c in COLOURS}
    for record in finetune:
        assert "image" in record and len(record["conversations"]) == 2
        assert record["conversations"][1]["value"] in colour_answers | {"One.", "Two.", "Three."}
    heldout = json.loads((tmp_path / "s" / "heldout.json").read_text())
    assert {r["category"] for r in heldout} == {"colour", "count"}
    assert {r["category"] for r in read_tsv(tmp_path / "s" / "mmbench_dev.tsv")} == {"colour", "count"}
    # the default mix is untouched by the option's existence: captions and several kinds
    assert json.loads((tmp_path / "s" / "pretrain.json").read_text())
    with pytest.raises(MmtuneError, match="unknown question kind.*size"):
        make_shapes_dataset(tmp_path / "t", n=10, questions=["colour", "size"])


def test_cli_shapes_questions(tmp_path):
    parser = argparse.ArgumentParser(prog="mmtune")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["data", "shapes", "-o", str(tmp_path / "d"), "--n", "10", "--questions", "colour"])
    assert args.func(args) == 0
    heldout = json.loads((tmp_path / "d" / "heldout.json").read_text())
    assert {r["category"] for r in heldout} == {"colour"}
