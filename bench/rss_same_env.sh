#!/bin/bash
# peak RSS: plain Trainer in its own venv, plain Trainer in mmtune's venv, mmtune full packed / unpacked / packed without train.chunked_loss
root=$(cd "$(dirname "$0")/.." && pwd)
# usage: bench/rss_same_env.sh [WORK_DIR] > results.jsonl   (peers as bench/README.md sets them up; ~15 min)
out=${1:-/tmp/rss}; mkdir -p "$out"; cd "$out"
for rep in 1 2 3; do
  for run in hf_own hf_mmvenv mm_full_pack mm_full mm_full_pack_plainloss; do
    rm -rf w && mkdir w
    case $run in
      hf_own) CUDA_VISIBLE_DEVICES= /tmp/peer/hf/bin/python /work/shared/peer-bench/baseline_hf.py /tmp/peer/assets w/o ;;
      hf_mmvenv) CUDA_VISIBLE_DEVICES= "$root"/.venv/bin/python /work/shared/peer-bench/baseline_hf.py /tmp/peer/assets w/o ;;
      mm_*) MMTUNE_CACHE=w/c BENCH_WORK_DIR=w/o CUDA_VISIBLE_DEVICES= "$root"/.venv/bin/python "$root"/bench/train_throughput.py --worker $run --assets /tmp/peer/assets --steps 60 --device cpu ;;
    esac 2>/dev/null | grep '^RESULT' | sed "s/^RESULT /{\"name\": \"$run\", \"rep\": $rep, /; s/, {/, /"
  done
done
