"""Images for vision-language samples: find them, open them, shape them, slice them.

    path = resolve_image_path("coco/0001.jpg", "data/images", where="train.json:record 3:images[0]")
    img = open_image(path, where)                          # RGB; DataError if missing or undecodable
    pixels = prepare_image(img, "pad", size=336)           # LLaVA: pad to square with the mean colour
    sliced = slice_image(img)                               # MiniCPM-V style: thumbnail + grid of slices

Paths: a record's image path is relative to the image folder (`--image-folder`, the recipe's image
folder); an absolute path is accepted only when it lies inside that folder. A path that leaves the
folder (`../x.jpg`, an absolute path elsewhere, or a symlink pointing outside) is refused. URLs and
`data:` URLs are not read here.

Token layout
------------
Every `<image>` placeholder in the text stands for one image and expands to image tokens, which
the model overwrites with the image's features (`tokens_per_image` of them per picture: LLaVA's
(image_size / patch_size)² patches, or a resampler's `query_nums`, e.g. 64).

* An image that is not sliced (LLaVA; or small for MiniCPM-V) has grid (1, 1): the placeholder
  becomes `tokens_per_image` image tokens.
* A sliced image with grid (rows, cols) becomes the thumbnail's image tokens, then one line per grid
  row, each slice wrapped in slice markers::

      <image>*n                                  the thumbnail (the whole image, downscaled)
      \\n<slice><image>*n</slice><slice><image>*n</slice>     grid row 1 (cols slices)
      \\n<slice><image>*n</slice><slice><image>*n</slice>     grid row 2
      ...

  i.e. `thumbnail + "\\n" + "\\n".join(rows)`. Image tokens: n * (1 + rows * cols); markers: two per
  slice plus one newline per row.

`image_token_layout` gives this layout as items (for an encoder that maps them to token ids),
`expand_image_placeholder` as text, `count_image_tokens` counts the image tokens.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence, Union

from PIL import Image, UnidentifiedImageError

from mmtune.errors import DataError

# OpenAI CLIP's image_mean as 0-255 RGB: the padding colour of LLaVA's expand2square.
CLIP_MEAN_COLOUR = (122, 116, 104)

Grid = tuple[int, int]  # (rows, cols); (1, 1) means "not sliced"
LayoutItem = Union[str, tuple[str, int]]  # ("image", n) = n image tokens; or "slice_start" | "slice_end" | "newline"


# ---------------------------------------------------------------------------------------------- paths

def resolve_image_path(path: str, image_folder: str | Path, where: str) -> Path:
    """The file a record's image `path` names: under `image_folder`, never outside it.

    `where` is the place reported in errors ("file:record N:images[k]").
    """
    if not isinstance(path, str) or not path:
        raise DataError("image path is empty", where=where)
    if path.startswith("data:") or "://" in path:
        kind = "a data: URL" if path.startswith("data:") else "a URL"
        raise DataError(f"image is {kind}; only files under the image folder are supported", where=where,
                        hint="save the image as a file under the image folder and put its relative path here")
    folder = Path(image_folder)
    if not folder.is_dir():
        raise DataError(f"image folder {str(folder)!r} " + ("is not a folder" if folder.exists() else "not found"),
                        where=where, hint="check --image-folder / the recipe's image folder")
    root = folder.resolve()
    candidate = Path(path)
    full = candidate if candidate.is_absolute() else folder / candidate
    try:
        real = full.resolve()  # follows symlinks and `..`
    except (OSError, ValueError, RuntimeError) as e:  # a NUL byte, a symlink loop
        raise DataError(f"bad image path {path!r}: {_short(e)}", where=where) from None
    if not real.is_relative_to(root):
        how = "a symlink that points" if _has_symlink(full, folder) and _lexically_inside(full, folder) else "a path"
        raise DataError(f"image path {path!r} is {how} outside the image folder {str(folder)!r}", where=where,
                        hint="image paths must stay inside the image folder; pass the folder holding the images "
                             "as --image-folder")
    return full


def _lexically_inside(full: Path, folder: Path) -> bool:
    return Path(os.path.normpath(full.absolute())).is_relative_to(Path(os.path.normpath(folder.absolute())))


def _has_symlink(full: Path, folder: Path) -> bool:
    p = Path(os.path.normpath(full.absolute()))
    stop = Path(os.path.normpath(folder.absolute()))
    while p != stop and p != p.parent:
        if p.is_symlink():
            return True
        p = p.parent
    return False


def open_image(path: str | Path, where: str) -> Image.Image:
    """The image at `path`, fully decoded and converted to RGB; DataError if missing or unreadable."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"image file not found: {path}", where=where,
                        hint="check the path and --image-folder")
    if not path.is_file():
        raise DataError(f"image path is not a file: {path}", where=where)
    try:
        with Image.open(path) as img:
            img.load()
            return _to_rgb(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot decode image {path}: {_short(e)}", where=where,
                        hint="the file is not an image PIL can read, or it is truncated") from None


def image_size(path: str | Path, where: str) -> tuple[int, int]:
    """(width, height) read from the file header, without decoding the pixels (for token budgets)."""
    try:
        with Image.open(path) as img:
            return img.size
    except FileNotFoundError:
        raise DataError(f"image file not found: {path}", where=where) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"cannot decode image {path}: {_short(e)}", where=where) from None


def _short(e: Exception) -> str:
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return text[:200]


def _to_rgb(img: Image.Image) -> Image.Image:
    """RGB; transparent pixels become white (not the black that a plain convert gives)."""
    if img.mode == "RGB":
        return img.copy()
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return img.convert("RGB")


# ------------------------------------------------------------------------------------ LLaVA shaping

def background_from_mean(image_mean: Sequence[float]) -> tuple[int, int, int]:
    """An image processor's `image_mean` (0-1 floats) as the 0-255 padding colour LLaVA uses."""
    r, g, b = (int(x * 255) for x in image_mean)
    return (r, g, b)


def expand2square(img: Image.Image, background: Sequence[int] = CLIP_MEAN_COLOUR) -> Image.Image:
    """Pad `img` to a square (side = its longer side), centred, with `background` (0-255 RGB)."""
    w, h = img.size
    if w == h:
        return img.copy()
    side = max(w, h)
    canvas = Image.new(img.mode, (side, side), tuple(background) if img.mode == "RGB" else background[0])
    canvas.paste(img, ((side - w) // 2, (side - h) // 2))
    return canvas


def prepare_image(img: Image.Image, mode: str = "pad", size: int | tuple[int, int] | None = None,
                  background: Sequence[int] = CLIP_MEAN_COLOUR) -> Image.Image:
    """An RGB image ready for the image processor.

    mode "pad": pad to a square with `background` (LLaVA-1.5's `image_aspect_ratio: pad`), keeping the
    whole picture; "resize": stretch to the size directly. `size` (int for a square, or (width, height))
    resizes the result; None leaves resizing to the image processor.
    """
    if mode not in ("pad", "resize"):
        raise ValueError(f"mode must be 'pad' or 'resize', got {mode!r}")
    img = _to_rgb(img)
    if mode == "pad":
        img = expand2square(img, background)
    if size is not None:
        target = (size, size) if isinstance(size, int) else tuple(size)
        if img.size != target:
            img = img.resize(target, Image.Resampling.BICUBIC)
    return img


# ----------------------------------------------------------------------------- MiniCPM-V slicing

@dataclass
class SlicedImage:
    """A picture as the model sees it: a thumbnail and, for large images, a grid of slices."""

    thumbnail: Image.Image
    slices: list[list[Image.Image]] = field(default_factory=list)  # grid rows, each a list of cols slices
    grid: Grid = (1, 1)  # (rows, cols); (1, 1) and no slices when the image is not sliced

    @property
    def is_sliced(self) -> bool:
        return bool(self.slices)

    @property
    def images(self) -> list[Image.Image]:
        """Thumbnail first, then the slices row by row: the order of `image_token_layout`."""
        return [self.thumbnail] + [s for row in self.slices for s in row]


def _round_to_patch(x: float, patch_size: int) -> int:
    return max(patch_size, round(x / patch_size) * patch_size)


def fit_size(width: float, height: float, scale_resolution: int = 448, patch_size: int = 14,
             allow_upscale: bool = False) -> tuple[int, int]:
    """A size with the image's aspect ratio and an area of about scale_resolution², sides multiples of
    patch_size. Smaller images keep their size (rounded) unless `allow_upscale`."""
    if width * height > scale_resolution ** 2 or allow_upscale:
        aspect = width / height
        height = scale_resolution / math.sqrt(aspect)
        width = height * aspect
    return _round_to_patch(width, patch_size), _round_to_patch(height, patch_size)


def slice_grid(width: int, height: int, max_slice_nums: int = 9, scale_resolution: int = 448) -> Grid:
    """The (rows, cols) grid an image of this size is cut into; (1, 1) when it is not sliced.

    The image covers about ceil(w*h / scale_resolution²) tiles of the model's resolution (at most
    max_slice_nums). Among grids with one tile fewer, as many, or one more (never a single slice,
    never more than max_slice_nums), the one whose cols/rows best matches the image's width/height
    (in log scale) wins; on a tie the grid with fewer slices, then fewer rows.
    """
    wanted = min(math.ceil(width * height / scale_resolution ** 2), max_slice_nums)
    if wanted <= 1:
        return (1, 1)
    target = math.log(width / height)
    best: Grid | None = None
    best_error = math.inf
    for n in (wanted - 1, wanted, wanted + 1):
        if n < 2 or n > max_slice_nums:
            continue
        for rows in range(1, n + 1):
            if n % rows:
                continue
            cols = n // rows
            error = abs(target - math.log(cols / rows))
            if error < best_error - 1e-12:
                best, best_error = (rows, cols), error
    assert best is not None  # `wanted` itself is always a candidate
    return best


def slice_image(img: Image.Image, max_slice_nums: int = 9, scale_resolution: int = 448,
                patch_size: int = 14) -> SlicedImage:
    """Cut a large image into a grid of slices near the model's resolution, plus a thumbnail.

    Small images (area ≤ scale_resolution², or max_slice_nums < 2) are not sliced: the thumbnail is
    the image resized (up or down) to about scale_resolution² pixels. Otherwise the thumbnail is the
    image downscaled to that area, and the image is resized so each of the rows × cols cells is about
    scale_resolution² pixels and cut into them. All sides are multiples of patch_size.
    """
    img = _to_rgb(img)
    w, h = img.size
    rows, cols = slice_grid(w, h, max_slice_nums, scale_resolution)
    if (rows, cols) == (1, 1):
        size = fit_size(w, h, scale_resolution, patch_size, allow_upscale=True)
        return SlicedImage(img.resize(size, Image.Resampling.BICUBIC))
    thumbnail = img.resize(fit_size(w, h, scale_resolution, patch_size), Image.Resampling.BICUBIC)
    cell_w, cell_h = fit_size(w / cols, h / rows, scale_resolution, patch_size, allow_upscale=True)
    refined = img.resize((cell_w * cols, cell_h * rows), Image.Resampling.BICUBIC)
    slices = [[refined.crop((c * cell_w, r * cell_h, (c + 1) * cell_w, (r + 1) * cell_h)) for c in range(cols)]
              for r in range(rows)]
    return SlicedImage(thumbnail, slices, (rows, cols))


# ------------------------------------------------------------------------------------ token layout

def _grid(grid: Grid | None) -> Grid:
    if grid is None:
        return (1, 1)
    rows, cols = grid
    if rows < 1 or cols < 1:
        raise ValueError(f"grid must be (rows, cols) with both ≥ 1, got {grid!r}")
    return rows, cols


def image_token_layout(grid: Grid | None, tokens_per_image: int) -> list[LayoutItem]:
    """What one `<image>` placeholder becomes, as items: ("image", n) for a run of n image tokens,
    or a marker "slice_start" | "slice_end" | "newline". See the module docstring."""
    rows, cols = _grid(grid)
    layout: list[LayoutItem] = [("image", tokens_per_image)]
    if (rows, cols) == (1, 1):
        return layout
    for _ in range(rows):
        layout.append("newline")
        for _ in range(cols):
            layout += ["slice_start", ("image", tokens_per_image), "slice_end"]
    return layout


def expand_image_placeholder(grid: Grid | None, tokens_per_image: int, image_token: str = "<image>",
                             slice_start: str = "<slice>", slice_end: str = "</slice>") -> str:
    """The text one `<image>` placeholder expands to (the layout of the module docstring)."""
    text = {"slice_start": slice_start, "slice_end": slice_end, "newline": "\n"}
    return "".join(image_token * item[1] if isinstance(item, tuple) else text[item]
                   for item in image_token_layout(grid, tokens_per_image))


def count_image_tokens(grid: Grid | None | Sequence[Grid | None], tokens_per_image: int, *,
                       markers: bool = False) -> int:
    """Image tokens of one image (`grid` a (rows, cols) tuple, or None) or of several (a list of
    grids, one per image of a sample). With `markers`, slice markers and row newlines count one token
    each (true when they are single special tokens)."""
    if isinstance(grid, list):
        return sum(count_image_tokens(g, tokens_per_image, markers=markers) for g in grid)
    rows, cols = _grid(grid)  # type: ignore[arg-type]
    if (rows, cols) == (1, 1):
        return tokens_per_image
    n = tokens_per_image * (1 + rows * cols)
    return n + (2 * rows * cols + rows if markers else 0)
