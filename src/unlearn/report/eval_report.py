"""The evaluation report: metrics.json, samples.jsonl, report.md and a self-contained report.html.

    write_report(result)            -> OUTPUT_DIR/eval/{metrics.json, samples.jsonl, report.md, report.html}

All four files are written into a temporary folder that is renamed into place, so a report is either
complete or absent. The HTML embeds its plots as base64 PNG (matplotlib): one file to mail around.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterable, Optional

FILES = ("metrics.json", "samples.jsonl", "report.md", "report.html")
SET_TITLES = {
    "forget": "forget (unlearned prompts)",
    "forget_test": "forget_test (held-out, unseen)",
    "retain": "retain",
    "normal": "normal (general prompts)",
}
MAX_EXAMPLES = 25  # per set, in the report (samples.jsonl has them all)
_SKIP_LOG_KEYS = {"step", "lr", "tokens", "seconds", "skipped", "nonfinite", "eval", "grad_norm"}


# --------------------------------------------------------------------------------------------
# Numbers as shown


def fmt(value: Optional[float], unit: str) -> str:
    """A metric value as the report shows it: fractions in %, BLEU and perplexity with 2 decimals."""
    if value is None:
        return "–"
    if unit == "fraction":
        return f"{100 * value:.1f}%"
    if unit in ("nats", "cosine"):
        return f"{value:.3f}"
    return f"{value:.2f}"


def fmt_change(value: Optional[float], unit: str) -> str:
    if value is None:
        return "–"
    if unit == "fraction":
        return f"{100 * value:+.1f} pp"
    if unit in ("nats", "cosine"):
        return f"{value:+.3f}"
    return f"{value:+.2f}"


def summary_rows(metrics: dict[str, Any]) -> list[dict[str, str]]:
    """The summary table, one row per (set, metric), as strings: the same for Markdown and HTML."""
    rows = []
    for role, ms in metrics["metrics"].items():
        for name, m in ms.items():
            mark = {True: "better", False: "worse", None: ""}[m["better"]]
            rows.append({
                "set": role,
                "metric": name,
                "original": fmt(m["original"], m["unit"]),
                "unlearned": fmt(m["unlearned"], m["unit"]),
                "change": fmt_change(m["change"], m["unit"]),
                "direction": "higher is better" if m["higher_is_better"] else "lower is better",
                "verdict": mark,
            })
    return rows


# --------------------------------------------------------------------------------------------
# Examples


def ordered_samples(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Samples per set in report order: forget sets worst leaks first (the unlearned model still
    reproduces the target, then highest BLEU), other sets as they come."""

    def leak_key(s: dict[str, Any]) -> tuple:
        sc = s["scores"].get("unlearned", {})
        flag = sc.get("leak_rate", sc.get("extraction_leak_rate")) or 0.0
        return (-flag, -(sc.get("bleu") or 0.0), -(sc.get("rouge_l_recall") or 0.0))

    out: list[dict[str, Any]] = []
    roles = list(dict.fromkeys(s["set"] for s in samples))
    for role in roles:
        group = [s for s in samples if s["set"] == role]
        if role in ("forget", "forget_test"):
            group = sorted(group, key=leak_key)
        elif role == "retain":
            group = sorted(group, key=lambda s: s["scores"].get("unlearned", {}).get("retain_accuracy") or 0.0)
        out.extend(group)
    return out


def _score_text(scores: dict[str, Any]) -> str:
    parts = []
    for k in ("leak_rate", "extraction_leak_rate", "retain_accuracy", "harmful_rate", "hallucination_rate"):
        if scores.get(k) is not None:
            parts.append(f"{k.replace('_rate', '').replace('retain_accuracy', 'kept')}={'yes' if scores[k] else 'no'}")
    if scores.get("bleu") is not None:
        parts.append(f"BLEU {scores['bleu']:.1f}")
    if scores.get("similarity_cosine") is not None:
        parts.append(f"cos {scores['similarity_cosine']:.2f}")
    if scores.get("fluency") is not None:
        parts.append(f"ppl {scores['fluency']:.1f}")
    elif "fluency" in scores:
        parts.append("empty")
    return ", ".join(parts)


# --------------------------------------------------------------------------------------------
# Plots


def read_train_log(path: Optional[Path]) -> list[dict[str, Any]]:
    if path is None or not Path(path).exists():
        return []
    out = []
    for line in Path(path).read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut off by a crash: the curves do without it
        if isinstance(rec, dict) and "step" in rec:
            out.append(rec)
    return out


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def training_curves_png(log: list[dict[str, Any]]) -> Optional[str]:
    """One panel per logged term (loss, each objective term, forget NLL, and the evaluations made
    during training), against the step. None when there is no log."""
    steps = [r for r in log if not r.get("skipped")]
    if not steps:
        return None
    keys = [k for k in steps[0] if k not in _SKIP_LOG_KEYS and isinstance(steps[0][k], (int, float))]
    for r in steps:
        keys.extend(k for k in r if k not in keys and k not in _SKIP_LOG_KEYS and isinstance(r[k], (int, float)))
    evals = [r for r in steps if isinstance(r.get("eval"), dict)]
    eval_keys = list(dict.fromkeys(k for r in evals for k in r["eval"] if k != "score"))
    panels = [(k, [(r["step"], r[k]) for r in steps if isinstance(r.get(k), (int, float))]) for k in keys]
    panels += [(f"eval: {k}", [(r["step"], r["eval"][k]) for r in evals if isinstance(r["eval"].get(k), (int, float))]) for k in eval_keys]
    panels = [(k, pts) for k, pts in panels if pts]
    if not panels:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows), squeeze=False)
    for ax, (name, pts) in zip(axes.flat, panels):
        xs, ys = zip(*pts)
        ax.plot(xs, ys, marker="o" if len(xs) < 20 else None, markersize=3, color="#3366aa" if not name.startswith("eval") else "#aa5522")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    return _png(fig)


def before_after_png(metrics: dict[str, Any]) -> Optional[str]:
    """Grouped horizontal bars, original vs unlearned, for every metric on a 0-100 % scale."""
    bars = [
        (f"{role}: {name}", m["original"], m["unlearned"])
        for role, ms in metrics["metrics"].items()
        for name, m in ms.items()
        if m["unit"] == "fraction" and (m["original"] is not None or m["unlearned"] is not None)
    ]
    if not bars:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(bars)
    fig, ax = plt.subplots(figsize=(8, 0.42 * n + 1.2))
    ys = list(range(n))[::-1]
    h = 0.38
    orig = [100 * (b[1] or 0) for b in bars]
    unl = [100 * (b[2] or 0) for b in bars]
    ax.barh([y + h / 2 for y in ys], orig, height=h, color="#9aa7b8", label="original")
    ax.barh([y - h / 2 for y in ys], unl, height=h, color="#2f6db5", label="unlearned")
    for y, b, o, u in zip(ys, bars, orig, unl):
        if b[1] is not None:
            ax.text(o + 1, y + h / 2, f"{o:.0f}", va="center", fontsize=7, color="#555")
        ax.text(u + 1, y - h / 2, f"{u:.0f}", va="center", fontsize=7, color="#1d4f8a")
    ax.set_yticks(ys)
    ax.set_yticklabels([b[0] for b in bars], fontsize=8)
    ax.set_xlim(0, 110)
    ax.set_xlabel("%", fontsize=8)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title("before and after unlearning", fontsize=10)
    fig.tight_layout()
    return _png(fig)


# --------------------------------------------------------------------------------------------
# Markdown


def _md_cell(text: Any) -> str:
    s = "" if text is None else str(text)
    return s.replace("|", "\\|").replace("\n", " ⏎ ")


def render_markdown(metrics: dict[str, Any], samples: list[dict[str, Any]], examples_per_set: int = 5) -> str:
    run, st = metrics["run"], metrics["settings"]
    lines = [
        "# Unlearning report",
        "",
        f"- unlearned model: `{run['model_dir']}`" + (f" ({run['steps']} steps, {run['stop_reason']})" if run.get("steps") else ""),
        f"- original model: `{run['original_model']}`",
        f"- decoding: {st['decoding']}, up to {st['max_new_tokens']} new tokens; a leak is "
        + (f"BLEU >= {st['bleu_threshold']:g}" if st.get("bleu_threshold") is not None else "")
        + " or the key answer in the output, per set",
        "- sets: " + ", ".join(f"{r} ({v['n']}, {v['source']}, {v['rule']})" for r, v in metrics["sets"].items()),
        "",
        "## Summary",
        "",
        "| set | metric | original | unlearned | change | |",
        "|---|---|---|---|---|---|",
    ]
    for r in summary_rows(metrics):
        lines.append(
            f"| {r['set']} | {r['metric']} | {r['original']} | {r['unlearned']} | {r['change']} | {r['verdict']} |"
        )
    lines += ["", "Metrics:", ""]
    seen = set()
    for ms in metrics["metrics"].values():
        for name, m in ms.items():
            if name not in seen:
                seen.add(name)
                lines.append(f"- `{name}`: {m['description']} ({'higher' if m['higher_is_better'] else 'lower'} is better"
                             + (" on forget sets" if name in ("nll", "rouge_l_recall") else "") + ")")
    lines += ["", "## Examples", ""]
    by_set: dict[str, list[dict[str, Any]]] = {}
    for s in ordered_samples(samples):
        by_set.setdefault(s["set"], []).append(s)
    for role, group in by_set.items():
        lines += [f"### {SET_TITLES.get(role, role)}", "", "| prompt | target | original | unlearned |", "|---|---|---|---|"]
        for s in group[:examples_per_set]:
            lines.append(
                f"| {_md_cell(s['prompt'])} | {_md_cell(s['target'] or '')} | {_md_cell(s['original'])} "
                f"| {_md_cell(s['unlearned'])} ({_md_cell(_score_text(s['scores'].get('unlearned', {})))}) |"
            )
        lines.append("")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# HTML

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1150px;color:#222;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}td,th{border:1px solid #ddd;padding:.35em .6em;vertical-align:top}
th{background:#f4f6f8;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.better td.change{color:#1a7f37;font-weight:600}tr.worse td.change{color:#c62828;font-weight:600}
.meta{color:#555;font-size:.92em}.meta code{background:#f4f6f8;padding:0 .25em}
.ex td{max-width:300px;white-space:pre-wrap;word-wrap:break-word}.ex td.scores{font-size:.85em;color:#555;white-space:normal}
.leak{background:#fdecea}.kept{background:#eaf6ec}img{max-width:100%;border:1px solid #eee}
.small{font-size:.85em;color:#666}
"""


def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x))


def render_html(metrics: dict[str, Any], samples: list[dict[str, Any]], log: list[dict[str, Any]]) -> str:
    run, st = metrics["run"], metrics["settings"]
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>Unlearning report: {_e(Path(run['output_dir']).name)}</title><style>{CSS}</style></head><body>",
        "<h1>Unlearning report</h1>",
        "<div class='meta'><p>",
        f"Unlearned model <code>{_e(run['model_dir'])}</code>"
        + (f", {_e(run['steps'])} steps ({_e(run['stop_reason'])})" if run.get("steps") else "")
        + f"; original <code>{_e(run['original_model'])}</code>.<br>",
        f"Decoding: {_e(st['decoding'])}, up to {_e(st['max_new_tokens'])} new tokens. Judge: {_e(st['judge'] or 'none')}. "
        f"Embeddings: {_e(st['embedding_model'])}.<br>",
        "Sets: " + "; ".join(f"<b>{_e(r)}</b> {v['n']} examples from <code>{_e(v['source'])}</code>, "
                            f"reproduced = {_e(v['rule'])}" for r, v in metrics["sets"].items()),
        "</p></div>",
        "<h2>Summary</h2>",
        "<table class='summary'><tr><th>set</th><th>metric</th><th>original</th><th>unlearned</th><th>change</th><th></th></tr>",
    ]
    for r in summary_rows(metrics):
        m = metrics["metrics"][r["set"]][r["metric"]]
        parts.append(
            f"<tr class='{r['verdict']}'><td>{_e(r['set'])}</td><td title='{_e(m['description'])}'>{_e(r['metric'])}</td>"
            f"<td class='num'>{_e(r['original'])}</td><td class='num'>{_e(r['unlearned'])}</td>"
            f"<td class='num change'>{_e(r['change'])}</td><td class='small'>{_e(r['direction'])}</td></tr>"
        )
    parts.append("</table>")
    bars = before_after_png(metrics)
    if bars:
        parts += ["<h2>Before and after</h2>", f"<img alt='before and after bar chart' src='data:image/png;base64,{bars}'>"]
    curves = training_curves_png(log)
    if curves:
        parts += ["<h2>Training</h2>", "<p class='small'>Each logged term of train_log.jsonl against the step.</p>",
                  f"<img alt='training curves' src='data:image/png;base64,{curves}'>"]
    parts.append("<h2>Examples</h2><p class='small'>Forget sets: worst leaks first. Red: the unlearned "
                 "model still reproduces the target; green: a retain answer kept.</p>")
    by_set: dict[str, list[dict[str, Any]]] = {}
    for s in ordered_samples(samples):
        by_set.setdefault(s["set"], []).append(s)
    for role, group in by_set.items():
        parts.append(f"<h3>{_e(SET_TITLES.get(role, role))}</h3>")
        parts.append("<table class='ex'><tr><th>prompt</th><th>target</th><th>original</th><th>unlearned</th><th>scores (unlearned)</th></tr>")
        for s in group[:MAX_EXAMPLES]:
            sc = s["scores"].get("unlearned", {})
            cls = ""
            if sc.get("leak_rate") or sc.get("extraction_leak_rate"):
                cls = "leak"
            elif sc.get("retain_accuracy"):
                cls = "kept"
            parts.append(
                f"<tr class='{cls}'><td>{_e(s['prompt'])}</td><td>{_e(s['target'] or '')}</td><td>{_e(s['original'])}</td>"
                f"<td>{_e(s['unlearned'])}</td><td class='scores'>{_e(_score_text(sc))}</td></tr>"
            )
        parts.append("</table>")
        if len(group) > MAX_EXAMPLES:
            parts.append(f"<p class='small'>{len(group) - MAX_EXAMPLES} more in samples.jsonl.</p>")
    parts.append("<h2>Metrics</h2><ul>")
    seen = set()
    for ms in metrics["metrics"].values():
        for name, m in ms.items():
            if name not in seen:
                seen.add(name)
                parts.append(f"<li><b>{_e(name)}</b>: {_e(m['description'])}</li>")
    parts.append("</ul>")
    parts.append(f"<p class='small'>unlearn {_e(metrics.get('unlearn_version', ''))}; evaluation took "
                 f"{_e(metrics.get('seconds', {}).get('total'))} s.</p></body></html>")
    return "\n".join(parts)


# --------------------------------------------------------------------------------------------
# Writing


def _jsonl(rows: Iterable[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def write_report_files(
    folder: Path, metrics: dict[str, Any], samples: list[dict[str, Any]], train_log: Optional[Path] = None
) -> Path:
    """Write the four report files into `folder` atomically: a temp folder beside it, renamed into
    place (an earlier report there is replaced only once the new one is complete)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    log = read_train_log(train_log)
    tmp = folder.parent / f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n")
        (tmp / "samples.jsonl").write_text(_jsonl(samples))
        (tmp / "report.md").write_text(render_markdown(metrics, samples))
        (tmp / "report.html").write_text(render_html(metrics, samples, log))
        old = None
        if folder.exists():
            old = folder.parent / f".{folder.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(folder, old)
        os.replace(tmp, folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def write_report(result: Any, folder: Optional[Path] = None) -> Path:
    """Write an EvalResult (unlearn.evaluate.run) to OUTPUT_DIR/eval (or `folder`), with the
    training curves of OUTPUT_DIR/train_log.jsonl."""
    folder = Path(folder) if folder is not None else result.output_dir / "eval"
    return write_report_files(folder, result.metrics, result.samples, result.output_dir / "train_log.jsonl")
