"""Images of the LLaVA models mmtune assembles: expand `<image>` placeholders to image tokens, load pixels.

`LlavaImages` is what the rest of mmtune calls (encoding, every step, prompts), the same interface as
a native family's processor (mmtune.data.processor_images.ProcessorImages).

Encoding (once, cached): the text is encoded as usual, with each `<image>` placeholder a single
special token; `expand_images` replaces the k-th placeholder token by the image's token layout
(`images.image_token_layout`: tokens_per_image image tokens, or a thumbnail + slices for sliced
images), never trained. A sample too long after expansion is dropped, never cut through its images.

Loading (every step): `ImageLoader` opens the images of a sample, pads or resizes them, slices
them on the grid chosen at encoding, and runs the image processor -> pixel_values, one row per
(sub-)image in token order, which is the order LLaVA scatters features into image tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mmtune.constants import IGNORE_INDEX
from mmtune.data.encode import EncodedSample
from mmtune.data.images import (
    background_from_mean,
    image_size,
    image_token_layout,
    open_image,
    prepare_image,
    resolve_image_path,
    slice_grid,
    slice_image,
)
from mmtune.errors import DataError

SLICE_START, SLICE_END = "<slice>", "</slice>"


@dataclass(frozen=True)
class ImageSpec:
    """What encoding needs to know about the model's image tokens."""

    image_token_id: int
    tokens_per_image: int
    image_folder: str | None
    newline_ids: tuple[int, ...] = ()
    slice_start_id: int | None = None
    slice_end_id: int | None = None
    max_slice_nums: int | None = None  # None: no slicing
    scale_resolution: int = 448

    def grid_for(self, path: str, where: str) -> tuple[int, int]:
        if self.max_slice_nums is None:
            return (1, 1)
        w, h = image_size(path, where)
        return slice_grid(w, h, self.max_slice_nums, self.scale_resolution)

    def layout_ids(self, grid: tuple[int, int]) -> list[int]:
        ids: list[int] = []
        for item in image_token_layout(grid, self.tokens_per_image):
            if isinstance(item, tuple):
                ids.extend([self.image_token_id] * item[1])
            elif item == "newline":
                ids.extend(self.newline_ids)
            else:
                ids.append(self.slice_start_id if item == "slice_start" else self.slice_end_id)
        return ids


def image_spec_for(tokenizer, image_token_id: int, tokens_per_image: int, data_cfg) -> ImageSpec:
    slicing = data_cfg.slice
    kwargs = {}
    if slicing is not None:
        kwargs = dict(
            slice_start_id=tokenizer.convert_tokens_to_ids(SLICE_START),
            slice_end_id=tokenizer.convert_tokens_to_ids(SLICE_END),
            max_slice_nums=slicing.max_slice_nums,
            scale_resolution=slicing.scale_resolution,
        )
    return ImageSpec(
        image_token_id=image_token_id,
        tokens_per_image=tokens_per_image,
        image_folder=data_cfg.image_folder,
        newline_ids=tuple(tokenizer("\n", add_special_tokens=False).input_ids),
        **kwargs,
    )


def expand_images(sample: EncodedSample, images: list, spec: ImageSpec, source: str, grids: list | None = None):
    """(sample with image tokens expanded, resolved image paths, grids). DataError on a bad record.

    Training passes image paths (resolved under the image folder, grids read from the files);
    inference passes the grids of images already in memory."""
    positions = [i for i, t in enumerate(sample.input_ids) if t == spec.image_token_id]
    if len(positions) != len(images):
        raise DataError(f"{len(positions)} <image> placeholder(s) in the text but {len(images)} image(s)",
                        where=f"{source}:images")
    if grids is None and images and spec.image_folder is None:
        raise DataError("the record has images but the recipe sets no data.image_folder", where=f"{source}:images")
    paths, out_grids = [], []
    ids: list[int] = []
    labels: list[int] = []
    start = 0
    for k, (pos, image) in enumerate(zip(positions, images)):
        if grids is None:
            where = f"{source}:images[{k}]"
            path = str(resolve_image_path(image, spec.image_folder, where))
            grid = spec.grid_for(path, where)
            paths.append(path)
        else:
            grid = grids[k]
        layout = spec.layout_ids(grid)
        ids += sample.input_ids[start:pos] + layout
        labels += sample.labels[start:pos] + [IGNORE_INDEX] * len(layout)
        start = pos + 1
        out_grids.append(list(grid))
    ids += sample.input_ids[start:]
    labels += sample.labels[start:]
    return EncodedSample(ids, labels), paths, out_grids


class ImageLoader:
    """Shape, slice and process images into pixel_values (one row per (sub-)image, token order)."""

    def __init__(self, image_processor, mode: str = "pad", slice_cfg=None):
        self.image_processor = image_processor
        self.mode = mode
        self.slice_cfg = slice_cfg
        mean = getattr(image_processor, "image_mean", None)
        self.background = background_from_mean(mean) if mean is not None else (127, 127, 127)

    def sub_images(self, img) -> list:
        if self.slice_cfg is None:
            return [prepare_image(img, self.mode, background=self.background)]
        s = self.slice_cfg
        return slice_image(img, s.max_slice_nums, s.scale_resolution, s.patch_size).images

    def grid(self, img) -> tuple[int, int]:
        if self.slice_cfg is None:
            return (1, 1)
        return slice_grid(*img.size, self.slice_cfg.max_slice_nums, self.slice_cfg.scale_resolution)

    def process(self, images: list) -> torch.Tensor:
        """pixel_values for PIL images (inference: images given directly)."""
        pictures = [p for img in images for p in self.sub_images(img)]
        return self.image_processor(images=pictures, return_tensors="pt")["pixel_values"]

    def __call__(self, paths: list[str], grids: list, source: str) -> torch.Tensor:
        """pixel_values for a training sample's image files (DataError when one cannot be read)."""
        return self.process([open_image(path, f"{source}:images[{k}]") for k, path in enumerate(paths)])


@dataclass
class LlavaImages:
    """An assembled LLaVA's images: the token layout of `spec`, the pixels of `loader`."""

    spec: ImageSpec
    loader: ImageLoader
    tokenizer: object = None  # for prompts (inference)

    def __repr__(self) -> str:  # the dataset cache key (the spec says all that changes the samples)
        return repr(self.spec)

    @property
    def image_token_id(self) -> int:
        return self.spec.image_token_id

    def encode_samples(self, encoder, convs, images: list[list[str]], sources: list[str]) -> list:
        """For each conversation: (sample, tokens to keep whole, image paths, slice grids), or its DataError."""
        full_batch = encoder.encode_batch(convs)
        results = []
        for i, (paths, source) in enumerate(zip(images, sources)):
            try:
                sample, kept, grids = expand_images(full_batch.sample(i), paths, self.spec, source)
            except DataError as e:
                results.append(e)
                continue
            last = max((k for k, t in enumerate(sample.input_ids) if t == self.spec.image_token_id), default=-1)
            results.append((sample, last + 1, kept, grids))
        return results

    def __call__(self, paths: list[str], grids: list, source: str) -> dict:
        return {"pixel_values": self.loader(paths, grids, source)}

    def prompt_inputs(self, text: str, pictures: list) -> dict:
        """input_ids and pixel_values of a rendered prompt and its PIL images, built as in training."""
        ids = self.tokenizer(text, add_special_tokens=False).input_ids
        sample = EncodedSample(list(ids), [IGNORE_INDEX] * len(ids))
        grids = [self.loader.grid(img) for img in pictures]
        expanded, _, _ = expand_images(sample, pictures, self.spec, "prompt", grids=grids)
        return {"input_ids": torch.tensor([expanded.input_ids]), "pixel_values": self.loader.process(pictures)}
