"""The tiny vision encoders are ordinary HF dirs that load like hub checkpoints."""

from __future__ import annotations

import pytest
import torch

from mmtune.testing.tiny_vision import IMAGE_SIZE, PATCH_SIZE, tiny_image, tiny_vision_dir

GRID = (IMAGE_SIZE // PATCH_SIZE) ** 2


@pytest.mark.parametrize(
    "kind, model_cls, positions",
    [("clip", "CLIPVisionModel", GRID + 1), ("siglip", "SiglipVisionModel", GRID)],  # CLIP adds a CLS token
)
def test_vision_dir_loads_with_plain_transformers(kind, model_cls, positions):
    import transformers
    from transformers import AutoImageProcessor

    path = tiny_vision_dir(kind)
    assert (path / "config.json").exists() and (path / "model.safetensors").exists()
    assert (path / "preprocessor_config.json").exists()
    model = getattr(transformers, model_cls).from_pretrained(path).eval()
    processor = AutoImageProcessor.from_pretrained(path)
    pixels = processor(images=tiny_image(), return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 3, IMAGE_SIZE, IMAGE_SIZE)
    with torch.no_grad():
        out = model(pixel_values=pixels, output_hidden_states=True)
    assert out.last_hidden_state.shape == (1, positions, model.config.hidden_size)
    assert len(out.hidden_states) == model.config.num_hidden_layers + 1


def test_cached_and_complete():
    first = tiny_vision_dir("siglip")
    assert (first / ".complete").exists()
    assert tiny_vision_dir("siglip") == first


def test_full_clip_dir_gives_its_vision_half():
    """Real users pass openai/clip-vit-*: a whole CLIPModel; loaders must take its vision tower."""
    from transformers import CLIPModel

    from mmtune.models.llava import load_vision_encoder

    path = tiny_vision_dir("clip-full")
    full = CLIPModel.from_pretrained(path)
    assert full.config.model_type == "clip"
    vision, processor = load_vision_encoder(str(path))
    assert type(vision).__name__ == "CLIPVisionModel"
    reference = full.vision_model.state_dict()
    own = vision.state_dict()
    assert own.keys() == reference.keys()
    for key, value in own.items():
        assert torch.equal(value, reference[key]), key
    assert processor.crop_size["height"] == IMAGE_SIZE


def test_unknown_kind():
    with pytest.raises(ValueError, match="unknown tiny vision encoder"):
        tiny_vision_dir("vit")
