#!/usr/bin/env bash
# The mmtune demo: teach a tiny model who it is, on CPU, in a few minutes.
# generate self-cognition data -> LoRA fine-tune -> export -> merge -> chat, with answers before and after;
# then the same fine-tune on a tiny checkpoint in InternLM2's layout (the XTuner course's model).
set -euo pipefail
NAME="${DEMO_NAME:-Nova}"
AUTHOR="${DEMO_AUTHOR:-the mmtune team}"
OUT=demo_out
MMTUNE="${MMTUNE:-mmtune}"
RECIPE=tiny_self_cognition_lora   # built-in recipe; `mmtune copy-cfg tiny_self_cognition_lora .` to see it

rm -rf "$OUT"
echo "== 1. a tiny Qwen2-architecture model (random weights, tokenizer trained locally)"
$MMTUNE make-tiny qwen2 "$OUT/models/tiny-qwen2"

echo "== 2. self-cognition data for '$NAME' by '$AUTHOR'"
$MMTUNE data self-cognition --name "$NAME" --author "$AUTHOR" --repeat 4 -o "$OUT/data/self_cognition.jsonl"
$MMTUNE data check "$OUT/data/self_cognition.jsonl"

echo "== 3. before fine-tuning"
$MMTUNE chat "$OUT/models/tiny-qwen2" --query "who are you?" --query "你是谁" --max-new-tokens 24 | tee "$OUT/before.txt"

echo "== 4. LoRA fine-tune"
$MMTUNE train "$RECIPE" --work-dir "$OUT/work"

echo "== 5. export the adapter to Hugging Face format, then merge it into the base model"
$MMTUNE convert to-hf "$RECIPE" "$OUT/work/final" "$OUT/hf_adapter"
$MMTUNE convert merge "$OUT/models/tiny-qwen2" "$OUT/hf_adapter" "$OUT/merged"

echo "== 6. after fine-tuning (the merged model, chat template picked from what training stored)"
$MMTUNE chat "$OUT/merged" --query "who are you?" --query "你是谁" --max-new-tokens 60 | tee "$OUT/after.txt"

echo "== 7. the same on the XTuner course's model: a tiny checkpoint in InternLM2's own layout and config"
echo "      (mmtune loads it natively, as Llama; the merged export is plain Llama and needs no remote code)"
RECIPE2=tiny_internlm2_self_cognition_lora
$MMTUNE make-tiny internlm2 "$OUT/models/tiny-internlm2"
$MMTUNE train "$RECIPE2" --work-dir "$OUT/work_internlm2"
$MMTUNE convert to-hf "$RECIPE2" "$OUT/work_internlm2/final" "$OUT/hf_adapter_internlm2"
$MMTUNE convert merge "$OUT/models/tiny-internlm2" "$OUT/hf_adapter_internlm2" "$OUT/merged_internlm2"
$MMTUNE chat "$OUT/merged_internlm2" --query "who are you?" --query "你是谁" --max-new-tokens 60 | tee "$OUT/after_internlm2.txt"

if grep -q "$NAME" "$OUT/after.txt" && grep -q "$NAME" "$OUT/after_internlm2.txt"; then
  echo "== demo OK: after fine-tuning both models answer as $NAME (loss curves: $OUT/work/loss.png, $OUT/work_internlm2/loss.png)"
else
  echo "== demo FAILED: the answers after fine-tuning do not mention $NAME" >&2
  exit 1
fi
