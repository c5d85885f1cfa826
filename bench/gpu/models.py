"""Qwen2-shaped models of real sizes, built from their configs with random weights (no download):
speed and memory depend on the shapes, not on the weights. The tokenizer is the peer-bench kit's
(vocabulary 4,096); the models keep Qwen2's vocabulary of 151,936, so the embedding, the head and the
logits have their real sizes.

    python3 bench/gpu/models.py 0.5b /tmp/gpu_models/qwen2-0.5b --tokenizer .gpu/assets
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

# Qwen2.5-0.5B / -1.5B (their config.json): tied embeddings, GQA with 2 key/value heads
SHAPES = {
    "0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14),
    "1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12),
}


def qwen2_config(size: str):
    from transformers import Qwen2Config

    return Qwen2Config(vocab_size=151936, num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1e6,
                       rms_norm_eps=1e-6, tie_word_embeddings=True, bos_token_id=None, eos_token_id=2, pad_token_id=0,
                       dtype="bfloat16", **SHAPES[size])


def build(size: str, out: Path, tokenizer: Path, device: str = "cuda") -> Path:
    """Write a bf16 Qwen2ForCausalLM of `size` with random weights and the kit's tokenizer to `out`."""
    import torch
    from transformers import Qwen2ForCausalLM

    out = Path(out)
    if (out / "model.safetensors").exists():
        return out
    torch.manual_seed(0)
    with torch.device(device if torch.cuda.is_available() else "cpu"):
        model = Qwen2ForCausalLM(qwen2_config(size)).to(torch.bfloat16)
    model.save_pretrained(out)
    for f in Path(tokenizer).glob("*"):
        if f.is_file() and (f.name.startswith("tokenizer") or f.suffix == ".jinja"):
            shutil.copy(f, out / f.name)
    n = sum(p.numel() for p in model.parameters())
    print(f"built {out}: {n / 1e9:.3f} B parameters", flush=True)
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("size", choices=sorted(SHAPES))
    p.add_argument("out", type=Path)
    p.add_argument("--tokenizer", type=Path, default=Path(".gpu/assets"))
    a = p.parse_args()
    build(a.size, a.out, a.tokenizer)
