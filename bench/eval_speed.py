"""Questions per second of `run_mmbench` answering one question at a time (batch 1: how VLM
questions were answered before batched generation) and in batches of 8, on the tiny models, CPU.

    python bench/eval_speed.py [--questions 48] [--reps 3]

Same process, same TSV (the synthetic shapes MMBench file), greedy, 8 new tokens at most; the two
modes alternate within each rep and swap order on odd reps; a fresh work dir per run (no resume).
Prints a markdown table of medians. Models: the tiny text Qwen2 (text answerer, images ignored),
the tiny assembled LLaVA and the tiny Qwen2.5-VL (answers with the images).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def models(root: Path):
    from mmtune.eval.answer import eval_settings, text_answerer, vlm_answerer
    from mmtune.infer.load import load_for_inference
    from mmtune.models.llava import build_llava
    from mmtune.testing.tiny import tiny_lm_dir
    from mmtune.testing.tiny_vision import tiny_vision_dir
    from mmtune.testing.tiny_vlm import tiny_vlm_dir

    settings = eval_settings(8)
    text = load_for_inference(str(tiny_lm_dir("qwen2")), template="chatml", device="cpu")
    yield "text qwen2 (tiny)", text_answerer(text.model, text.tokenizer, text.template, settings=settings)
    model, processor = build_llava(str(tiny_lm_dir("qwen2")), str(tiny_vision_dir("clip")))
    model.save_pretrained(root / "llava")
    processor.save_pretrained(root / "llava")
    llava = load_for_inference(str(root / "llava"), template="chatml", device="cpu")
    yield "llava (tiny, assembled)", vlm_answerer(llava, settings=settings)
    qwen = load_for_inference(str(tiny_vlm_dir("qwen2_5_vl")), device="cpu")
    yield "qwen2_5_vl (tiny)", vlm_answerer(qwen, settings=settings)


def main() -> None:
    import torch

    from mmtune.data.synth.shapes import make_shapes_dataset
    from mmtune.eval.mmbench import run_mmbench

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=48)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    root = Path(tempfile.mkdtemp(prefix="eval_speed_"))
    data = make_shapes_dataset(root / "shapes", n=args.questions, seed=3).files["mmbench_dev"]
    rows = []
    for name, answer_fn in models(root):
        times: dict[int, list[float]] = {1: [], 8: []}
        n = 0
        for rep in range(args.reps):
            for batch in ((1, 8) if rep % 2 == 0 else (8, 1)):
                start = time.perf_counter()
                result = run_mmbench(data, answer_fn, root / f"w_{name[:4]}_{rep}_{batch}", batch_size=batch,
                                     progress=False)
                times[batch].append(time.perf_counter() - start)
                n = result.summary["n_rows"]
        one, eight = (n / statistics.median(times[b]) for b in (1, 8))
        rows.append((name, n, one, eight))
        print(f"{name}: {one:.1f} q/s at batch 1, {eight:.1f} q/s at batch 8", flush=True)
    print("\n| model | questions | batch 1 (q/s) | batch 8 (q/s) | speed-up |\n|---|---|---|---|---|")
    for name, n, one, eight in rows:
        print(f"| {name} | {n} | {one:.1f} | {eight:.1f} | {eight / one:.2f}x |")


if __name__ == "__main__":
    main()
