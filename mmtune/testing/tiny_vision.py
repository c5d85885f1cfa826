"""Tiny vision encoders (CLIP, SigLIP) built from real transformers configs, for tests and the demo.

Each is an ordinary HF directory: `config.json` + `model.safetensors` + `preprocessor_config.json`,
written by `save_pretrained`, so code loads it exactly like `openai/clip-vit-large-patch14-336`
or `google/siglip-so400m-patch14-384`. Sizes: 64x64 images, 16x16 patches -> a 4x4 grid of 16
patches, hidden 64, 2 layers. CLIP adds a CLS token (17 positions), SigLIP does not (16).

"clip" and "siglip" are vision-only models (`CLIPVisionModel`); "clip-full" is a whole `CLIPModel`
(vision + text towers), the layout real CLIP hub checkpoints have, to test that loaders take the
vision half of it. Built atomically into the same cache as `tiny.py`.
"""

from __future__ import annotations

from pathlib import Path

from mmtune.testing.cache import build_atomically, cache_root
from mmtune.testing.vision_init import init_patch_embeddings

BUILD_VERSION = "v2"  # bump when what is built changes, so caches rebuild (v2: edge-filter patch embeddings)
IMAGE_SIZE = 64
PATCH_SIZE = 16
KINDS = ("clip", "siglip", "clip-full")

_TOWER = dict(
    image_size=IMAGE_SIZE,
    patch_size=PATCH_SIZE,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
)


def _clip_processor():
    from transformers import CLIPImageProcessorPil  # the PIL backend: no torchvision needed

    return CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )


def _siglip_processor():
    from transformers import SiglipImageProcessorPil

    return SiglipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})


def build_vision(out: Path, kind: str, seed: int = 0) -> None:
    import torch
    from transformers import (
        CLIPConfig,
        CLIPModel,
        CLIPTextConfig,
        CLIPVisionConfig,
        CLIPVisionModel,
        SiglipVisionConfig,
        SiglipVisionModel,
    )

    torch.manual_seed(seed)
    if kind == "clip":
        model = CLIPVisionModel(CLIPVisionConfig(**_TOWER, projection_dim=32))
        processor = _clip_processor()
    elif kind == "siglip":
        model = SiglipVisionModel(SiglipVisionConfig(**_TOWER))
        processor = _siglip_processor()
    elif kind == "clip-full":
        text = CLIPTextConfig(
            vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
            max_position_embeddings=32, bos_token_id=0, eos_token_id=2, pad_token_id=1,
        )
        vision = CLIPVisionConfig(**_TOWER)
        model = CLIPModel(CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=32))
        processor = _clip_processor()
    else:
        raise ValueError(f"unknown tiny vision encoder {kind!r} ({', '.join(KINDS)})")
    init_patch_embeddings(model)
    model.eval()
    model.save_pretrained(out)
    processor.save_pretrained(out)


def tiny_vision_dir(kind: str = "clip") -> Path:
    """A saved tiny vision encoder with its image processor ("clip", "siglip" or "clip-full")."""
    if kind not in KINDS:
        raise ValueError(f"unknown tiny vision encoder {kind!r} ({', '.join(KINDS)})")
    return build_atomically(cache_root() / f"vision-{kind}-{BUILD_VERSION}", lambda out: build_vision(out, kind))


def tiny_image(seed: int = 0, size: tuple[int, int] = (70, 50)):
    """A deterministic random RGB PIL image (width, height), not square so resizing is exercised."""
    import numpy as np
    from PIL import Image

    pixels = np.random.RandomState(seed).randint(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


if __name__ == "__main__":
    import sys

    for k in sys.argv[1:] or list(KINDS):
        print(tiny_vision_dir(k))
