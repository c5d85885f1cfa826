"""Images: paths stay in the image folder, readable errors, LLaVA padding, MiniCPM-V slicing, token layout."""

from __future__ import annotations

import os

import pytest
from PIL import Image

from mmtune.data.images import (
    CLIP_MEAN_COLOUR, SlicedImage, background_from_mean, count_image_tokens, expand2square,
    expand_image_placeholder, fit_size, image_size, image_token_layout, open_image, prepare_image,
    resolve_image_path, slice_grid, slice_image,
)
from mmtune.errors import DataError

WHERE = "train.json:record 3:images[0]"


@pytest.fixture
def folder(tmp_path):
    """tmp/images with a.png and sub/b.png; tmp/outside.png beside it."""
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    Image.new("RGB", (8, 6), "red").save(images / "a.png")
    Image.new("RGB", (8, 6), "blue").save(images / "sub" / "b.png")
    Image.new("RGB", (8, 6), "green").save(tmp_path / "outside.png")
    return images


# ------------------------------------------------------------------------------------------ paths

def test_relative_and_absolute_paths_inside(folder):
    assert resolve_image_path("a.png", folder, WHERE) == folder / "a.png"
    assert resolve_image_path("sub/b.png", str(folder), WHERE) == folder / "sub" / "b.png"
    assert resolve_image_path("sub/../a.png", folder, WHERE).resolve() == (folder / "a.png").resolve()
    assert resolve_image_path(str(folder / "a.png"), folder, WHERE) == folder / "a.png"
    # a missing file inside the folder resolves; open_image reports it
    assert resolve_image_path("nope.png", folder, WHERE) == folder / "nope.png"


@pytest.mark.parametrize("path", ["../outside.png", "sub/../../outside.png", "OUTSIDE_ABS", "/etc/passwd"])
def test_escaping_paths_refused(folder, path):
    if path == "OUTSIDE_ABS":
        path = str(folder.parent / "outside.png")
    with pytest.raises(DataError) as info:
        resolve_image_path(path, folder, WHERE)
    assert info.value.where == WHERE
    assert "outside the image folder" in info.value.message
    assert str(info.value).startswith(f"{WHERE}: image path {path!r} is a path outside the image folder")


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_symlink_escape_refused(folder):
    (folder / "link.png").symlink_to(folder.parent / "outside.png")
    (folder / "linkdir").symlink_to(folder.parent, target_is_directory=True)
    (folder / "inner.png").symlink_to(folder / "a.png")  # a symlink that stays inside is fine
    for path in ("link.png", "linkdir/outside.png"):
        with pytest.raises(DataError, match="is a symlink that points outside the image folder") as info:
            resolve_image_path(path, folder, WHERE)
        assert info.value.where == WHERE
    assert resolve_image_path("inner.png", folder, WHERE) == folder / "inner.png"


@pytest.mark.parametrize("path, kind", [("data:image/png;base64,iVBORw0KGgo=", "a data: URL"),
                                        ("https://example.com/a.png", "a URL")])
def test_urls_refused(folder, path, kind):
    with pytest.raises(DataError, match=f"image is {kind}; only files under the image folder"):
        resolve_image_path(path, folder, WHERE)


def test_missing_image_folder(tmp_path):
    with pytest.raises(DataError, match="image folder .* not found"):
        resolve_image_path("a.png", tmp_path / "nope", WHERE)


# ----------------------------------------------------------------------------------- open_image

def test_open_image_rgb(folder, tmp_path):
    img = open_image(folder / "a.png", WHERE)
    assert img.mode == "RGB" and img.size == (8, 6) and img.getpixel((0, 0)) == (255, 0, 0)
    rgba = Image.new("RGBA", (4, 4), (0, 0, 255, 0))  # fully transparent: white, not black
    rgba.save(tmp_path / "t.png")
    assert open_image(tmp_path / "t.png", WHERE).getpixel((0, 0)) == (255, 255, 255)
    Image.new("L", (4, 4), 128).save(tmp_path / "g.png")
    assert open_image(tmp_path / "g.png", WHERE).getpixel((1, 1)) == (128, 128, 128)
    assert image_size(folder / "a.png", WHERE) == (8, 6)


def test_missing_image_error(folder):
    with pytest.raises(DataError) as info:
        open_image(folder / "nope.png", WHERE)
    assert info.value.where == WHERE
    assert str(info.value).startswith(f"{WHERE}: image file not found: {folder / 'nope.png'}")
    with pytest.raises(DataError, match="not a file"):
        open_image(folder / "sub", WHERE)


def test_corrupt_and_truncated_images(folder):
    (folder / "text.png").write_text("not an image")
    big = folder / "big.png"
    Image.effect_noise((64, 64), 50).save(big)
    (folder / "cut.png").write_bytes(big.read_bytes()[:200])
    for name in ("text.png", "cut.png"):
        with pytest.raises(DataError) as info:
            open_image(folder / name, WHERE)
        assert info.value.where == WHERE
        assert info.value.message.startswith(f"cannot decode image {folder / name}")
    with pytest.raises(DataError, match="cannot decode image"):
        image_size(folder / "text.png", WHERE)


# --------------------------------------------------------------------------------- LLaVA shaping

def test_expand2square_wide_and_tall():
    wide = expand2square(Image.new("RGB", (40, 20), (255, 0, 0)), (1, 2, 3))
    assert wide.size == (40, 40)
    assert wide.getpixel((20, 0)) == (1, 2, 3) and wide.getpixel((20, 39)) == (1, 2, 3)  # bands above, below
    assert wide.getpixel((0, 10)) == (255, 0, 0) and wide.getpixel((20, 20)) == (255, 0, 0)  # image centred
    assert wide.getpixel((20, 9)) == (1, 2, 3) and wide.getpixel((20, 10)) == (255, 0, 0)
    tall = expand2square(Image.new("RGB", (10, 30), (0, 255, 0)))
    assert tall.size == (30, 30)
    assert tall.getpixel((0, 15)) == CLIP_MEAN_COLOUR and tall.getpixel((15, 15)) == (0, 255, 0)
    square = Image.new("RGB", (7, 7), (9, 9, 9))
    assert expand2square(square).size == (7, 7) and expand2square(square) is not square


def test_background_from_mean_is_clip_colour():
    assert background_from_mean([0.48145466, 0.4578275, 0.40821073]) == CLIP_MEAN_COLOUR == (122, 116, 104)


def test_prepare_image_modes():
    img = Image.new("RGBA", (60, 30), (255, 0, 0, 255))
    padded = prepare_image(img, "pad", size=24)
    assert padded.mode == "RGB" and padded.size == (24, 24)
    assert padded.getpixel((12, 1)) == CLIP_MEAN_COLOUR and padded.getpixel((12, 12)) == (255, 0, 0)
    stretched = prepare_image(img, "resize", size=24)
    assert stretched.size == (24, 24) and stretched.getpixel((12, 1)) == (255, 0, 0)
    assert prepare_image(img, "pad").size == (60, 60)  # no size: the processor resizes
    assert prepare_image(img, "resize", size=(30, 20)).size == (30, 20)
    with pytest.raises(ValueError, match="mode must be"):
        prepare_image(img, "crop")


# ------------------------------------------------------------------------------ MiniCPM-V slicing

@pytest.mark.parametrize("size, grid", [
    ((64, 64), (1, 1)),        # small: not sliced
    ((448, 448), (1, 1)),      # exactly one tile
    ((600, 448), (1, 2)),      # a bit more than one tile, wide
    ((1000, 1000), (2, 2)),
    ((1344, 448), (1, 3)),     # 3:1
    ((448, 1344), (3, 1)),     # 1:3
    ((2000, 500), (1, 4)),     # 4:1
    ((4000, 3000), (3, 3)),    # capped at max_slice_nums=9: 8 or 9 slices, 3×3 fits 4:3 best
    ((5000, 100), (1, 4)),     # extreme aspect: ~2.5 tiles -> 2, 3 or 4 slices; one row of 4 fits best
])
def test_slice_grid(size, grid):
    assert slice_grid(*size) == grid


def test_slice_grid_options():
    assert slice_grid(4000, 3000, max_slice_nums=1) == (1, 1)  # never sliced
    assert slice_grid(4000, 3000, max_slice_nums=4) == (2, 2)
    assert slice_grid(1000, 1000, scale_resolution=224) == (3, 3)  # 19.9 tiles, capped at 9
    rows, cols = slice_grid(1200, 800, max_slice_nums=6)
    assert 2 <= rows * cols <= 6


@pytest.mark.parametrize("size", [(1000, 1000), (1344, 448), (4000, 3000), (777, 1999), (5000, 100)])
def test_slice_image_sizes(size):
    sliced = slice_image(Image.new("RGB", size, (10, 20, 30)))
    rows, cols = sliced.grid
    assert sliced.is_sliced and (rows, cols) == slice_grid(*size)
    assert len(sliced.slices) == rows and all(len(row) == cols for row in sliced.slices)
    assert len(sliced.images) == 1 + rows * cols and sliced.images[0] is sliced.thumbnail
    cell = sliced.slices[0][0].size
    for image in sliced.images:
        assert image.mode == "RGB" and image.size[0] % 14 == 0 and image.size[1] % 14 == 0
    assert all(s.size == cell for row in sliced.slices for s in row)
    tw, th = sliced.thumbnail.size
    assert tw * th <= 1.15 * 448 ** 2  # about scale_resolution² (patch rounding adds a little)
    assert abs(tw / th - size[0] / size[1]) / (size[0] / size[1]) < 0.25 or min(tw, th) == 14


def test_slice_image_examples():
    sliced = slice_image(Image.new("RGB", (4000, 3000)))
    assert sliced.grid == (3, 3) and sliced.thumbnail.size == (518, 392)
    assert sliced.slices[0][0].size == (518, 392)  # a 1333×1000 cell fitted to ~448² pixels
    sliced = slice_image(Image.new("RGB", (1000, 1000)))
    assert sliced.grid == (2, 2) and sliced.thumbnail.size == (448, 448) and sliced.slices[1][1].size == (448, 448)


def test_small_images_are_not_sliced():
    sliced = slice_image(Image.new("RGB", (64, 64)))
    assert isinstance(sliced, SlicedImage) and not sliced.is_sliced
    assert sliced.grid == (1, 1) and sliced.slices == [] and sliced.thumbnail.size == (448, 448)  # upscaled
    wide = slice_image(Image.new("RGB", (300, 100)), patch_size=14)
    assert wide.grid == (1, 1) and wide.thumbnail.size[0] % 14 == 0 and wide.thumbnail.size[0] > wide.thumbnail.size[1]
    assert slice_image(Image.new("RGB", (4000, 3000)), max_slice_nums=1).grid == (1, 1)


def test_slices_keep_the_picture_in_place():
    img = Image.new("RGB", (1344, 448), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 448, 448))  # left third red
    sliced = slice_image(img)
    assert sliced.grid == (1, 3)
    left, middle, right = sliced.slices[0]
    assert left.getpixel((200, 200)) == (255, 0, 0) and right.getpixel((200, 200)) == (0, 0, 255)


def test_fit_size():
    assert fit_size(64, 64) == (70, 70)  # small: kept, rounded to patch multiples
    assert fit_size(64, 64, allow_upscale=True) == (448, 448)
    assert fit_size(2000, 1000) == (630, 322)
    assert fit_size(3, 3) == (14, 14)  # at least one patch


# -------------------------------------------------------------------------------- token layout

def test_layout_unsliced_is_one_run():
    assert image_token_layout((1, 1), 64) == [("image", 64)]
    assert image_token_layout(None, 576) == [("image", 576)]
    assert expand_image_placeholder(None, 3) == "<image><image><image>"
    assert expand_image_placeholder((1, 1), 2, image_token="<unk>") == "<unk><unk>"


def test_layout_sliced():
    assert image_token_layout((2, 1), 4) == [
        ("image", 4),
        "newline", "slice_start", ("image", 4), "slice_end",
        "newline", "slice_start", ("image", 4), "slice_end",
    ]
    text = expand_image_placeholder((2, 3), 2)
    row = "<slice><image><image></slice>" * 3
    assert text == "<image><image>\n" + row + "\n" + row
    custom = expand_image_placeholder((1, 2), 1, image_token="I", slice_start="[", slice_end="]")
    assert custom == "I\n[I][I]"


@pytest.mark.parametrize("grid, n, tokens, with_markers", [
    ((1, 1), 64, 64, 64),                  # MiniCPM-V small image: query_nums tokens
    (None, 576, 576, 576),                 # LLaVA 336px / patch 14: 24² tokens
    ((2, 2), 64, 64 * 5, 64 * 5 + 8 + 2),  # thumbnail + 4 slices; 2 markers per slice, a newline per row
    ((1, 3), 64, 64 * 4, 64 * 4 + 6 + 1),
    ((3, 3), 96, 96 * 10, 96 * 10 + 18 + 3),
])
def test_count_image_tokens(grid, n, tokens, with_markers):
    assert count_image_tokens(grid, n) == tokens
    assert count_image_tokens(grid, n, markers=True) == with_markers
    text = expand_image_placeholder(grid, n, image_token="<image>")
    assert text.count("<image>") == tokens
    assert text.count("<image>") + text.count("<slice>") + text.count("</slice>") + text.count("\n") == with_markers


def test_count_image_tokens_several_images():
    assert count_image_tokens([None, None], 576) == 1152  # two LLaVA images
    assert count_image_tokens([(1, 1), (2, 2), (1, 3)], 64) == 64 + 320 + 256
    assert count_image_tokens([], 64) == 0
    grids = [slice_grid(*size) for size in ((64, 64), (1000, 1000), (1344, 448))]
    assert count_image_tokens(grids, 64) == 64 * (1 + 5 + 4)
    with pytest.raises(ValueError, match="grid must be"):
        count_image_tokens((0, 2), 64)
