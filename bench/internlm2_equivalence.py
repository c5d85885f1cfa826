"""mmtune's native InternLM2 (the checkpoint converted to Llama on load) against InternLM2's own
modeling code, on a tiny checkpoint in InternLM2's layout: logits and greedy tokens.

InternLM2's code is the hub's `modeling_internlm2.py` / `configuration_internlm2.py` (internlm2-chat-7b,
as vendored in public repositories); it is not part of mmtune: point --remote at a folder holding those
two files. Under transformers 5 that code needs two fixes to run at all, applied to a copy here and
nowhere else (they are why mmtune loads InternLM2 natively):
- `config.rope_scaling` is never None in transformers 5 (a default dict with `rope_type: default`),
  and a dynamic one says `rope_type` as well as `type`: `_init_rope` reads both;
- transformers 5 builds models on the meta device, so the rotary tables the code computes in
  `__init__` (non-persistent buffers) come out uninitialised: they are recomputed after loading
  (and before each measurement: the code's dynamic table keeps the scaling of the longest sequence
  it has seen, so a shorter sequence after a longer one would see another table than when alone).
With max_position_embeddings 32 and 48-token inputs, dynamic NTK scaling is exercised.

    .venv/bin/python bench/internlm2_equivalence.py --remote /tmp/internlm2_remote
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import torch


def fix_remote_code(text: str) -> str:
    text = text.replace(
        "        if self.config.rope_scaling is None:",
        "        scaling = self.config.rope_scaling or {}\n"
        "        if scaling.get('type', scaling.get('rope_type', 'default')) == 'default':")
    text = text.replace('scaling_type = self.config.rope_scaling["type"]',
                        'scaling_type = scaling.get("type", scaling.get("rope_type"))')
    return text


def recompute_rotary_tables(model) -> None:
    for module in model.modules():
        if hasattr(module, "_set_cos_sin_cache") and hasattr(module, "base"):
            dim = module.dim
            module.inv_freq = 1.0 / (module.base ** (torch.arange(0, dim, 2).float() / dim))
            module._set_cos_sin_cache(seq_len=module.max_position_embeddings, device="cpu", dtype=torch.float32)


def checkpoint(root: Path, remote: Path, rope_scaling, bias: bool) -> Path:
    from safetensors.torch import save_file

    from mmtune.testing.tiny_internlm2 import VOCAB_SIZE, internlm2_config, internlm2_state_dict, write_tokenizer

    out = root / f"ckpt-{'dynamic' if rope_scaling else 'plain'}-{'bias' if bias else 'nobias'}"
    out.mkdir()
    write_tokenizer(out)
    config = internlm2_config(VOCAB_SIZE, rope_scaling=rope_scaling, max_position_embeddings=32, bias=bias)
    (out / "config.json").write_text(json.dumps(config, indent=2))
    save_file(internlm2_state_dict(config, seed=3), str(out / "model.safetensors"), metadata={"format": "pt"})
    shutil.copyfile(remote / "configuration_internlm2.py", out / "configuration_internlm2.py")
    (out / "modeling_internlm2.py").write_text(fix_remote_code((remote / "modeling_internlm2.py").read_text()))
    return out


def greedy(model, ids: torch.Tensor, steps: int) -> list[int]:
    out = []
    for _ in range(steps):  # no cache: both models recompute the whole sequence each step
        nxt = model(input_ids=ids, use_cache=False).logits[0, -1].argmax()
        out.append(int(nxt))
        ids = torch.cat([ids, nxt.view(1, 1)], dim=1)
    return out


def inputs() -> dict[str, torch.Tensor]:
    """16 tokens (within max_position_embeddings 32), 48 (beyond: dynamic NTK applies), and a greedy prompt."""
    return {f"ids{n}": torch.randint(10, 2000, (1, n), generator=torch.Generator().manual_seed(n)) for n in (16, 48, 20)}


@torch.no_grad()
def run(model, reset=lambda: None) -> dict:
    """`reset` before each measurement: InternLM2's dynamic rotary table keeps the scaling of the
    longest sequence seen so far (a later, shorter one reuses it), transformers' does not."""
    out = {}
    for key, ids in inputs().items():
        reset()
        if key == "ids20":
            out["greedy"] = greedy(model, ids, 24)
        else:
            out[f"logits{key[3:]}"] = model(input_ids=ids, use_cache=False).logits
    return out


def theirs(path: Path, out: Path) -> None:
    """InternLM2's own code (this runs in a process that never imports mmtune's registration)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(path), trust_remote_code=True, dtype=torch.float32).eval()
    assert type(model).__module__.startswith("transformers_modules."), type(model)  # InternLM2's own code ran
    torch.save(run(model, reset=lambda: recompute_rotary_tables(model)), out)


def compare(path: Path) -> dict:
    import subprocess
    import sys

    from transformers import AutoModelForCausalLM

    from mmtune.models.load import load_pretrained

    reference = path / "theirs.pt"
    subprocess.run([sys.executable, __file__, "--theirs", str(path), str(reference)], check=True)
    a = torch.load(reference, weights_only=True)
    ours = load_pretrained(AutoModelForCausalLM, path, "the model", dtype=torch.float32).eval()
    assert type(ours).__module__.startswith("mmtune."), type(ours)
    b = run(ours)
    row = {f"max abs logit diff, {n} tokens": float((a[f"logits{n}"] - b[f"logits{n}"]).abs().max()) for n in (16, 48)}
    row["greedy tokens equal (24 steps)"] = a["greedy"] == b["greedy"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--remote", type=Path, help="folder with InternLM2's modeling/configuration files")
    parser.add_argument("--theirs", nargs=2, type=Path, metavar=("CKPT", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.theirs:
        return theirs(*args.theirs)
    if args.remote is None:
        parser.error("--remote DIR is required")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for scaling in (None, {"type": "dynamic", "factor": 2.0}):
            for bias in (False, True):
                path = checkpoint(Path(tmp), args.remote, scaling, bias)
                rows.append({"rope": "dynamic NTK x2" if scaling else "plain", "bias": bias, **compare(path)})
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(f"{row[k]:.2e}" if isinstance(row[k], float) else str(row[k]) for k in keys) + " |")


if __name__ == "__main__":
    main()
