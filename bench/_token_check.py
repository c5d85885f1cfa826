"""`train_throughput.py --check-tokens`: does mmtune train on what the kit's baseline trains on?

1. Token ids and labels of all 2,000 conversations: mmtune's chatml encoder vs baseline_hf.py's encode().
2. The samples of the first STEPS x 4 micro-batch rows each one draws (no forward/backward: the Trainer
   step is stubbed, everything before it, sampler and collator included, runs as in a real run):
   the baseline (kit script, hf venv) and mmtune unpacked (this venv). The kit's figure for 60 steps
   is 58,368 real tokens.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from _runner import parse_result

# Runs the kit's baseline_hf.py unchanged with Trainer.training_step stubbed, then prints the lengths it saw.
BASELINE_STUB = r"""
import json, runpy, sys, torch, transformers
seen = []
def step(self, model, inputs, *a, **kw):
    seen.extend(inputs["attention_mask"].sum(dim=1).tolist()); return torch.tensor(0.0)
transformers.Trainer.training_step = step
script = sys.argv[1]; sys.argv = sys.argv[1:]
try:
    runpy.run_path(script, run_name="__main__")
except ZeroDivisionError:  # its RESULT divides by the tokens its compute_loss counted: none here
    pass
print("RESULT " + json.dumps({"real_tokens": sum(seen), "sample_lengths": seen}), flush=True)
"""


def baseline_encoder(tok, max_length: int = 1024):
    """baseline_hf.py's encode(), verbatim apart from the closure."""
    def encode(messages):
        ids, labels = [], []
        for m in messages:
            head = tok.encode(f"<|im_start|>{m['role']}\n", add_special_tokens=False)
            body = tok.encode(f"{m['content']}<|im_end|>\n", add_special_tokens=False)
            ids += head + body
            labels += [-100] * len(head) + (body if m["role"] == "assistant" else [-100] * len(body))
        return {"input_ids": ids[:max_length], "labels": labels[:max_length]}
    return encode


def compare_encodings(assets: Path) -> dict:
    from mmtune.config.load import validate_recipe
    from mmtune.builders.data import encoder
    from mmtune.models.load import load_tokenizer

    from _mmtune_train import recipe_dict

    recipe = validate_recipe(recipe_dict(str(assets), "full", False, 60))
    tok = load_tokenizer(recipe.model)
    mm = encoder(recipe, tok)
    base = baseline_encoder(tok)
    from mmtune.data.formats import read_file

    path = assets / "data/messages.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    convs, errors = read_file(str(path), "openai", errors="collect")  # as run_training reads it
    assert not errors and len(convs) == len(records), errors[:1]
    same_ids = same_labels = 0
    label_diff = Counter()  # token text of positions trained by one side only
    for rec, conv in zip(records, convs):
        b = base(rec["messages"])
        m = mm.encode(conv)
        same_ids += b["input_ids"] == m.input_ids
        same_labels += b["labels"] == m.labels
        if b["input_ids"] == m.input_ids:
            for t, lb, lm in zip(b["input_ids"], b["labels"], m.labels):
                if (lb == -100) != (lm == -100):
                    label_diff[("baseline only" if lm == -100 else "mmtune only", tok.decode([t]))] += 1
    return {"conversations": len(records), "identical_ids": same_ids, "identical_labels": same_labels,
            "tokens": sum(len(base(r["messages"])["input_ids"]) for r in records),
            "trained_by_one_side_only": {f"{side}: {text!r}": n for (side, text), n in label_diff.items()}}


def check(peers: Path, kit: Path, steps: int) -> None:
    assets = peers / "assets"
    enc = compare_encodings(assets)
    print("1. encoding of all conversations, mmtune chatml vs baseline_hf.py:")
    print(json.dumps(enc, indent=2))
    here = Path(__file__).resolve().parent
    with tempfile.TemporaryDirectory(prefix="bench-tokcheck-") as tmp:
        env_cpu = {"CUDA_VISIBLE_DEVICES": "", "HF_DATASETS_CACHE": f"{tmp}/hfcache", "MMTUNE_CACHE": f"{tmp}/mmcache",
                   "BENCH_WORK_DIR": f"{tmp}/mm"}
        runs = {
            "baseline (kit, hf venv)": [str(peers / "hf/bin/python"), "-c", BASELINE_STUB, str(kit / "baseline_hf.py"),
                                        str(assets), f"{tmp}/hf", "--steps", str(steps)],
            "mmtune unpacked": [sys.executable, str(here / "train_throughput.py"), "--worker", "mm_full", "--dry",
                                "--assets", str(assets), "--steps", str(steps)],
        }
        seen = {}
        for label, cmd in runs.items():
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env_cpu}, cwd=tmp)
            res = parse_result(proc.stdout)
            if res is None:
                sys.exit(f"{label} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
            seen[label] = res["sample_lengths"]
    print(f"\n2. samples drawn in {steps} steps x micro-batch 4 (sampler + collator as in a real run, no compute):")
    for label, lengths in seen.items():
        print(f"   {label:26s} real_tokens {sum(lengths):6d}  first batch lengths {lengths[:4]}")
    (b_label, b), (m_label, m) = seen.items()
    common = sum((Counter(b) & Counter(m)).values())
    print(f"   same order: {b == m}; same multiset of lengths: {Counter(b) == Counter(m)}; "
          f"{common} of {len(b)} sample lengths in common")
