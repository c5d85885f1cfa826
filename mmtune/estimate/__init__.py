"""Predict peak GPU memory per GPU before a launch (`mmtune estimate-memory`), split by job:

    sizes.py    what is trained, counted from configs on the meta device (ModelSize)
    setup.py    how it trains: method, precision, parallelism, batch, savers (Setup), from a recipe
    memory.py   the arithmetic (the formulas are in its docstring) and the per-GPU table
"""

from mmtune.estimate.memory import (
    CUDA_OVERHEAD,
    NF4_BYTES,
    Estimate,
    GiB,
    activation_bytes,
    decoder_layer_bytes,
    estimate,
    estimate_for_recipe,
    estimate_table,
    layer_activation_bytes,
    trained_parts,
)
from mmtune.estimate.setup import STRATEGIES, Setup, deepspeed_setup, setup_from_recipe
from mmtune.estimate.sizes import (
    ModelSize, add_vision, count_model, count_native_vlm, load_model_config, model_size_for_recipe, synthetic_llama,
)

__all__ = ["CUDA_OVERHEAD", "NF4_BYTES", "STRATEGIES", "Estimate", "GiB", "ModelSize", "Setup", "activation_bytes",
           "add_vision", "count_model", "count_native_vlm", "decoder_layer_bytes", "deepspeed_setup", "estimate", "estimate_for_recipe",
           "estimate_table", "layer_activation_bytes", "load_model_config", "model_size_for_recipe",
           "setup_from_recipe", "synthetic_llama", "trained_parts"]
