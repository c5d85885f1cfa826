"""Micro-benchmark: forward + backward of a kit-like model on packed and unpacked batches (CPU).

Model: Qwen2, hidden 256, 4 layers, 4 heads (2 kv), intermediate 704, vocab 4096, tied embeddings
(the peer-bench model). Samples: lognormal lengths, median 224 tokens, clipped to [27, 1000]; the
first quarter of each sample (the prompt) is not trained. A "step" is 4 rows of max_length 1024
built by mmtune's packing, or the same samples unpacked in micro-batches of 4, padded to the
longest. Variants are timed in alternating rounds, one step each; the table gives the median and
the best real tokens/s per variant (on a shared machine the best is the least disturbed run):

  flat_block    one flattened row, position ids, sdpa: transformers' block-diagonal mask (old mmtune)
  flat_packed   one flattened row, mmtune_packed_sdpa: one causal SDPA per sample (new mmtune)
  flat_bucket25 as flat_packed, samples gathered into padded batches of similar length (25% slack)
  flat_packed_keep  flat_packed + logits only where a label is trained (logits_to_keep + shift_labels)
  rows_neat     4 rows x 1024 (padded), 4-D block-diagonal causal mask (LLaMA-Factory neat_packing)
  unpacked      the same samples in micro-batches of 4, right-padded, attention_mask (plain HF Trainer)

Usage: python bench/packed_attention.py [--rounds 12] [--steps 3] [--threads 2] [--only flat_packed,unpacked]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from mmtune.data.collate import FlatCollator
from mmtune.data.packing import concat_samples, pack_lengths
from mmtune.models.packed_attention import packed_sdpa_mask, register, sample_spans

MAX_LEN = 1024
ROWS = 4


def kit_model():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=4096, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=704, max_position_embeddings=2048,
                      tie_word_embeddings=True)
    cfg._attn_implementation = "sdpa"
    return Qwen2ForCausalLM(cfg).float().train()


def make_samples(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        length = int(np.clip(rng.lognormal(np.log(224), 0.6), 27, 1000))
        ids = rng.integers(3, 4096, size=length).tolist()
        prompt = max(1, length // 4)
        out.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return out


def make_steps(n_steps: int, seed: int = 0):
    samples = make_samples(40 * n_steps, seed)
    bins = pack_lengths([len(s["input_ids"]) for s in samples], MAX_LEN)
    bins = [b for b in bins if sum(len(samples[i]["input_ids"]) for i in b) > 0.9 * MAX_LEN]  # full rows
    rng = np.random.default_rng(seed + 1)
    rng.shuffle(bins)
    return [[[samples[i] for i in b] for b in bins[k * ROWS:(k + 1) * ROWS]] for k in range(n_steps)]


# --- batches -----------------------------------------------------------------------------------------


def flat_batch(rows):
    return FlatCollator()([concat_samples(r) for r in rows])


def keep_batch(rows):
    """Logits only at positions whose next token is trained: the loss sees the same tokens."""
    b = flat_batch(rows)
    nxt = torch.cat([b["labels"][:, 1:], torch.full((1, 1), -100)], dim=1)
    keep = nxt != -100
    b["logits_to_keep"] = keep
    b["shift_labels"] = nxt[keep]
    return b


def neat_batch(rows):
    """Rows padded to MAX_LEN with a 4-D float mask: causal inside each sample, nothing across."""
    ids, labels, pos, seg = [], [], [], []
    for r in rows:
        row = concat_samples(r)
        n = len(row["input_ids"])
        ids.append(row["input_ids"] + [0] * (MAX_LEN - n))
        labels.append(row["labels"] + [-100] * (MAX_LEN - n))
        pos.append(row["position_ids"] + list(range(MAX_LEN - n)))
        s = [k + 1 for k, x in enumerate(r) for _ in x["input_ids"]]
        seg.append(s + [0] * (MAX_LEN - n))
    seg = torch.tensor(seg)
    same = (seg[:, :, None] == seg[:, None, :]) & (seg[:, :, None] > 0)
    allowed = same & torch.tril(torch.ones(MAX_LEN, MAX_LEN, dtype=torch.bool))
    allowed |= torch.eye(MAX_LEN, dtype=torch.bool)  # padding rows attend to themselves (no NaN)
    mask = torch.zeros(allowed.shape, dtype=torch.float32).masked_fill(~allowed, torch.finfo(torch.float32).min)
    return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels), "position_ids": torch.tensor(pos),
            "attention_mask": mask[:, None]}


def unpacked_batches(rows, seed: int = 0):
    samples = [s for r in rows for s in r]
    order = np.random.default_rng(seed).permutation(len(samples))
    out = []
    for k in range(0, len(samples), 4):
        group = [samples[i] for i in order[k:k + 4]]
        n = max(len(s["input_ids"]) for s in group)
        out.append({
            "input_ids": torch.tensor([s["input_ids"] + [0] * (n - len(s["input_ids"])) for s in group]),
            "labels": torch.tensor([s["labels"] + [-100] * (n - len(s["labels"])) for s in group]),
            "attention_mask": torch.tensor([[1] * len(s["input_ids"]) + [0] * (n - len(s["input_ids"])) for s in group]),
        })
    return out


# --- bucketed variant of the packed attention (bench only) ---------------------------------------------


def bucket_attention(slack: float):
    def forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
        spans = sample_spans(query.shape[2], kwargs.get("cu_seq_lens_q"), kwargs.get("position_ids")) if attention_mask is None else None
        assert spans is not None
        spans = sorted(spans, key=lambda s: -s[1])
        groups, cur = [], []
        for s in spans:  # a group's longest sample decides its padding; keep the padded area within slack
            trial = cur + [s]
            if cur and len(trial) * trial[0][1] ** 2 > (1 + slack) * sum(n * n for _, n in trial):
                groups.append(cur)
                trial = [s]
            cur = trial
        groups.append(cur)
        extra = {"enable_gqa": True} if getattr(module, "num_key_value_groups", 1) > 1 else {}
        outs, order = [], []
        for g in groups:
            if len(g) == 1:
                s, n = g[0]
                outs.append(F.scaled_dot_product_attention(query[:, :, s:s + n], key[:, :, s:s + n], value[:, :, s:s + n],
                                                           scale=scaling, is_causal=True, **extra)[0])
            else:
                longest = g[0][1]
                j = torch.arange(longest)
                idx = torch.stack([s + j.clamp(max=n - 1) for s, n in g])  # (G, L): padding repeats the last token
                valid = torch.stack([j < n for _, n in g])
                q, k, v = (t[0][:, idx].transpose(0, 1) for t in (query, key, value))  # (G, H, L, D)
                o = F.scaled_dot_product_attention(q, k, v, scale=scaling, is_causal=True, **extra)
                outs.append(o.transpose(0, 1)[:, valid])  # (H, sum n, D)
            order.extend(range(s, s + n) for s, n in g)
        flat = torch.cat(outs, dim=1)
        perm = torch.tensor([t for r in order for t in r])
        inv = torch.empty_like(perm)
        inv[perm] = torch.arange(len(perm))
        return flat[:, inv][None].transpose(1, 2).contiguous(), None

    return forward


def register_bucket(slack: float) -> str:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    name = f"bench_bucket_{int(slack * 100)}"
    AttentionInterface.register(name, bucket_attention(slack))
    AttentionMaskInterface.register(name, packed_sdpa_mask)
    return name


# --- timing --------------------------------------------------------------------------------------------


def run(model, attn: str, batches: list[dict]) -> float:
    model.set_attn_implementation(attn)
    t = time.perf_counter()
    for b in batches:
        model(**b, use_cache=False).loss.backward()
    dt = time.perf_counter() - t
    model.zero_grad(set_to_none=True)
    return dt


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=12, help="alternating rounds; each times every variant on one step")
    p.add_argument("--steps", type=int, default=3, help="distinct steps (batches), used in turn")
    p.add_argument("--only", default="")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    model = kit_model()
    packed = register()
    steps = make_steps(a.steps)
    step_tokens = [sum(len(s["input_ids"]) for r in st for s in r) for st in steps]
    n_samples = sum(len(r) for st in steps for r in st)
    variants = {
        "flat_block": ("sdpa", [[flat_batch(st)] for st in steps]),
        "flat_packed": (packed, [[flat_batch(st)] for st in steps]),
        "flat_bucket25": (register_bucket(0.25), [[flat_batch(st)] for st in steps]),
        "flat_packed_keep": (packed, [[keep_batch(st)] for st in steps]),
        "rows_neat": ("sdpa", [[neat_batch(st)] for st in steps]),
        "unpacked": ("sdpa", [unpacked_batches(st, k) for k, st in enumerate(steps)]),
    }
    if a.only:
        variants = {k: v for k, v in variants.items() if k in a.only.split(",")}
    print(f"{a.steps} steps x {ROWS} rows of {MAX_LEN}: {n_samples} samples, {sum(step_tokens)} real tokens "
          f"({sum(step_tokens) / (a.steps * ROWS * MAX_LEN):.1%} of the rows); torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {a.rounds} rounds")
    # Same loss everywhere (a check that the variants train the same thing), then warm up.
    with torch.no_grad():
        for name, (attn, batches) in variants.items():
            model.set_attn_implementation(attn)
            if name != "unpacked":
                print(f"  loss {name}: {model(**batches[0][0], use_cache=False).loss.item():.6f}")
    for name, (attn, batches) in variants.items():
        run(model, attn, batches[0])
    rates = {k: [] for k in variants}  # real tokens / s of each timed step
    for r in range(a.rounds):
        k = r % a.steps
        for name, (attn, batches) in variants.items():
            rates[name].append(step_tokens[k] / run(model, attn, batches[k]))
    med = {k: statistics.median(v) for k, v in rates.items()}
    best = {k: max(v) for k, v in rates.items()}
    print("| variant | real tok/s median | vs unpacked | vs rows_neat | real tok/s best | best vs unpacked | best vs rows_neat |")
    print("|---|---|---|---|---|---|---|")
    for name in variants:
        def rel(d, ref):
            return f"{d[name] / d[ref]:.2f}x" if ref in d else "-"
        print(f"| {name} | {med[name]:,.0f} | {rel(med, 'unpacked')} | {rel(med, 'rows_neat')} | "
              f"{best[name]:,.0f} | {rel(best, 'unpacked')} | {rel(best, 'rows_neat')} |")
    print("per-round tok/s:")
    for name, v in rates.items():
        print(f"  {name}: " + " ".join(f"{x:.0f}" for x in v))


if __name__ == "__main__":
    main()
