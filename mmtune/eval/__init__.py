"""Evaluation: multiple choice scored as VLMEvalKit scores it (`run_mmbench`, `run_benchmark` for the
TSV families), text multiple choice (`run_mcq`), text loss / answer matching (`evaluate_text`).

The model side of a benchmark is an answer function (`AnswerFn`: a batch of items -> one reply
each); `make_answerer` builds one from a model path (a text model, or a VLM with its images).
`extract_choice(answer, options, matching="vlmevalkit")` is the answer -> option matcher.
"""

from mmtune.eval.answer import AnswerFn, item_messages, text_answerer, vlm_answerer
from mmtune.eval.load import make_answerer
from mmtune.eval.benchmarks import BENCHMARKS, run_benchmark
from mmtune.eval.circular import add_rotations, circular_accuracy, circular_groups
from mmtune.eval.extract import Extraction, extract_choice, match_answer
from mmtune.eval.mcq import run_mcq
from mmtune.eval.mmbench import MMBenchResult, run_mmbench
from mmtune.eval.text import evaluate_text, run_text_eval
from mmtune.eval.tsv import EvalItem, MMBenchTable, build_prompt, read_mmbench_tsv

__all__ = ["AnswerFn", "BENCHMARKS", "EvalItem", "Extraction", "MMBenchResult", "MMBenchTable", "add_rotations",
           "build_prompt", "circular_accuracy", "circular_groups", "evaluate_text", "extract_choice", "item_messages",
           "make_answerer", "match_answer", "read_mmbench_tsv", "run_benchmark", "run_mcq", "run_mmbench",
           "run_text_eval", "text_answerer", "vlm_answerer"]
