"""The data of a run: encoder, encoded datasets (once across processes), training rows, eval
conversations, and the sample-length measure of `mmtune data check --config`."""

from __future__ import annotations

from mmtune.data.dataset import TrainRows, cache_key, dataset_cache_root, encode_datasets
from mmtune.data.encode import ConversationEncoder, encoder_for
from mmtune.data.eval_set import EvalSet, read_eval_set
from mmtune.errors import ConfigError


def encoder(recipe, tokenizer, template=None) -> ConversationEncoder:
    return encoder_for(recipe.data, tokenizer, template)


def encoded_data(recipe, tokenizer, *, image_spec=None, template=None, world_size: int = 1):
    """`encode_datasets` of the recipe's data, tokenized once across the `world_size` processes of
    a job: every rank takes a file lock on the dataset cache entry; the first holder encodes and
    caches, the others then load the cache. The lock has no timeout and is no collective (a rank
    waits as long as the tokenization takes, so a long one cannot hit the process group's timeout);
    ranks on other nodes lock their own cache, or share it on a shared file system."""
    if world_size <= 1:
        return encode_datasets(recipe.data, tokenizer, image_spec=image_spec, template=template)
    from filelock import FileLock

    root = dataset_cache_root()
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f"{cache_key(recipe.data, tokenizer, image_spec)}.lock")):
        return encode_datasets(recipe.data, tokenizer, image_spec=image_spec, template=template)


def train_rows(recipe, encoded, image_loader=None, position_fn=None) -> TrainRows:
    d = recipe.data
    return TrainRows(encoded, pack=d.pack_to_max_length, max_length=d.max_length, seed=recipe.train.seed,
                     image_loader=image_loader, bad_images=d.bad_images, max_bad_fraction=d.max_bad_fraction,
                     position_fn=position_fn)


def eval_set(recipe) -> EvalSet | None:
    """The conversations of `eval.datasets` (None without any). Read before the model loads, so a
    bad file fails in seconds."""
    cfg = recipe.eval
    if not cfg.datasets:
        return None
    if recipe.model.vision is not None:
        raise ConfigError("eval.datasets scores text models only for now",
                          hint="drop eval.datasets, and evaluate the VLM after training with `mmtune eval mmbench`")
    return read_eval_set(cfg.datasets, cfg.max_samples, recipe.train.seed)


def sample_length_fn(config: str, overrides=(), image_folder: str | None = None):
    """(conversation -> token count (a VLM's: (tokens, image tokens)), max_length) with the tokenizer, template, length policy and (for a
    vision-language recipe) image tokens of a recipe, for `mmtune data check --config CONFIG [--set ...]`.
    A VLM sample's images are opened (their sizes set the image tokens) under `image_folder`, or the
    recipe's data.image_folder."""
    from mmtune.builders.model import is_vision, vision_data
    from mmtune.builders.tokenizer import tokenizer_and_template
    from mmtune.config.load import load_config
    from mmtune.errors import DataError

    recipe = load_config(config, overrides)
    if not is_vision(recipe):
        tokenizer, _ = tokenizer_and_template(recipe)
        return encoder(recipe, tokenizer).length, recipe.data.max_length
    images, tokenizer, template = vision_data(recipe, image_folder)
    enc = encoder(recipe, tokenizer, template)

    def length(conv) -> tuple[int, int]:
        [result] = images.encode_samples(enc, [conv], [list(conv.images)], [conv.source])
        if isinstance(result, DataError):
            raise result
        ids = result[0].input_ids
        return len(ids), ids.count(images.image_token_id)

    return length, recipe.data.max_length
