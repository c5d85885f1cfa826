#!/usr/bin/env bash
# The mmtune agent demo: a tiny model learns to call tools (weather, calculator, unit conversion), on CPU,
# in about 11 minutes (6 of them building the pre-trained tiny base, once). generated tool data -> full fine-tune ->
# tool calls on held-out questions, before and after.
set -euo pipefail
OUT=demo_out                      # the recipe tiny_tools_full reads its paths from here
MMTUNE="${MMTUNE:-mmtune}"
RECIPE=tiny_tools_full            # `mmtune copy-cfg tiny_tools_full .` to see it
STEPS="${DEMO_TOOL_STEPS:-1000}"
MIN_NAME_ACCURACY="${DEMO_MIN_NAME_ACCURACY:-0.7}"
QUERIES=("What is the weather in Osaka?" "What is 27 times 14?" "Thanks, that is all!")

rm -rf "$OUT/tools" "$OUT/work_tools" "$OUT/tools_eval_before" "$OUT/tools_eval_after"
echo "== 1. a tiny Qwen2-architecture model, pre-trained to copy names and numbers into JSON (minutes, the first time)"
$MMTUNE make-tiny qwen2_tools "$OUT/models/tiny-qwen2-tools"

echo "== 2. tool-call data: 1-3 questions per chat, some small talk that needs no tool; held-out cities, numbers, phrasings"
$MMTUNE data tools -o "$OUT/tools" --n 1500 --heldout 100 --seed 1
$MMTUNE data check "$OUT/tools/train.jsonl"

calls() {  # calls MODEL: the model's reply to each query, with the tools in its prompt (calls shown, not run)
  local q
  for q in "${QUERIES[@]}"; do
    printf '%s\n' "Q: $q"
    $MMTUNE chat "$1" --tools "$OUT/tools/tools.json" --query "$q" --max-new-tokens 60 --prompt-template qwen_chat \
      | sed -n '/^Assistant/,$p' | head -4 | awk '{ line[NR] = $0 } END { for (i = 1; i <= NR; i++) {
          empty = line[i] ~ /^Assistant: *$/      # an empty reply: shown as such unless a tool call follows
          if (!empty) print line[i]; else if (i == NR || line[i + 1] !~ /^\[tool call\]/) print "Assistant: (no answer)" } }'
  done
}
score() {  # score MODEL DIR: tool-name accuracy, argument exact match, JSON valid, no-call accuracy on held-out chats
  $MMTUNE eval tools "$1" --data "$OUT/tools/heldout.jsonl" --prompt-template qwen_chat --work-dir "$2" --no-progress \
    --max-new-tokens 60 > /dev/null
  python3 -c "import json,sys; s=json.load(open(sys.argv[1])); print(' '.join(k + '=' + ('n/a' if s.get(k) is None else
    f'{s[k]:.2f}') for k in ('tool_name_accuracy','argument_exact_match','json_valid_rate','no_call_accuracy')))" "$2/summary.json"
}

echo "== 3. before fine-tuning"
calls "$OUT/models/tiny-qwen2-tools" | tee "$OUT/tools_before.txt"
BEFORE=$(score "$OUT/models/tiny-qwen2-tools" "$OUT/tools_eval_before")
echo "held-out: $BEFORE"

echo "== 4. full fine-tune ($STEPS steps)"
$MMTUNE train "$RECIPE" --work-dir "$OUT/work_tools" --set train.max_steps="$STEPS" --set train.save_steps="$STEPS"

echo "== 5. after fine-tuning"
calls "$OUT/work_tools/final" | tee "$OUT/tools_after.txt"
AFTER=$(score "$OUT/work_tools/final" "$OUT/tools_eval_after")
echo "held-out: $AFTER"

echo "== before: $BEFORE"
echo "== after:  $AFTER"
NAME_ACC=$(python3 -c "import json; print(json.load(open('$OUT/tools_eval_after/summary.json'))['tool_name_accuracy'] or 0)")
if python3 -c "import sys; sys.exit(0 if float('$NAME_ACC') >= float('$MIN_NAME_ACCURACY') else 1)"; then
  echo "== demo OK: the model now calls the right tool for ${NAME_ACC} of held-out questions (loss curve: $OUT/work_tools/loss.png)"
  echo "   (argument exact match: the calls whose values are all the question's; docs/tools.md says what it reaches)"
else
  echo "== demo FAILED: tool-name accuracy after fine-tuning is $NAME_ACC (< $MIN_NAME_ACCURACY)" >&2
  exit 1
fi
