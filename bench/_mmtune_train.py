"""One mmtune training run on the peer-bench assets, in this process; prints one `RESULT {json}` line.

Run by train_throughput.py in a fresh subprocess per run (clean RSS, threads, caches):

    MMTUNE_CACHE=$(mktemp -d) python bench/train_throughput.py --worker mm_full_pack --assets /tmp/peer/assets

Hyper-parameters are the kit's (/work/shared/peer-bench/README.md, section 3). Everything goes through
mmtune's public API (`validate_recipe`, `run_training(extra_callbacks=...)`); the only patches are two
timers around the functions run_training calls for preprocessing (`encoded_data`, `train_rows`).

MFU (only when the run is on CUDA and --peak-tflops is given) counts model FLOPs per run as

    flops = k * N * T  +  12 * L * H * sum_i(len_i ** 2) / 2

- T: real (non-pad) tokens trained; N: parameters doing a matmul per token (tied embedding counted
  once, as the LM head); k = 6 for a full fine-tune (forward 2N, input grads 2N, weight grads 2N).
  For LoRA the frozen base weights get no weight gradient: k*N is 4*N_frozen + 6*N_lora.
- Attention (PaLM appendix B): per layer QK^T and AV cost 4*len^2*H forward, x3 with the backward,
  so 12*L*H*len^2 per sequence; causal masking halves it. len_i runs over every *sample*: one padded
  row is one sample (its real length: pad FLOPs are not useful work); a packed row counts each
  sample separately (block-diagonal attention), never the row length.
- mfu = flops / train_runtime_s / (peak_tflops * 1e12). Pad tokens and masked attention blocks the
  kernels compute anyway are not counted, so padding lowers MFU.
"""

from __future__ import annotations

import json
import os
import sys
import time

VARIANTS = {  # name -> (method, packing, train.chunked_loss, train.fused_layers)
    "mm_full": ("full", False, True, True),
    "mm_lora": ("lora", False, True, True),
    "mm_full_pack": ("full", True, True, True),
    "mm_lora_pack": ("lora", True, True, True),
    "mm_full_pack_plainloss": ("full", True, False, True),  # transformers' own loss, for the chunked loss's effect
    "mm_full_pack_unfused": ("full", True, True, False),  # transformers' RMSNorm / MLP, for the fused layers' effect
}


def recipe_dict(assets: str, method: str, pack: bool, steps: int, device: str = "cpu", save_steps: int = 10**9,
                chunked_loss: bool = True, fused_layers: bool = True) -> dict:
    """The kit's settings as an mmtune recipe (fp32, micro-batch 4, lr 1e-4 linear, no warmup, ...)."""
    return {
        "model": {"path": assets, "dtype": "float32", "attn_implementation": "sdpa"},
        "data": {"datasets": [{"path": f"{assets}/data/messages.jsonl", "format": "openai"}], "template": "chatml",
                 "max_length": 1024, "pack_to_max_length": pack, "overlong": "truncate", "num_proc": 1},
        "method": {"type": method, "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"}},
        "train": {"max_steps": steps, "micro_batch_size": 4, "gradient_accumulation": 1, "lr": 1e-4,
                  "weight_decay": 0.0, "optimizer": "adamw_torch_fused",  # transformers' default, which the peers use
                  "scheduler": "linear", "warmup_ratio": 0.0, "max_grad_norm": 1.0, "precision": "fp32",
                  "gradient_checkpointing": False, "chunked_loss": chunked_loss,
                  "fused_layers": fused_layers, "seed": 42, "logging_steps": 10, "save_steps": save_steps,
                  "save_total_limit": 1, "dataloader_workers": 0, "device": device},
        "eval": {"evaluation_inputs": []},
    }


def batch_stats(batch: dict) -> tuple[int, int, int, list[int]]:
    """(real tokens, padded positions, sum of squared sample lengths, sample lengths) of one micro-batch."""
    ids = batch["input_ids"]
    if "attention_mask" in batch:  # PaddingCollator: one sample per row, right-padded
        lens = batch["attention_mask"].sum(dim=1).tolist()
    else:  # FlatCollator: packed samples in one row, position ids restart at 0 per sample
        pos = batch["position_ids"].flatten().tolist()
        starts = [i for i, p in enumerate(pos) if p == 0] + [len(pos)]
        lens = [b - a for a, b in zip(starts, starts[1:])]
    return int(sum(lens)), int(ids.numel()), int(sum(n * n for n in lens)), [int(n) for n in lens]


def make_callbacks(save_checkpoints: bool):
    from transformers import TrainerCallback

    class TokenCounter(TrainerCallback):
        """Wraps the train dataloader's collate_fn (run_training builds the collator itself) and records
        every collated micro-batch. accelerate's dataloader collates one batch ahead, so only the first
        global_step * grad_accum batches were trained on."""

        def __init__(self):
            self.batches: list[tuple[int, int, int, list[int]]] = []
            self.info: dict = {}

        def on_train_begin(self, args, state, control, model=None, train_dataloader=None, **kwargs):
            loader = getattr(train_dataloader, "base_dataloader", train_dataloader)  # accelerate's adapter wraps it
            inner = loader.collate_fn

            def counting(rows):
                batch = inner(rows)
                self.batches.append(batch_stats(batch))
                return batch

            loader.collate_fn = counting
            seen, total, trainable = set(), 0, 0
            for p in model.parameters():
                if id(p) not in seen:  # tied embedding / LM head once
                    seen.add(id(p))
                    total += p.numel()
                    trainable += p.numel() if p.requires_grad else 0
            cfg = model.config
            self.info = {"params": total, "trainable": trainable, "layers": cfg.num_hidden_layers,
                         "hidden": cfg.hidden_size, "device": str(next(model.parameters()).device)}

        def on_train_end(self, args, state, control, **kwargs):
            self.info["global_step"] = state.global_step
            self.info["micro_steps"] = state.global_step * args.gradient_accumulation_steps

        def trained(self):
            return self.batches[: self.info["micro_steps"]]

    class NoCheckpointSave(TrainerCallback):
        """The peers run with save_strategy "no"; mmtune always saves (and at the last step), which a
        recipe cannot turn off. Suppress it so the train loop times compare like for like."""

        def on_step_end(self, args, state, control, **kwargs):
            control.should_save = False
            return control

    class SteadyTimer(TrainerCallback):
        """Times the optimizer steps after the first `skip` (CUDA: start-up, kernel selection and the
        allocator's growth stay out), synchronizing the device at both ends."""

        def __init__(self, skip: int = 10):
            self.skip, self.t = skip, {}

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step in (self.skip, state.max_steps):
                import torch

                if torch.cuda.is_available() and torch.cuda.is_initialized():
                    torch.cuda.synchronize()
                self.t[state.global_step] = time.perf_counter()

        def seconds(self, last_step: int) -> float | None:
            return self.t[last_step] - self.t[self.skip] if self.skip in self.t and last_step in self.t else None

    counter = TokenCounter()
    counter.timer = SteadyTimer()
    return counter, [counter, counter.timer] + ([] if save_checkpoints else [NoCheckpointSave()])


def model_flops(info: dict, real_tokens: int, sum_len_sq: int, method: str) -> float:
    n, n_train = info["params"], info["trainable"]
    dense = 6 * n * real_tokens if method == "full" else (4 * (n - n_train) + 6 * n_train) * real_tokens
    return dense + 12 * info["layers"] * info["hidden"] * sum_len_sq / 2


def stub_training_step() -> None:
    """Make every Trainer step a no-op that returns loss 0 (no forward/backward): the data pipeline,
    sampler and collator run as in a real run, so the tokens counted are the ones a real run trains on."""
    import torch
    from transformers import Trainer

    Trainer.training_step = lambda self, model, inputs, *a, **kw: torch.tensor(0.0)


def worker(name: str, assets: str, steps: int, device: str, peak_tflops: float | None, save_checkpoints: bool,
           dry: bool = False) -> None:
    import tempfile

    from _runner import emit, mmtune_rev, peak_rss_mb

    rev = mmtune_rev()  # before torch is imported: a forked git would count the parent's RSS as its own

    import torch

    import mmtune.train.run as run
    from mmtune.config.load import validate_recipe

    t_start = time.time()
    method, pack, chunked, fused = VARIANTS[name]
    data = recipe_dict(assets, method, pack, steps, device, chunked_loss=chunked, fused_layers=fused)
    for section, values in json.loads(os.environ.get("BENCH_RECIPE", "{}")).items():  # bench/gpu/speed.py
        data[section] = {**data.get(section, {}), **values}
    recipe = validate_recipe(data, where=f"bench {name}")
    timing = {"encode_s": 0.0, "pack_s": 0.0}
    encode_once, train_rows = run.build_data.encoded_data, run.build_data.train_rows

    def timed_encode(*a, **kw):
        t = time.perf_counter()
        out = encode_once(*a, **kw)
        timing["encode_s"] += time.perf_counter() - t
        return out

    def timed_rows(*a, **kw):
        t = time.perf_counter()
        out = train_rows(*a, **kw)
        timing["pack_s"] += time.perf_counter() - t
        return out

    run.build_data.encoded_data, run.build_data.train_rows = timed_encode, timed_rows
    if dry:
        stub_training_step()
    counter, callbacks = make_callbacks(save_checkpoints)
    work_dir = os.environ.get("BENCH_WORK_DIR") or tempfile.mkdtemp(prefix=f"mmtune-{name}-")
    res = run.run_training(recipe, work_dir, extra_callbacks=callbacks)
    if res.data.from_cache:
        sys.exit("the tokenized data came from the cache: point MMTUNE_CACHE at a fresh directory")
    batches = counter.trained()
    if len(batches) != counter.info["micro_steps"]:
        sys.exit(f"counted {len(batches)} micro-batches for {counter.info['micro_steps']} micro-steps")
    real, padded, len_sq = (sum(b[i] for b in batches) for i in range(3))
    end = next(h for h in reversed(res.log_history) if "train_runtime" in h)
    rt = end["train_runtime"]
    losses = [(h["step"], h["loss"]) for h in res.log_history if "loss" in h]
    last10 = None  # the Trainer logs the mean loss since its previous log: steps 51-60 at step 60
    if len(losses) >= 2 and losses[-1][0] == counter.info["global_step"] and losses[-1][0] - losses[-2][0] == 10:
        last10 = round(losses[-1][1], 4)
    out = {
        "toolkit": "mmtune", "mmtune_rev": rev, "method": method, "packing": pack, "chunked_loss": chunked, "fused_layers": fused,
        "torch": torch.__version__, "threads": torch.get_num_threads(), "steps": counter.info["global_step"],
        "real_tokens": real, "padded_tokens": padded, "train_runtime_s": round(rt, 2),
        "real_tok_s": round(real / rt, 1), "padded_tok_s": round(padded / rt, 1),
        "pad_fraction": round(1 - real / padded, 4),
        "prep_s": round(timing["encode_s"] + timing["pack_s"], 2), "encode_s": round(timing["encode_s"], 2),
        "pack_s": round(timing["pack_s"], 3), "wall_s": round(time.time() - t_start, 2),
        **peak_rss_mb(),
        "final_loss": round(end["train_loss"], 4), "loss_last10": last10,
        "samples": res.data.samples, "rows": res.data.rows, "truncated": res.data.truncated,
        "ckpt_save_in_loop": save_checkpoints, "device": counter.info["device"],
    }
    if dry:
        out.update(dry=True, sample_lengths=[n for b in batches for n in b[3]])
    if counter.info["device"].startswith("cuda"):
        flops = model_flops(counter.info, real, len_sq, method)
        out["achieved_tflops"] = round(flops / rt / 1e12, 3)
        out["mfu"] = round(flops / rt / (peak_tflops * 1e12), 4) if peak_tflops else None
        out["cuda_peak_mem_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        out["cuda_peak_reserved_mb"] = round(torch.cuda.max_memory_reserved() / 2**20, 1)
        steady_s = counter.timer.seconds(counter.info["global_step"])
        if steady_s:  # the steps after the first `skip`: their micro-batches only
            ga = counter.info["micro_steps"] // counter.info["global_step"]
            later = batches[counter.timer.skip * ga:]
            s_real, s_sq = sum(b[0] for b in later), sum(b[2] for b in later)
            s_flops = model_flops(counter.info, s_real, s_sq, method)
            out["steady_steps"] = counter.info["global_step"] - counter.timer.skip
            out["steady_real_tok_s"] = round(s_real / steady_s, 1)
            out["steady_mfu"] = round(s_flops / steady_s / (peak_tflops * 1e12), 4) if peak_tflops else None
    emit(out)
