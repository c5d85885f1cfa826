"""What a run records next to its weights (mmtune_meta.json in every checkpoint and in final/):
what export, chat and serve need to rebuild the model and its input format without the recipe."""

from __future__ import annotations

from mmtune.builders.model import native_family
from mmtune.models.trainable import trainable_groups


def run_meta(recipe) -> dict:
    m = recipe.model
    meta = {
        "base_model": m.path,
        "method": recipe.method.type,
        "template": recipe.data.template,
        "system": recipe.data.system,
        "trust_remote_code": m.trust_remote_code,
        "processor": dict(recipe.data.processor),  # a native VLM's processor settings: chat, serve, eval reuse them
    }
    family = native_family(m) if m.vision is None else None
    if family is not None:
        meta.update({"family": family.name, "stage": recipe.method.stage,
                     "trainable": trainable_groups(recipe.method, vision=True, family=family)})
    if m.vision is not None:
        meta.update({
            "vision": m.vision.model_dump(),
            "projector": m.projector.model_dump(),
            "pretrained_projector": m.pretrained_projector,
            "stage": recipe.method.stage,
            "trainable": trainable_groups(recipe.method, vision=True),
            "image_mode": recipe.data.image_mode,
            "slice": recipe.data.slice.model_dump() if recipe.data.slice else None,
        })
    return meta


def resume_facts(recipe, world_size: int = 1) -> dict:
    """What `--resume` compares with the checkpoint it resumes: the resolved recipe, the global batch
    (micro-batch x accumulation x processes: the layout may change, the batch may not) and the
    content of each data file (a digest)."""
    from mmtune.data.dataset import file_digest

    t = recipe.train
    return {"recipe": recipe.model_dump(mode="json"),
            "global_batch": t.micro_batch_size * t.gradient_accumulation * world_size,
            "data_files": {d.path: file_digest(d.path) for d in recipe.data.datasets}}
