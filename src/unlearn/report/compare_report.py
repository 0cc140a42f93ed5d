"""The `unlearn compare` report's content: the table of methods, compare.md and compare.html,
all from compare.json's data (unlearn.comparison assembles it). The trade-off plot is
report/plots.py's; writing the files is report/write.py's."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from unlearn.evaluate.metrics.registry import get_metric
from unlearn.report.format import (
    CSS, axis_label, escape, fmt, fmt_mb, fmt_seconds, html_head, img_tag, md_cell, objective_text, unique_metrics,
)

# Compare's own rules on top of the shared stylesheet.
COMPARE_CSS = (CSS + "tr.failed td{background:#fdecea}tr.original td{background:#f4f6f8}td.best{font-weight:700}"
               "table.compare{font-size:.82em}td.err{max-width:280px;font-size:.85em;color:#8a1c1c}"
               ".scroll{overflow-x:auto}")


def columns(data: dict[str, Any]) -> list[tuple[str, str]]:
    """(set, metric) of every metric but the registry's details (compare.json keeps those), in
    evaluation order."""
    return [(role, name) for role, ms in data["metrics"].items() for name in ms if not is_detail(name)]


def is_detail(name: str) -> bool:
    """Whether the metric registry marks `name` a detail; a metric no longer registered is shown."""
    try:
        return get_metric(name).detail
    except KeyError:
        return False


def table_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per method (the original model first), every cell as text; `best` marks the metric
    columns where the row holds the best value among the methods that finished."""
    cols = columns(data)
    done = [r for r in data["runs"].values() if r["status"] == "done"]
    best: dict[tuple[str, str], float] = {}
    for role, name in cols:
        i = data["metrics"][role][name]
        vals = [r["metrics"].get(role, {}).get(name) for r in done]
        vals = [v for v in vals if v is not None]
        if len(vals) > 1 and len(set(vals)) > 1:
            best[(role, name)] = max(vals) if i["higher_is_better"] else min(vals)
    o = data["original"]
    rows = [{
        "method": "original model", "objective": "", "status": "original", "steps": "0", "stop": "",
        "train_s": "–", "eval_s": fmt_seconds(o["eval_seconds"]), "peak_mb": f"– / {fmt_mb(o.get('peak_bytes'))}",
        "values": [fmt(o["metrics"].get(role, {}).get(name), data["metrics"][role][name]["unit"]) for role, name in cols],
        "best": [False] * len(cols), "error": "", "report": None,
    }]
    for m, r in data["runs"].items():
        vals = [r["metrics"].get(role, {}).get(name) for role, name in cols]
        rows.append({
            "method": m,
            "objective": objective_text(r["objective"]),
            "status": r["status"] if r["status"] == "done" else f"failed ({r.get('failed_phase')})",
            "steps": "–" if r.get("steps") is None else str(r["steps"]),
            "stop": r.get("stop_reason") or "",
            "train_s": fmt_seconds(r.get("train_seconds")),
            "eval_s": fmt_seconds(r.get("eval_seconds")),
            "peak_mb": f"{fmt_mb(r.get('train_peak_bytes'))} / {fmt_mb(r.get('eval_peak_bytes'))}",
            "values": [fmt(v, data["metrics"][role][name]["unit"]) for v, (role, name) in zip(vals, cols)],
            "best": [v is not None and best.get(c) == v for v, c in zip(vals, cols)],
            "error": r.get("error") or "",
            "report": r["report"] if r["status"] == "done" else None,
        })
    return rows


def header(data: dict[str, Any], role: str, name: str) -> str:
    """A metric column's heading: set, metric and which way is better."""
    return f"{role} {name} {'↑' if data['metrics'][role][name]['higher_is_better'] else '↓'}"


def memory_text(data: dict[str, Any]) -> str:
    """What the peak-memory column measured."""
    if data.get("memory") == "cuda_max_allocated":
        return "GPU memory allocated at peak (torch.cuda.max_memory_allocated), training / evaluation"
    return "resident-set high-water mark of the method's own process (VmHWM), training / evaluation"


def render_markdown(data: dict[str, Any]) -> str:
    """compare.md: the settings, one row per method, where each run's files are, the metrics' meanings."""
    cols = columns(data)
    lines = [
        "# Unlearning methods compared",
        "",
        f"- model: `{data['model']}`{' (LoRA)' if data['lora'] else ''}; each method {data['max_steps']} steps "
        f"(at most), seed {data['seed']}, the same data and evaluation; config `{data['config']}`",
        "- sets: " + ", ".join(f"{r} ({v['n']}, {v['source']})" for r, v in data["sets"].items()),
        f"- peak MB: {memory_text(data)}; seconds: training (load, steps, save) and evaluation, each "
        "method in a fresh process",
        f"- trade-off plot: `tradeoff.png` (x: {axis_label(data['axes']['x'])}, y: {axis_label(data['axes']['y'])})",
        "- ↑ higher is better, ↓ lower is better; **bold**: the best method in the column",
        "",
        "| method | objective | status | steps | stop | train s | eval s | peak MB | "
        + " | ".join(header(data, r, n) for r, n in cols) + " | error |",
        "|" + "---|" * (9 + len(cols)),
    ]
    for row in table_rows(data):
        vals = [f"**{v}**" if b else v for v, b in zip(row["values"], row["best"])]
        cells = [row["method"], row["objective"], row["status"], row["steps"], row["stop"], row["train_s"],
                 row["eval_s"], row["peak_mb"], *vals, row["error"]]
        lines.append("| " + " | ".join(md_cell(c) for c in cells) + " |")
    lines += ["", "Each method's run, evaluation report and log:", ""]
    for m, r in data["runs"].items():
        lines.append(f"- `{m}`: `{r['output_dir']}`" + (f", report `{r['report']}`" if r["status"] == "done" else "")
                     + f", log `{r['log']}`")
    lines += ["", "Metrics:", ""]
    for name, info in unique_metrics(data["metrics"]).items():
        lines.append(f"- `{name}`: {info['description']}")
    return "\n".join(lines) + "\n"


def render_html(data: dict[str, Any], png: Optional[bytes]) -> str:
    """compare.html, self-contained: the table (each method linked to its own report), the
    trade-off plot `png` embedded when there is one, the metrics' meanings."""
    cols = columns(data)
    parts = [
        html_head(f"Unlearning methods compared: {Path(data['output_dir']).name}", COMPARE_CSS),
        "<h1>Unlearning methods compared</h1><div class='meta'><p>",
        f"Model <code>{escape(data['model'])}</code>{' (LoRA)' if data['lora'] else ''}; each method "
        f"{escape(data['max_steps'])} steps (at most), seed {escape(data['seed'])}, the same data and evaluation; config "
        f"<code>{escape(data['config'])}</code>.<br>",
        "Sets: " + "; ".join(f"<b>{escape(r)}</b> {v['n']} examples from <code>{escape(v['source'])}</code>"
                            for r, v in data["sets"].items()) + ".<br>",
        f"Peak MB: {escape(memory_text(data))}. Seconds: training (load, steps, save) and evaluation, each method "
        "in a fresh process. ↑ higher is better, ↓ lower is better; bold: the best method in the column.",
        "</p></div><h2>Summary</h2>",
        "<div class='scroll'><table class='compare'><tr><th>method</th><th>objective</th><th>status</th><th>error</th>"
        "<th>steps</th><th>stop</th><th>train s</th><th>eval s</th><th>peak MB</th>"
        + "".join(f"<th title='{escape(data['metrics'][r][n]['description'])}'>{escape(header(data, r, n))}</th>"
                  for r, n in cols)
        + "</tr>",
    ]
    for row in table_rows(data):
        cls = "original" if row["status"] == "original" else ("" if row["status"] == "done" else "failed")
        method = escape(row["method"])
        if row["report"]:
            rel = os.path.relpath(row["report"], data["folder"])
            method = f"<a href='{escape(rel)}'>{method}</a>"
        cells = "".join(f"<td class='num{' best' if b else ''}'>{escape(v)}</td>" for v, b in zip(row["values"], row["best"]))
        parts.append(
            f"<tr class='{cls}'><td>{method}</td><td>{escape(row['objective'])}</td><td>{escape(row['status'])}</td>"
            f"<td class='err'>{escape(row['error'])}</td><td class='num'>{escape(row['steps'])}</td>"
            f"<td class='small'>{escape(row['stop'])}</td><td class='num'>{escape(row['train_s'])}</td>"
            f"<td class='num'>{escape(row['eval_s'])}</td><td class='num'>{escape(row['peak_mb'])}</td>{cells}</tr>"
        )
    parts.append("</table></div>")
    if png is not None:
        parts += ["<h2>Trade-off</h2>",
                  f"<p class='small'>x: {escape(axis_label(data['axes']['x']))} (lower is better); "
                  f"y: {escape(axis_label(data['axes']['y']))} (higher is better). Failed methods have no point.</p>",
                  img_tag(png, "trade-off plot")]
    else:
        parts.append("<p class='small'>No trade-off plot: no finished method, or the evaluation has no forget "
                     "leak/harmful rate or no retain accuracy/normal similarity.</p>")
    parts.append("<h2>Metrics</h2><ul>")
    for name, info in unique_metrics(data["metrics"]).items():
        parts.append(f"<li><b>{escape(name)}</b>: {escape(info['description'])}</li>")
    parts.append(f"</ul><p class='small'>unlearn {escape(data['unlearn_version'])}; each method's run, report and log "
                 f"under <code>{escape(data['folder'])}</code>.</p></body></html>")
    return "\n".join(parts)
