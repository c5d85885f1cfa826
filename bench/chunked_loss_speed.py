"""Chunked loss vs the plain loss on a large vocabulary: forward + backward time by tokens per chunk.

The head of a Qwen2-0.5B-sized model (vocabulary 151,936, hidden 896) on 1,024 tokens, float32,
weights at a typical init scale (logits of a few units: random N(0, 1) weights would make most
softmax values subnormal, which CPUs compute very slowly). Head frozen (LoRA) and trained (full).
Each cell is the best of 2 runs, after a warm-up.

    .venv/bin/python bench/chunked_loss_speed.py [--vocab 151936 --hidden 896 --tokens 1024]
"""

from __future__ import annotations

import argparse
import time

import torch

from mmtune.models.chunked_loss import CHUNK_ELEMENTS, CPU_CHUNK_ELEMENTS, linear_cross_entropy, rows_per_chunk


def best_time(fn, reps: int = 2) -> float:
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vocab", type=int, default=151936)
    p.add_argument("--hidden", type=int, default=896)
    p.add_argument("--tokens", type=int, default=1024)
    p.add_argument("--rows", type=int, nargs="+", default=[27, 64, 128, 256, 512])
    a = p.parse_args()
    torch.manual_seed(0)
    hidden = torch.randn(a.tokens, a.hidden, requires_grad=True)
    targets = torch.randint(0, a.vocab, (a.tokens,))
    print(f"vocabulary {a.vocab}, hidden {a.hidden}, {a.tokens} tokens, float32, {torch.get_num_threads()} threads; "
          f"default rows per chunk: CPU {rows_per_chunk(a.vocab, CPU_CHUNK_ELEMENTS)}, "
          f"GPU {rows_per_chunk(a.vocab, CHUNK_ELEMENTS)}\n")
    print("| head | " + " | ".join(f"{r} rows/chunk" for r in a.rows) + " | plain loss |")
    print("|---|" + "---|" * (len(a.rows) + 1))
    for trains in (False, True):
        weight = (torch.randn(a.vocab, a.hidden) * 0.02).requires_grad_(trains)

        def chunked(rows):
            return lambda: linear_cross_entropy(hidden, weight, None, targets, chunk_rows=rows).backward()

        def plain():
            torch.nn.functional.cross_entropy(torch.nn.functional.linear(hidden, weight), targets).backward()

        cells = [f"{best_time(chunked(r)):.2f} s" for r in a.rows] + [f"{best_time(plain):.2f} s"]
        hidden.grad = weight.grad = None
        print(f"| {'trained (full)' if trains else 'frozen (LoRA)'} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
