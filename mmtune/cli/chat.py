"""`mmtune chat MODEL`."""

from __future__ import annotations

import sys

from mmtune.cli.common import add_parser

EPILOG = """\
examples:
  mmtune chat merged                                   # template stored at export is used
  mmtune chat Qwen/Qwen2.5-0.5B-Instruct --adapter hf_adapter
  mmtune chat merged --system "You are Nova." --temperature 0.7 --top-p 0.9
  mmtune chat merged --query "who are you?" --query "你是谁"   # answer each and exit (scripts)
  mmtune chat llava_hf --image cat.jpg                          # an exported vision-language model
  mmtune chat llava_hf --image a.jpg --image b.jpg --query "Are the two shapes the same?"
  mmtune chat LLM --visual-encoder openai/clip-vit-large-patch14-336 --llava work_dirs/llava/final --image cat.jpg
  mmtune chat merged --tools data/tools/tools.json      # shows tool calls; demo tools answer, else you type the result
In the interactive chat, `clear` resets the conversation and `exit` quits.
"""


def register(sub) -> None:
    p = add_parser(sub, "chat", "chat with a model in the terminal", EPILOG)
    p.add_argument("model", metavar="MODEL", help="model directory or hub id (merged or base model)")
    p.add_argument("--adapter", help="peft adapter directory to apply on MODEL")
    p.add_argument("--prompt-template", help="template name (default: the one stored with the model)")
    p.add_argument("--system", help="system prompt")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default: 0)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--trust-remote-code", action="store_true", help="allow model code shipped with the model")
    p.add_argument("--image", action="append", default=[], metavar="PATH",
                   help="image for the conversation (repeatable; needs a vision-language model)")
    p.add_argument("--visual-encoder", metavar="ENC", help="with --llava: the vision encoder the LLaVA run used")
    p.add_argument("--llava", metavar="DIR", help="a LLaVA run's final/ or checkpoint dir (projector and/or adapter); MODEL is then the LLM")
    p.add_argument("--tools", metavar="FILE", help="tool definitions (a JSON list, OpenAI style) the model may call")
    p.add_argument("--query", action="append", metavar="TEXT",
                   help="answer this question in a fresh conversation and exit instead of chatting (repeatable)")
    p.set_defaults(func=run)


def run(args) -> int:
    from mmtune.infer.chat import answer, chat_loop
    from mmtune.infer.engine import GenerationSettings
    from mmtune.infer.load import load_for_inference

    from mmtune.data.images import open_image
    from mmtune.errors import MmtuneError
    from mmtune.infer.load import load_llava_parts

    if bool(args.llava) != bool(args.visual_encoder):
        raise MmtuneError("--llava and --visual-encoder go together", hint="mmtune chat LLM --visual-encoder ENC --llava DIR")
    images = [open_image(path, f"--image {path}") for path in args.image]
    if args.llava:
        loaded = load_llava_parts(args.model, args.visual_encoder, args.llava, template=args.prompt_template,
                                  device=args.device, trust_remote_code=args.trust_remote_code)
    else:
        loaded = load_for_inference(args.model, adapter=args.adapter, template=args.prompt_template,
                                    device=args.device, trust_remote_code=args.trust_remote_code)
    if images and loaded.vision is None:
        raise MmtuneError(f"{args.model!r} is a text-only model: it cannot take --image")
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                  top_p=args.top_p, seed=args.seed)
    tools = load_tools(args.tools) if args.tools else None
    if tools and images:
        raise MmtuneError("--tools cannot be combined with --image yet (tool calls are for text models)")
    if args.query:
        from mmtune.data.conversation import Message
        from mmtune.infer.chat import answer_with_tools

        def write(s):
            sys.stdout.write(s)
            sys.stdout.flush()

        for q in args.query:
            history = [Message("system", args.system)] if args.system else []
            write(f"User: {q}\nAssistant: ")
            if tools:
                answer_with_tools(loaded, history, q, settings, write, tools,
                                  lambda prompt: (write(prompt), sys.stdin.readline().strip())[1])
            else:
                answer(loaded, history, q, settings, write, images)
            write("\n")
        return 0
    chat_loop(loaded, settings, system=args.system, images=images, tools=tools)
    return 0


def load_tools(path: str) -> list[dict]:
    """Tool definitions from a JSON file (a list of OpenAI tools or bare functions), checked."""
    import json
    from pathlib import Path

    from mmtune.data.formats.tools import read_tools
    from mmtune.errors import DataError

    file = Path(path)
    if not file.is_file():
        raise DataError("file not found", where=path)
    try:
        value = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"not a JSON file ({e})", where=path) from None
    return read_tools(value, path, "tools")
