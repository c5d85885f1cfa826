"""Image inputs for generation, built exactly as in training (data/vlm.py): the prompt's `<image>`
placeholders expand to the image token layout and the images go through the same ImageLoader
(pad or resize, optional slicing), so a model sees at inference what it saw in training."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mmtune.data.encode import EncodedSample
from mmtune.data.vlm import ImageLoader, ImageSpec, expand_images


@dataclass
class VisionInputs:
    spec: ImageSpec
    loader: ImageLoader

    def build(self, input_ids: list[int], images: list) -> tuple[list[int], torch.Tensor | None]:
        """(expanded input ids, pixel_values) for a prompt and its PIL images, in placeholder order."""
        if not images:
            return input_ids, None
        sample = EncodedSample(list(input_ids), [-100] * len(input_ids))
        grids = [self.loader.grid(img) for img in images]
        expanded, _, _ = expand_images(sample, images, self.spec, "prompt", grids=grids)
        return expanded.input_ids, self.loader.process(images)


def vision_inputs_for(model, tokenizer, image_processor, meta: dict | None) -> VisionInputs:
    """The VisionInputs of a LLaVA model; `meta` (mmtune_meta.json of the run) gives image_mode/slice."""
    from mmtune.config.schema import SliceConfig
    from mmtune.data.vlm import SLICE_END, SLICE_START
    from mmtune.models.llava import image_tokens_per_image

    meta = meta or {}
    slice_cfg = SliceConfig(**meta["slice"]) if meta.get("slice") else None
    config = model.config
    spec = ImageSpec(
        image_token_id=config.image_token_id,
        tokens_per_image=image_tokens_per_image(config),
        image_folder="",
        newline_ids=tuple(tokenizer("\n", add_special_tokens=False).input_ids),
        slice_start_id=tokenizer.convert_tokens_to_ids(SLICE_START) if slice_cfg else None,
        slice_end_id=tokenizer.convert_tokens_to_ids(SLICE_END) if slice_cfg else None,
        max_slice_nums=slice_cfg.max_slice_nums if slice_cfg else None,
        scale_resolution=slice_cfg.scale_resolution if slice_cfg else 448,
    )
    return VisionInputs(spec, ImageLoader(image_processor, meta.get("image_mode", "pad"), slice_cfg))
