"""`mmtune train CONFIG`."""

from __future__ import annotations

from mmtune.cli.common import add_parser, add_set_option

EPILOG = """\
examples:
  mmtune train my_recipe.yaml
  mmtune train qwen2_5_0_5b_instruct_lora --work-dir work_dirs/qwen --set train.max_steps=300
  mmtune train my_recipe.yaml --resume auto          # continue from the newest complete checkpoint
  mmtune train my_recipe.yaml --deepspeed zero2

multi-GPU / multi-node (torchrun is started for you; see docs/distributed.md):
  NPROC_PER_NODE=8 mmtune train my_recipe.yaml --deepspeed zero3
  NPROC_PER_NODE=8 NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 MASTER_PORT=29500 mmtune train my_recipe.yaml
  torchrun --nproc_per_node 4 -m mmtune train my_recipe.yaml --fsdp full_shard

The work dir receives checkpoint-N/ (resumable), final/ (adapter or full model + tokenizer),
train.log, config.yaml (the resolved recipe), samples.jsonl (answers to evaluation_inputs),
tensorboard/ and loss.png.
"""


def register(sub) -> None:
    p = add_parser(sub, "train", "fine-tune a model from a recipe", EPILOG)
    p.add_argument("config", metavar="CONFIG", help="recipe YAML file or built-in recipe name (see list-cfg)")
    p.add_argument("--work-dir", help="output directory (default: recipe work_dir or work_dirs/<recipe name>)")
    p.add_argument("--resume", metavar="auto|PATH", help="resume from the newest checkpoint (auto) or a checkpoint dir")
    p.add_argument("--resume-changed", action="store_true",
                   help="resume although the recipe or data changed since the checkpoint (the changes are logged)")
    p.add_argument("--overwrite", action="store_true",
                   help="start over in a work dir that holds an earlier run (deletes its checkpoints and final/)")
    p.add_argument("--deepspeed", metavar="zero1|zero2|zero2_offload|zero3|zero3_offload|FILE",
                   help="train with DeepSpeed ZeRO (shipped config name or JSON file; \"auto\" fields come from the recipe)")
    p.add_argument("--fsdp", choices=["full_shard", "shard_grad_op"], help="train with PyTorch FSDP (shard params+grads+optimizer, or grads+optimizer)")
    p.add_argument("--fsdp-offload", action="store_true", help="with --fsdp: keep parameters and optimizer states in CPU RAM")
    add_set_option(p)
    p.set_defaults(func=run)


def default_work_dir(recipe, config: str) -> str:
    from pathlib import Path

    return recipe.work_dir or str(Path("work_dirs") / (recipe.name or Path(config).stem))


def run(args) -> int:
    from mmtune.config.load import load_config
    from mmtune.config.strategy import Strategy
    from mmtune.models.load import pick_device
    from mmtune.train import launch
    from mmtune.train.run import run_training

    recipe = load_config(args.config, args.set)
    strategy = Strategy.from_flags(args.deepspeed, args.fsdp, args.fsdp_offload)
    strategy.check(recipe.method.type, pick_device(recipe.train.device))
    work_dir = args.work_dir or default_work_dir(recipe, args.config)
    plan = launch.plan_from_env()  # NPROC_PER_NODE=N ...: run this command again under torchrun
    if plan is not None:
        return launch.launch(plan, worker_args(args, work_dir))
    result = run_training(recipe, work_dir, resume=args.resume, strategy=strategy, overwrite=args.overwrite,
                          resume_changed=args.resume_changed)
    launch.finish()
    if launch.is_main_process():
        print(f"done: final model in {result.final_dir}")
    return 0


def worker_args(args, work_dir: str) -> list[str]:
    """The `mmtune train ...` arguments each torchrun worker runs with (same run, explicit work dir)."""
    out = ["train", args.config, "--work-dir", work_dir]
    for flag, value in (("--resume", args.resume), ("--deepspeed", args.deepspeed), ("--fsdp", args.fsdp)):
        if value:
            out += [flag, value]
    if args.fsdp_offload:
        out.append("--fsdp-offload")
    if args.overwrite:
        out.append("--overwrite")
    if args.resume_changed:
        out.append("--resume-changed")
    for item in args.set:
        out += ["--set", item]
    return out
