"""Gemma 3: SigLIP, a pooling projector, Gemma 3's language model. Image tokens attend to each other
both ways within one image (`token_type_ids`); the processor can pan and scan wide images.

Packing is refused: transformers remaps the bidirectional image blocks wrongly once samples are
packed (the sliding-window layers read the block ids from other positions), and without
`token_type_ids` the images would be attended causally, unlike the model's own training."""

from __future__ import annotations

from mmtune.models.families.registry import Family, Parts, register_family

register_family(Family(
    name="gemma3",
    model_types=("gemma3",),
    description="Gemma 3 (4B-27B): SigLIP + projector; bidirectional attention inside each image",
    parts=Parts(vision="model.vision_tower", projector="model.multi_modal_projector", llm="model.language_model"),
    knobs=("do_pan_and_scan", "pan_and_scan_min_crop_size", "pan_and_scan_max_num_crops"),
    token_types="token_type_ids",
    packing_problem=lambda model: ("Gemma 3's image tokens attend to each other both ways (token_type_ids), which "
                                   "transformers cannot keep apart in a packed row"),
))
