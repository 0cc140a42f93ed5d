#!/usr/bin/env bash
# The measurements of docs/forget.md, run alone on the machine (about 30 minutes on 2 CPU cores):
#   1. `unlearn forget` on the example policy (examples/policy), timed;
#   2. forgetium's one-call unlearn() on the same prompts (its own venv), scored by our evaluation;
#   3. `unlearn forget` on 100 (question, hallucinated answer) pairs of HaluEval (from a PyPI wheel).
# Usage: bash benchmarks/forget_examples.sh [OUT]   (OUT defaults to runs/forget-examples)
set -euo pipefail
OUT=${1:-runs/forget-examples}
PY=.venv/bin/python
mkdir -p "$OUT"

/usr/bin/time -f "%e s" .venv/bin/unlearn forget --model smollm2-135m --prompts examples/policy/prompts.txt \
    --test-prompts examples/policy/unseen.txt --out "$OUT/policy" --overwrite

FG=${FORGETIUM_VENV:-/work/venv-forgetium}
if [ ! -x "$FG/bin/python" ]; then
    python3 -m venv "$FG"
    "$FG/bin/pip" install --quiet torch==2.13.0
    "$FG/bin/pip" install --quiet forgetium==0.2.1
fi
SMOL=$($PY -c "from unlearn.models.load import ALIASES; print(ALIASES['smollm2-135m']())")
"$FG/bin/python" benchmarks/forgetium_side.py --model "$SMOL" --prompts examples/policy/prompts.txt --out "$OUT/forgetium"
SECONDS_FG=$($PY -c "import json; print(json.load(open('$OUT/forgetium/forgetium.json'))['wall_s'])")
$PY benchmarks/forget_side.py --forget "$OUT/policy" --model "$OUT/forgetium/model" --name "forgetium 0.2.1" \
    --seconds "$SECONDS_FG" --out "$OUT/forgetium/eval"

$PY benchmarks/qa_data.py fetch --out "$OUT/halueval_qa.jsonl"
head -100 "$OUT/halueval_qa.jsonl" > "$OUT/halueval100.jsonl"
/usr/bin/time -f "%e s" .venv/bin/unlearn forget --model smollm2-135m --prompts "$OUT/halueval100.jsonl" \
    --dataset halueval --out "$OUT/halueval" --overwrite
# the model's own wrong answers to 200 questions (docs/forget.md: the run that met the bar)
head -200 "$OUT/halueval_qa.jsonl" > "$OUT/halueval200.jsonl"
/usr/bin/time -f "%e s" .venv/bin/unlearn forget --model smollm2-135m --prompts "$OUT/halueval200.jsonl" \
    --dataset halueval --own-answers --out "$OUT/halueval-own" --overwrite
