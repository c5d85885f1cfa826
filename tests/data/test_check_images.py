"""`check_file` with images: each image fault reported at file:record N:field, good records untouched."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest
from PIL import Image

from mmtune.cli.data import register
from mmtune.data.check import assistant_image_fields, check_file, format_report
from mmtune.errors import DataError


@pytest.fixture
def folder(tmp_path) -> Path:
    """tmp/images: good.png, sub/good2.png, broken.png (text), cut.png (truncated); tmp/outside.png."""
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    Image.new("RGB", (16, 16), "red").save(images / "good.png")
    Image.new("RGB", (16, 8), "blue").save(images / "sub" / "good2.png")
    (images / "broken.png").write_text("this is not a png")
    Image.effect_noise((64, 64), 40).save(images / "full.png")
    (images / "cut.png").write_bytes((images / "full.png").read_bytes()[:150])
    Image.new("RGB", (4, 4)).save(tmp_path / "outside.png")
    return images


def llava(image, question="<image>\nWhat is this?", answer="A red square."):
    record = {"conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]}
    if image is not None:
        record["image"] = image
    return record


def test_good_images(write_records, folder):
    path = write_records([llava("good.png"), llava(["good.png", "sub/good2.png"], "<image>\n<image>\nSame?", "No."),
                          llava(None, "Hi", "Hello.")])
    report = check_file(path, image_folder=folder)
    assert report.ok and (report.n_total, report.n_good) == (3, 3)
    assert report.n_images == 3 and report.images_checked


@pytest.mark.parametrize("image, field, reason", [
    ("missing.png", "images[0]", "image file not found: {folder}/missing.png (check the path and --image-folder)"),
    ("broken.png", "images[0]", "cannot decode image {folder}/broken.png"),
    ("cut.png", "images[0]", "cannot decode image {folder}/cut.png"),
    ("../outside.png", "images[0]", "image path '../outside.png' is a path outside the image folder"),
    (["good.png", "sub"], "images[1]", "image path is not a file: {folder}/sub"),
])
def test_image_faults(write_records, folder, image, field, reason):
    n = len(image) if isinstance(image, list) else 1
    path = write_records([llava("good.png"), llava(image, "<image>\n" * n + "What?")])
    report = check_file(path, image_folder=folder)
    assert (report.n_good, report.n_bad) == (1, 1)
    [(where, text)] = report.errors
    assert where == f"{path}:record 1:{field}"
    assert text.startswith(reason.format(folder=folder))


def test_absolute_path_outside_refused(write_records, folder):
    outside = str(folder.parent / "outside.png")
    inside = str(folder / "good.png")
    path = write_records([llava(inside), llava(outside)])
    report = check_file(path, image_folder=folder)
    assert report.errors == [(f"{path}:record 1:images[0]",
                              f"image path {outside!r} is a path outside the image folder {str(folder)!r} "
                              "(image paths must stay inside the image folder; pass the folder holding the images "
                              "as --image-folder)")]


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_symlink_escape(write_records, folder):
    (folder / "link.png").symlink_to(folder.parent / "outside.png")
    path = write_records([llava("link.png")])
    report = check_file(path, image_folder=folder)
    assert report.errors[0][0] == f"{path}:record 0:images[0]"
    assert "is a symlink that points outside the image folder" in report.errors[0][1]


def test_every_bad_image_of_a_record_reported(write_records, folder):
    path = write_records([llava(["missing.png", "good.png", "broken.png"], "<image>\n<image>\n<image>\nCompare.")])
    report = check_file(path, image_folder=folder)
    assert [where for where, _ in report.errors] == [f"{path}:record 0:images[0]", f"{path}:record 0:images[2]"]
    assert report.n_bad == 1


def test_minicpm_and_openai_images(write_records, folder):
    minicpm = {"image": {"<image_00>": "good.png", "<image_01>": "nope.png"},
               "conversations": [{"role": "user", "content": "<image_01> vs <image_00>?"},
                                 {"role": "assistant", "content": "Same."}]}
    path = write_records([minicpm])
    report = check_file(path, image_folder=folder)
    # images are numbered in the order their placeholders appear: <image_01> first
    assert report.errors[0][0] == f"{path}:record 0:images[0]" and "nope.png" in report.errors[0][1]
    openai = {"messages": [{"role": "user", "content": [{"type": "image", "image": "../outside.png"},
                                                         {"type": "text", "text": "What?"}]},
                           {"role": "assistant", "content": "A dot."}]}
    path = write_records([openai], "o.jsonl")
    report = check_file(path, image_folder=folder)
    assert report.errors[0][0] == f"{path}:record 0:images[0]" and "outside the image folder" in report.errors[0][1]


def test_placeholder_count_mismatch(write_records, folder):
    path = write_records([
        llava(["good.png", "good.png"], "<image>\nOne placeholder, two images."),
        llava(None, "<image>\nA placeholder without an image."),
        llava("good.png", "<image>\n<image>\nTwo placeholders, one image."),
    ])
    report = check_file(path, image_folder=folder)
    assert report.n_bad == 3
    assert [where for where, _ in report.errors] == [f"{path}:record {i}:conversations" for i in range(3)]
    assert report.errors[0][1].startswith("text has 1 <image> placeholder(s) but the record has 2 image(s)")
    assert report.errors[1][1].startswith("text has 1 <image> placeholder(s) but the record has 0 image(s)")
    assert report.errors[2][1].startswith("text has 2 <image> placeholder(s) but the record has 1 image(s)")


def test_image_placeholder_in_answer(write_records, folder):
    path = write_records([
        llava("good.png", "What is this?", "It is <image>."),  # counts match: the reader alone would accept it
        llava(None, "Draw a cat.", "<image>"),                  # text-only: also a count mismatch
        llava("good.png"),
    ])
    report = check_file(path, image_folder=folder)
    assert (report.n_good, report.n_bad) == (1, 2)
    assert (f"{path}:record 0:conversations[1].value",
            "assistant answer contains an image placeholder '<image>'; images belong in user messages "
            "(remove it from the answer, or write it without angle brackets)") in report.errors
    assert [where for where, _ in report.errors] == [
        f"{path}:record 0:conversations[1].value",
        f"{path}:record 1:conversations", f"{path}:record 1:conversations[1].value",
    ]
    # without an image folder the answer is still checked
    assert check_file(path).n_bad == 2


def test_image_in_answer_every_format():
    assert assistant_image_fields({"conversations": [{"role": "user", "content": "<image_00>"},
                                                     {"role": "assistant", "content": "see <image_01>"}]}) == [
        ("conversations[1].content", "an image placeholder '<image_01>'")]
    assert assistant_image_fields({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": [
        {"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "a.png"}}]}]}) == [
        ("messages[1].content[1]", "an image part")]
    assert assistant_image_fields({"instruction": "q", "output": "<image>", "history": [["a", "b"], ["c", "<image>"]]}) \
        == [("output", "an image placeholder '<image>'"), ("history[1][1]", "an image placeholder '<image>'")]
    assert assistant_image_fields({"conversations": [{"from": "human", "value": "<image>"},
                                                     {"from": "gpt", "value": "an image"}]}) == []
    assert assistant_image_fields(["not", "a", "record"]) == []


def test_length_fn_sees_resolved_images_of_good_records(write_records, folder):
    path = write_records([llava("good.png"), llava("missing.png"), llava(None, "Hi", "Hello.")])
    seen = {}

    def length(conv):
        seen[conv.source] = list(conv.images)
        return 10 + 64 * len(conv.images)  # text + 64 image tokens per image

    report = check_file(path, length_fn=length, max_length=50, image_folder=folder)
    assert seen == {f"{path}:record 0": [str(folder / "good.png")], f"{path}:record 2": []}
    assert [where for where, _ in report.errors] == [f"{path}:record 0", f"{path}:record 1:images[0]"]
    assert report.errors[0][1] == "sample is 74 tokens, longer than max_length 50"
    assert report.n_good == 1


def test_image_folder_must_exist(write_records, tmp_path):
    path = write_records([llava("good.png")])
    with pytest.raises(DataError, match="image folder .*nope' not found"):
        check_file(path, image_folder=tmp_path / "nope")


def test_cli_image_folder(write_records, folder, capsys):
    path = write_records([llava("good.png"), llava("broken.png")])
    parser = argparse.ArgumentParser(prog="mmtune")
    register(parser.add_subparsers(dest="command"))

    args = parser.parse_args(["data", "check", str(path), "--image-folder", str(folder)])
    assert args.func(args) == 1
    out = capsys.readouterr().out
    assert f"{path} (llava): 2 records, 1 good, 1 bad" in out
    assert f"  {path}:record 1:images[0]: cannot decode image" in out and "note:" not in out

    args = parser.parse_args(["data", "check", str(path)])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "2 images were not opened; pass --image-folder DIR to check them" in out
    assert format_report(check_file(path)).splitlines()[0] == f"{path} (llava): 2 records, 2 good, 0 bad"
