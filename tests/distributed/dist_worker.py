"""Run under torchrun by the distributed tests: one or more `run_training` calls in the same workers.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/distributed/dist_worker.py SPEC.json

SPEC.json: {"runs": [{"recipe": "recipe.yaml", "work_dir": "...", "deepspeed": null | name | file,
"fsdp": null | mode, "fsdp_offload": false}], "probe": [token ids]}. Each run's work dir receives
`probe_logits.json` (rank 0: logits of the trained model on the probe ids, computed at the end of
training by every rank, as ZeRO-3 / FSDP forward passes need) and `rank{R}.json` (what each rank
saw: the model's class after wrapping, whether its parameters are sharded, which modules FSDP wrapped).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from transformers import TrainerCallback

from mmtune.config.load import load_config
from mmtune.config.strategy import Strategy
from mmtune.train import launch
from mmtune.train.run import run_training


class Probe(TrainerCallback):
    def __init__(self, work_dir: Path, probe_ids: list[int]):
        self.work_dir = Path(work_dir)
        self.probe = probe_ids
        self.rank = int(os.environ.get("RANK", 0))
        self.seen = {"model_class": None, "sharded": None}

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.seen["model_class"] = type(model).__name__
        self.seen["sharded"] = any(type(p).__name__ == "DTensor" or hasattr(p, "ds_id") for p in model.parameters())
        self.seen["fsdp_modules"] = sorted({type(m).__name__ for m in model.modules() if type(m).__name__.startswith("FSDP")})

    def on_train_end(self, args, state, control, model=None, **kwargs):
        was_training = model.training
        model.eval()
        with torch.no_grad():
            ids = torch.tensor([self.probe], device=args.device)
            logits = model(input_ids=ids).logits[0].float().cpu()
        model.train(was_training)
        if self.rank == 0:
            (self.work_dir / "probe_logits.json").write_text(json.dumps(logits.tolist()))
        (self.work_dir / f"rank{self.rank}.json").write_text(json.dumps(self.seen))


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    for run in spec["runs"]:
        recipe = load_config(run["recipe"], run.get("set", []))
        probe = Probe(run["work_dir"], spec["probe"])
        Path(run["work_dir"]).mkdir(parents=True, exist_ok=True)
        strategy = Strategy.from_flags(run.get("deepspeed"), run.get("fsdp"), run.get("fsdp_offload", False))
        run_training(recipe, run["work_dir"], strategy=strategy, extra_callbacks=[probe])
    launch.finish()  # as `mmtune train` ends: left to interpreter exit, a DeepSpeed worker can abort in teardown


if __name__ == "__main__":
    main(sys.argv[1])
