"""The tokenizer of a run and its chat template."""

from __future__ import annotations

from mmtune.data.templates import ChatFormat, ProcessorTemplate, get_template, store_template
from mmtune.models.load import load_tokenizer


def tokenizer_and_template(recipe, tokenizer=None, processor=None) -> tuple[object, ChatFormat]:
    """(tokenizer, template): the recipe's tokenizer (or `tokenizer`, e.g. a VLM processor's, which
    carries the image token) and the template its data is encoded with, stored into the tokenizer,
    so checkpoints and exports carry the training format and plain transformers reproduces it. A
    native VLM family's `processor` brings its own chat template, which renders image parts."""
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(recipe.model)
    if processor is not None and recipe.model.vision is None:
        return tokenizer, ProcessorTemplate(tokenizer, processor=processor)
    template = get_template(recipe.data.template, tokenizer)
    store_template(tokenizer, template)
    return tokenizer, template
