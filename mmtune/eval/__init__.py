"""Evaluation: MMBench-style multiple choice (`run_mmbench`) and text loss / answer matching (`evaluate_text`).

The model side of a benchmark is an answer function (`AnswerFn`: a batch of `EvalItem`s -> one
reply each); `make_answerer` builds one from a model path (a text model, or a VLM with its images).
"""

from mmtune.eval.answer import AnswerFn, item_messages, text_answerer, vlm_answerer
from mmtune.eval.load import make_answerer
from mmtune.eval.circular import add_rotations, circular_accuracy, circular_groups
from mmtune.eval.extract import Extraction, extract_choice
from mmtune.eval.mmbench import MMBenchResult, run_mmbench
from mmtune.eval.text import evaluate_text, run_text_eval
from mmtune.eval.tsv import EvalItem, MMBenchTable, build_prompt, read_mmbench_tsv

__all__ = ["AnswerFn", "EvalItem", "Extraction", "MMBenchResult", "MMBenchTable", "add_rotations", "build_prompt",
           "circular_accuracy", "circular_groups", "evaluate_text", "extract_choice", "item_messages",
           "make_answerer", "read_mmbench_tsv", "run_mmbench", "run_text_eval", "text_answerer", "vlm_answerer"]
