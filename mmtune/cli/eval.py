"""`mmtune eval mmbench|vlm|mcq|tools|text`."""

from __future__ import annotations

from mmtune.cli.common import add_parser

EPILOG = """\
examples:
  mmtune eval mmbench merged --data-path MMBench_DEV_EN.tsv --work-dir work_dirs/mmbench
  mmtune eval mmbench Qwen/Qwen2.5-0.5B-Instruct --adapter hf_adapter --data-path MMBench_TEST_EN.tsv \\
      --work-dir work_dirs/mmbench_test            # writes mmbench_result.xlsx to submit
  mmtune eval mmbench merged --data-path MMBench_DEV_EN.tsv --work-dir out --circular --judge http://127.0.0.1:8000
  mmtune eval text merged --data data/heldout.jsonl --work-dir work_dirs/text_eval
"""

MMBENCH_EPILOG = """\
examples:
  mmtune eval mmbench merged --data-path MMBench_DEV_EN.tsv --work-dir work_dirs/mmbench --batch-size 8
  mmtune eval mmbench exported_llava --data-path MMBench_DEV_EN.tsv --work-dir out
  mmtune eval mmbench internlm/internlm2-chat-7b --llava llava_dir --visual-encoder openai/clip-vit-large-patch14-336 \\
      --prompt-template internlm2_chat --data-path MMBench_DEV_EN.tsv --work-dir out
Rerunning with the same --work-dir resumes: rows already in predictions.jsonl are not asked again.
A text-only MODEL answers without seeing the images; an exported LLaVA MODEL (or --llava) sees them.
"""

VLM_EPILOG = """\
examples:
  mmtune eval vlm merged --benchmark pope --data-path POPE.tsv --work-dir work_dirs/pope
  mmtune eval vlm merged --benchmark mme --data-path MME.tsv --work-dir work_dirs/mme --batch-size 8
  mmtune eval vlm merged --benchmark seedbench --data-path SEEDBench_IMG.tsv --work-dir work_dirs/seed
Multiple choice: mmbench, ccbench (CircularEval over the rotations the file holds), seedbench, ai2d,
scienceqa, mmstar, mcq (any such file). Yes/no: mme, pope, hallusionbench, yes_no (any such file).
"""

MCQ_EPILOG = """\
examples:
  mmtune eval mcq merged --data mmlu/test --dev mmlu/dev --work-dir work_dirs/mmlu            # 5-shot, generative
  mmtune eval mcq merged --data mmlu/test --dev mmlu/dev --mode loglik --work-dir work_dirs/mmlu_ll
  mmtune eval mcq merged --data ceval/val --dev ceval/dev --work-dir work_dirs/ceval --language zh
"""

TOOLS_EPILOG = """\
examples:
  mmtune data tools -o data/tools && mmtune eval tools merged --data data/tools/heldout.jsonl --work-dir work_dirs/tools
"""

TEXT_EPILOG = """\
examples:
  mmtune eval text merged --data data/heldout.jsonl --work-dir work_dirs/text_eval
  mmtune eval text Qwen/Qwen2.5-0.5B-Instruct --adapter hf_adapter --data heldout.json --format alpaca --work-dir out
"""


def register(sub) -> None:
    p = add_parser(sub, "eval", "evaluate a model (MMBench-style multiple choice, text loss and answers)", EPILOG)
    group = p.add_subparsers(dest="eval_command", metavar="BENCHMARK", required=True)

    m = add_parser(group, "mmbench", "multiple-choice accuracy on an MMBench-format TSV", MMBENCH_EPILOG)
    _tsv_args(m)
    m.add_argument("--circular", action="store_true",
                   help="CircularEval: right only if right in every rotation of the options (built when absent)")
    m.set_defaults(func=run_mmbench_cmd)

    v = add_parser(group, "vlm", "a VLMEvalKit-format benchmark TSV, scored as VLMEvalKit scores it", VLM_EPILOG)
    _tsv_args(v)
    v.add_argument("--benchmark", required=True, metavar="NAME",
                   help="one of: " + ", ".join(_benchmark_names()))
    v.set_defaults(func=run_vlm_cmd)

    q = add_parser(group, "mcq", "text multiple choice (MMLU, C-Eval, CMMLU CSVs): accuracy per subject", MCQ_EPILOG)
    _model_args(q)
    q.add_argument("--data", required=True, metavar="PATH", help="a subject's .csv or a directory of them")
    q.add_argument("--dev", metavar="PATH", help="few-shot examples: the dev split (.csv or directory), by subject")
    q.add_argument("--shots", type=int, default=None, help="examples per prompt (default: 5 with --dev, else 0)")
    q.add_argument("--mode", choices=["generate", "loglik"], default="generate",
                   help="generate an answer and match it to an option, or pick the most likely option letter")
    q.add_argument("--language", choices=["auto", "en", "zh"], default="auto",
                   help="prompt language (auto: Chinese when the questions are)")
    q.add_argument("--prompt-template", dest="template", help="template name for --mode generate")
    q.add_argument("--work-dir", required=True, metavar="DIR", help="predictions and summary go here")
    q.add_argument("--batch-size", type=int, default=8)
    q.add_argument("--max-new-tokens", type=int, default=8)
    q.add_argument("--matching", choices=["vlmevalkit", "lenient"], default="vlmevalkit",
                   help="answer -> option rules for --mode generate (see docs/eval.md)")
    q.add_argument("--system", help="system prompt (--mode generate)")
    q.set_defaults(func=run_mcq_cmd)

    tl = add_parser(group, "tools", "tool-call accuracy on held-out tool conversations", TOOLS_EPILOG)
    _model_args(tl)
    tl.add_argument("--data", required=True, metavar="FILE", help="tool conversations (OpenAI or ShareGPT with tools)")
    tl.add_argument("--format", default="auto", help="data format (default: detected)")
    tl.add_argument("--prompt-template", dest="template", help="template name (default: the one stored with the model)")
    tl.add_argument("--work-dir", required=True, metavar="DIR", help="summary.json and predictions.jsonl go here")
    tl.add_argument("--max-new-tokens", type=int, default=128)
    tl.add_argument("--batch-size", type=int, default=8)
    tl.set_defaults(func=run_tools_cmd)

    t = add_parser(group, "text", "loss, perplexity and answer match on a conversation data file", TEXT_EPILOG)
    _model_args(t)
    t.add_argument("--data", required=True, metavar="FILE", help="conversations (any supported data format)")
    t.add_argument("--format", default="auto", help="data format (default: detected)")
    t.add_argument("--prompt-template", dest="template", help="template name (default: the one stored with the model)")
    t.add_argument("--work-dir", required=True, metavar="DIR", help="summary.json and predictions.jsonl go here")
    t.add_argument("--max-new-tokens", type=int, default=64)
    t.add_argument("--max-length", type=int, default=2048, help="longer conversations are cut (default: 2048)")
    t.add_argument("--batch-size", type=int, default=8)
    t.add_argument("--system", help="system prompt for conversations without one")
    t.set_defaults(func=run_text_cmd)


def _benchmark_names() -> list[str]:
    from mmtune.eval.benchmarks import BENCHMARKS

    return list(BENCHMARKS)


def _tsv_args(m) -> None:
    _model_args(m)
    m.add_argument("--llava", metavar="DIR",
                   help="a LLaVA run's output dir (with --visual-encoder, MODEL = the LLM), or an exported LLaVA model")
    m.add_argument("--visual-encoder", metavar="ENC", help="vision encoder path or hub id (with --llava DIR)")
    m.add_argument("--prompt-template", dest="template", help="template name (default: the one stored with the model)")
    m.add_argument("--data-path", required=True, metavar="TSV", help="the benchmark .tsv (dev: with `answer`)")
    m.add_argument("--work-dir", required=True, metavar="DIR", help="predictions, summary and submission files")
    m.add_argument("--batch-size", type=int, default=1, help="questions generated together (left padding)")
    m.add_argument("--judge", metavar="URL", help="OpenAI-compatible server to map unmatched answers to options")
    m.add_argument("--judge-model", metavar="NAME", help="model name on the judge server (default: its first)")
    m.add_argument("--judge-seed", type=int, default=0,
                   help="seed of the random pick after 3 judge replies name no option (as VLMEvalKit; default 0)")
    m.add_argument("--matching", choices=["vlmevalkit", "lenient"], default="vlmevalkit",
                   help="answer -> option rules: VLMEvalKit's exactly (default; scores comparable with published "
                        "ones) or mmtune's lenient ones (docs/eval.md)")
    m.add_argument("--max-new-tokens", type=int, default=32)
    m.add_argument("--system", help="system prompt")


def _model_args(p) -> None:
    p.add_argument("model", metavar="MODEL", help="model directory or hub id (merged or base model)")
    p.add_argument("--adapter", metavar="DIR", help="peft adapter directory to apply on MODEL")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--trust-remote-code", action="store_true", help="allow model code shipped with the model")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def _judge_and_answerer(args):
    from mmtune.errors import MmtuneError
    from mmtune.eval.judge import Judge
    from mmtune.eval.load import make_answerer

    if args.batch_size < 1:
        raise MmtuneError(f"--batch-size must be at least 1, got {args.batch_size}")
    judge = Judge(args.judge, model=args.judge_model, seed=args.judge_seed) if args.judge else None
    answer_fn = make_answerer(args.model, adapter=args.adapter, llava=args.llava, visual_encoder=args.visual_encoder,
                              template=args.template, device=args.device, max_new_tokens=args.max_new_tokens,
                              system=args.system, trust_remote_code=args.trust_remote_code)
    return judge, answer_fn


def run_mmbench_cmd(args) -> int:
    from mmtune.eval.mmbench import run_mmbench

    judge, answer_fn = _judge_and_answerer(args)
    result = run_mmbench(args.data_path, answer_fn, args.work_dir, circular=args.circular,
                         batch_size=args.batch_size, judge=judge, matching=args.matching, progress=args.progress)
    return _print_mcq(result)


def run_vlm_cmd(args) -> int:
    from mmtune.eval.benchmarks import get_benchmark, run_benchmark
    from mmtune.eval.report import print_scores

    bench = get_benchmark(args.benchmark)
    judge, answer_fn = _judge_and_answerer(args)
    result = run_benchmark(bench.name, args.data_path, answer_fn, args.work_dir, batch_size=args.batch_size,
                           judge=judge, matching=args.matching, progress=args.progress)
    if bench.kind == "mcq":
        return _print_mcq(result, bench.title)
    print_scores(result.summary, bench.title)
    print(f"results in {result.work_dir}")
    return 0


def _print_mcq(result, title: str = "MMBench") -> int:
    from mmtune.eval.report import print_summary

    summary = result.summary
    if summary["split"] == "dev":
        print_summary(summary, title=title)
    else:
        print(f"test split: {summary['n_rows']} answers, {summary['unmatched']} unmatched; "
              f"submit {result.files['submission']} to the benchmark's server")
    if summary["unmatched"]:
        print(f"unmatched answers listed in {result.files['unmatched']}")
    print(f"results in {result.work_dir}")
    return 0


def run_mcq_cmd(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from mmtune.errors import MmtuneError
    from mmtune.eval.load import make_answerer, make_loglik_answerer
    from mmtune.eval.mcq import run_mcq

    if args.batch_size < 1:
        raise MmtuneError(f"--batch-size must be at least 1, got {args.batch_size}")
    shots = args.shots if args.shots is not None else (5 if args.dev else 0)
    if args.mode == "loglik":
        answer_fn = make_loglik_answerer(args.model, adapter=args.adapter, device=args.device,
                                         trust_remote_code=args.trust_remote_code)
    else:
        answer_fn = make_answerer(args.model, adapter=args.adapter, template=args.template, device=args.device,
                                  max_new_tokens=args.max_new_tokens, system=args.system,
                                  trust_remote_code=args.trust_remote_code)
    summary = run_mcq(args.data, answer_fn, args.work_dir, dev=args.dev, shots=shots, mode=args.mode,
                      language=args.language, batch_size=args.batch_size, matching=args.matching,
                      progress=args.progress)
    table = Table(title=f"multiple choice ({args.mode}, {shots}-shot)")
    for column, justify in (("Subject", "left"), ("Accuracy (%)", "right"), ("N", "right")):
        table.add_column(column, justify=justify)
    for subject, acc in summary["per_subject"].items():
        table.add_row(subject, f"{100 * acc:.1f}", str(summary["per_subject_n"][subject]))
    table.add_section()
    table.add_row("[bold]Overall[/bold]", f"[bold]{100 * summary['overall']:.1f}[/bold]", str(summary["n"]))
    table.add_row("macro (mean of subjects)", f"{100 * summary['macro']:.1f}", str(len(summary["per_subject"])))
    Console().print(table)
    if args.mode == "generate":
        print(f"unmatched answers: {summary['unmatched']} of {summary['n']}")
    print(f"results in {args.work_dir}")
    return 0


def run_tools_cmd(args) -> int:
    from mmtune.eval.tools import run_tool_eval

    summary = run_tool_eval(args.model, args.data, args.work_dir, adapter=args.adapter, template=args.template,
                            data_format=args.format, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                            device=args.device, trust_remote_code=args.trust_remote_code)

    def pct(key):
        return "-" if summary[key] is None else f"{100 * summary[key]:.1f}%"

    print(f"{summary['n']} cases ({summary['n_call']} need a tool call, {summary['n_no_call']} do not)")
    print(f"tool name accuracy {pct('tool_name_accuracy')}, argument exact match {pct('argument_exact_match')}, "
          f"JSON valid {pct('json_valid_rate')}, called when it should not {pct('false_call_rate')}")
    print(f"results in {args.work_dir}")
    return 0


def run_text_cmd(args) -> int:
    from mmtune.eval.text import run_text_eval

    summary = run_text_eval(args.model, args.data, args.work_dir, adapter=args.adapter, format=args.format,
                            template=args.template, max_new_tokens=args.max_new_tokens, max_length=args.max_length,
                            batch_size=args.batch_size, system=args.system, device=args.device,
                            trust_remote_code=args.trust_remote_code, progress=args.progress)
    parts = [f"{k} {summary[k]:.4g}" for k in ("loss", "perplexity", "exact_match", "contains_match")
             if isinstance(summary.get(k), float)]
    print(f"{summary['n']} conversations, {summary['n_tokens']} answer tokens: " + ", ".join(parts))
    print(f"results in {args.work_dir}")
    return 0
