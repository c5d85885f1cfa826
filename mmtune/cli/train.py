"""`mmtune train CONFIG`."""

from __future__ import annotations

from mmtune.cli.common import add_parser, add_set_option

EPILOG = """\
examples:
  mmtune train my_recipe.yaml
  mmtune train qwen2_5_0_5b_instruct_lora --work-dir work_dirs/qwen --set train.max_steps=300
  mmtune train my_recipe.yaml --resume auto          # continue from the newest complete checkpoint
  mmtune train my_recipe.yaml --deepspeed zero2

The work dir receives checkpoint-N/ (resumable), final/ (adapter or full model + tokenizer),
train.log, config.yaml (the resolved recipe), samples.jsonl (answers to evaluation_inputs),
tensorboard/ and loss.png.
"""


def register(sub) -> None:
    p = add_parser(sub, "train", "fine-tune a model from a recipe", EPILOG)
    p.add_argument("config", metavar="CONFIG", help="recipe YAML file or built-in recipe name (see list-cfg)")
    p.add_argument("--work-dir", help="output directory (default: recipe work_dir or work_dirs/<recipe name>)")
    p.add_argument("--resume", metavar="auto|PATH", help="resume from the newest checkpoint (auto) or a checkpoint dir")
    p.add_argument("--deepspeed", metavar="zero1|zero2|zero3|FILE", help="train with DeepSpeed ZeRO (config name or JSON file)")
    add_set_option(p)
    p.set_defaults(func=run)


def default_work_dir(recipe, config: str) -> str:
    from pathlib import Path

    return recipe.work_dir or str(Path("work_dirs") / (recipe.name or Path(config).stem))


def run(args) -> int:
    from mmtune.config.load import load_config
    from mmtune.train.deepspeed import resolve_deepspeed
    from mmtune.train.run import run_training

    recipe = load_config(args.config, args.set)
    ds = resolve_deepspeed(args.deepspeed) if args.deepspeed else None
    result = run_training(recipe, args.work_dir or default_work_dir(recipe, args.config), resume=args.resume, deepspeed=ds)
    print(f"done: final model in {result.final_dir}")
    return 0
