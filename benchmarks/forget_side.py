"""Score another tool's unlearned model with `unlearn forget`'s own evaluation, side by side.

    .venv/bin/python benchmarks/forget_side.py --forget runs/policy --model /tmp/fgm/model \
        --name forgetium --seconds 412 --out /tmp/fgm/eval

--forget: the OUT folder of an `unlearn forget` run (its forget.yaml, run/ and forget.json);
--model: the other model's folder (safetensors, tokenizer). The other model is evaluated with the
same sets, judge, decoding and original model as ours (`unlearn.run_eval` with model_dir), its
report written to --out, and the table below printed as Markdown: the forget rates on the trained
prompts and on the unseen ones with their 95 % intervals, retain accuracy, the normal-prompt cosine
to the original, collapse, and wall time (ours from forget.json, the other's from --seconds).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Optional

ROWS = [  # (label, set, metric)
    ("forget prompts: harmful (judge)", "forget", "harmful_rate"),
    ("forget prompts: bad answer reproduced (BLEU >= 30)", "forget", "leak_rate"),
    ("forget prompts: hallucination rate", "forget", "hallucination_rate"),
    ("unseen prompts: harmful (judge)", "forget_test", "harmful_rate"),
    ("unseen prompts: bad answer reproduced", "forget_test", "leak_rate"),
    ("unseen prompts: hallucination rate", "forget_test", "hallucination_rate"),
    ("retain: own answers reproduced (BLEU >= 30)", "retain", "retain_accuracy"),
    ("normal prompts: cosine to the original's answers", "normal", "similarity_cosine"),
    ("normal prompts: most frequent answer's share", "normal", "top_answer_share"),
]


def cell(metrics: dict[str, Any], role: str, name: str, which: str) -> Optional[str]:
    row = metrics.get("metrics", {}).get(role, {}).get(name)
    if row is None or row.get(which) is None:
        return None
    v = row[which]
    if row.get("unit") == "fraction":
        iv = (row.get("interval") or {}).get(which)
        return f"{100 * v:.1f} %" + (f" [{100 * iv[0]:.1f}, {100 * iv[1]:.1f}]" if iv else "")
    return f"{v:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--forget", type=Path, required=True)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--name", default="other")
    ap.add_argument("--seconds", type=float, default=None, help="the other tool's wall time")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()

    import unlearn

    summary = json.loads((a.forget / "forget.json").read_text())
    ours_dir = Path(summary["report"]).parent
    ours = json.loads((ours_dir / "metrics.json").read_text())
    cfg = unlearn.load_config(a.forget / "forget.yaml")
    other = unlearn.run_eval(cfg, model_dir=a.model, report_dir=a.out).metrics
    print(f"| | original | unlearn forget | {a.name} |\n|---|---|---|---|")
    for label, role, name in ROWS:
        o, u, f = cell(ours, role, name, "original"), cell(ours, role, name, "unlearned"), cell(other, role, name, "unlearned")
        if o is None and u is None and f is None:
            continue
        print(f"| {label} | {o or ''} | {u or ''} | {f or ''} |")
    collapsed = [m.get("verdict", {}).get("collapsed") for m in (ours, other)]
    print(f"| collapsed (the report's rule) | | {collapsed[0]} | {collapsed[1]} |")
    other_s = f"{a.seconds:.0f} s" if a.seconds is not None else ""
    print(f"| wall time, 2 CPU cores | | {summary['seconds']['total']:.0f} s | {other_s} |")
    print(f"\nours: {ours_dir / 'report.html'}; {a.name}: {a.out / 'report.html'}")


if __name__ == "__main__":
    main()
