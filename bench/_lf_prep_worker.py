"""LLaMA-Factory preprocessing only, run with the lf venv's python by preprocess.py; prints one RESULT line.

    CUDA_VISIBLE_DEVICES= HF_DATASETS_CACHE=$(mktemp -d) /tmp/peer/lf/bin/python bench/_lf_prep_worker.py \
        KIT/lf_sft.yaml DATA_DIR OUT_DIR NUM_WORKERS [packing]

The kit's lf_sft.yaml with dataset_dir=DATA_DIR and preprocessing_num_workers=NUM_WORKERS, then what
LLaMA-Factory's run_sft does before training: load_tokenizer, get_template_and_fix_tokenizer and
get_dataset, which is the step timed (as the kit's run_lf.py times it). Imports only LLaMA-Factory's stack.
"""

import json
import resource
import sys
import time

import yaml

t_start = time.time()
from llamafactory.data import get_dataset, get_template_and_fix_tokenizer  # noqa: E402
from llamafactory.hparams import get_train_args  # noqa: E402
from llamafactory.model import load_tokenizer  # noqa: E402

cfg_path, data_dir, out_dir, workers = sys.argv[1:5]
pack = "packing" in sys.argv[5:]
args = yaml.safe_load(open(cfg_path))
args.update(dataset_dir=data_dir, output_dir=out_dir, preprocessing_num_workers=int(workers), packing=pack)
model_args, data_args, training_args, finetuning_args, _ = get_train_args(args)
t = time.time()
tokenizer_module = load_tokenizer(model_args)
template = get_template_and_fix_tokenizer(tokenizer_module["tokenizer"], data_args)
tok_s = time.time() - t
t = time.time()
module = get_dataset(template, model_args, data_args, training_args, stage="sft", **tokenizer_module)
prep_s = time.time() - t
rows = module["train_dataset"]
n_conv = sum(1 for _ in open(f"{data_dir}/messages.jsonl"))
print("RESULT " + json.dumps({
    "toolkit": "llamafactory", "packing": pack, "workers": int(workers), "conversations": n_conv, "rows": len(rows),
    "tokenizer_s": round(tok_s, 2), "prep_s": round(prep_s, 2), "conv_s": round(n_conv / prep_s, 1),
    "from_cache": False, "wall_s": round(time.time() - t_start, 2),
    "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    "children_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)}), flush=True)
