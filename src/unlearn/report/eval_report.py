"""The `unlearn eval` report's content: the summary table, the examples, report.md and report.html.

The HTML embeds its plots as base64 PNG (report/plots.py): one file to mail around. Writing the
files is report/write.py's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from unlearn.evaluate.metrics.registry import FORBIDDEN, direction, get_metric
from unlearn.report import benchmark_report, ledger_report
from unlearn.report.format import escape, fmt_change, fmt_with_interval, html_head, img_tag, md_cell, unique_metrics
from unlearn.report.plots import before_after_png, training_curves_png
from unlearn.report.verdict import CAVEAT, verdict_html, verdict_markdown, verdict_of

SET_TITLES = {
    "forget": "forget (unlearned prompts)",
    "forget_test": "forget_test (held-out, unseen)",
    "retain": "retain",
    "normal": "normal (general prompts)",
}
MAX_EXAMPLES = 25  # per set, in the report (samples.jsonl has them all)


def set_notes(role: str, info: dict[str, Any]) -> list[str]:
    """What a set holds, in words, from metrics.json's "sets": its target, how the forget set was
    drawn and how the held-out prompts overlap the training data. Older metrics.json files lack
    some keys; what is missing is left out."""
    notes = []
    if info.get("target"):
        notes.append(f"target {info['target']}")
    if info.get("forget_set") == "trained examples":
        notes.append(f"the {info.get('trained_examples', '?')} distinct examples the run trained on "
                     f"(of {info.get('training_examples', '?')} training examples)")
    elif info.get("forget_set"):
        notes.append(str(info["forget_set"]))
    for key, where in (("prompts_in_forget_training", "the forget training data"), ("prompts_in_retain", "the retain data")):
        if info.get(key) is not None:
            notes.append(f"{info[key]} of its prompts also in {where}")
    return notes


def direction_text(name: str) -> str:
    """Which way is better for metric `name`, from the metric registry: one way everywhere, or by
    the set's target (forbidden or desired) for metrics that follow it."""
    try:
        spec = get_metric(name)
    except KeyError:  # a metrics.json from a metric that is no longer registered
        return "direction as recorded per row"
    up = "higher" if direction(name, FORBIDDEN) else "lower"
    if not spec.follows_target:
        return f"{up} is better"
    down = "lower" if up == "higher" else "higher"
    return f"{up} is better where the target is forbidden, {down} where it is desired"


def set_line(role: str, info: dict[str, Any]) -> str:
    """One set, for the report's header: size, source, what counts as reproduced, and set_notes."""
    notes = "; ".join([f"reproduced = {info['rule']}"] + set_notes(role, info))
    return f"{role}: {info['n']} examples from {info['source']} ({notes})"


def empty_note(details: Any) -> str:
    """' (3 empty, left out)' where a metric left empty outputs out of its rate (hallucination rate):
    saying nothing is neither right nor hallucinated, and the count must show."""
    n = details.get("empty") if isinstance(details, dict) else None
    return f" ({n} empty, left out)" if n else ""


def summary_rows(metrics: dict[str, Any]) -> list[dict[str, str]]:
    """The summary table, one row per (set, metric), as strings: the same for Markdown, HTML and the
    terminal. Rates carry their 95 % interval. `mark` is better, worse, caveat (better, but the
    normal outputs collapsed: never shown as plain better) or empty; `verdict` says it in words."""
    collapsed = verdict_of(metrics)["collapsed"]
    rows = []
    for role, ms in metrics["metrics"].items():
        for name, m in ms.items():
            mark = {True: "better", False: "worse", None: ""}[m["better"]]
            text = mark
            if mark == "better" and collapsed:
                mark, text = "caveat", CAVEAT
            ci = m.get("interval") or {}
            details = m.get("details") or {}
            rows.append({
                "set": role,
                "metric": name,
                "original": fmt_with_interval(m["original"], m["unit"], ci.get("original"))
                + empty_note(details.get("original")),
                "unlearned": fmt_with_interval(m["unlearned"], m["unit"], ci.get("unlearned"))
                + empty_note(details.get("unlearned")),
                "change": fmt_change(m["change"], m["unit"]),
                "direction": "higher is better" if m["higher_is_better"] else "lower is better",
                "verdict": text,
                "mark": mark,
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


def samples_by_set(samples: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """ordered_samples grouped by set, sets in the order they first appear."""
    by_set: dict[str, list[dict[str, Any]]] = {}
    for s in ordered_samples(samples):
        by_set.setdefault(s["set"], []).append(s)
    return by_set


def score_text(scores: dict[str, Any]) -> str:
    """One example's scores in a few words: 'leak=yes, BLEU 40.0, ppl 12.3'."""
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
# Markdown


def render_markdown(metrics: dict[str, Any], samples: list[dict[str, Any]], examples_per_set: int = 5) -> str:
    """report.md: settings, the summary table, the metrics' meanings, a few examples per set."""
    run, st = metrics["run"], metrics["settings"]
    lines = [
        "# Unlearning report",
        "",
        *verdict_markdown(metrics),
        *ledger_report.render_markdown(metrics),
        f"- unlearned model: `{run['model_dir']}`" + (f" ({run['steps']} steps, {run['stop_reason']})" if run.get("steps") else ""),
        f"- original model: `{run['original_model']}`",
        f"- decoding: {st['decoding']}, up to {st['max_new_tokens']} new tokens; a leak is "
        + (f"BLEU >= {st['bleu_threshold']:g}" if st.get("bleu_threshold") is not None else "")
        + " or the key answer in the output, per set",
        "- sets:",
        *(f"  - {md_cell(set_line(r, v))}" for r, v in metrics["sets"].items()),
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
    for name, m in unique_metrics(metrics["metrics"]).items():
        lines.append(f"- `{name}`: {m['description']} ({direction_text(name)})")
    lines += ["", *benchmark_report.render_markdown(metrics), "## Examples", ""]
    for role, group in samples_by_set(samples).items():
        lines += [f"### {SET_TITLES.get(role, role)}", "", "| prompt | target | original | unlearned |", "|---|---|---|---|"]
        for s in group[:examples_per_set]:
            lines.append(
                f"| {md_cell(s['prompt'])} | {md_cell(s['target'] or '')} | {md_cell(s['original'])} "
                f"| {md_cell(s['unlearned'])} ({md_cell(score_text(s['scores'].get('unlearned', {})))}) |"
            )
        lines.append("")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# HTML


def render_html(metrics: dict[str, Any], samples: list[dict[str, Any]], log: list[dict[str, Any]]) -> str:
    """report.html, self-contained: settings, summary, plots (before/after, training curves from
    `log`, the records of train_log.jsonl), the worst examples per set, the metrics' meanings."""
    run, st = metrics["run"], metrics["settings"]
    parts = [
        html_head(f"Unlearning report: {Path(run['output_dir']).name}"),
        "<h1>Unlearning report</h1>",
        *verdict_html(metrics),
        *ledger_report.render_html(metrics),
        "<div class='meta'><p>",
        f"Unlearned model <code>{escape(run['model_dir'])}</code>"
        + (f", {escape(run['steps'])} steps ({escape(run['stop_reason'])})" if run.get("steps") else "")
        + f"; original <code>{escape(run['original_model'])}</code>.<br>",
        f"Decoding: {escape(st['decoding'])}, up to {escape(st['max_new_tokens'])} new tokens. Judge: {escape(st['judge'] or 'none')}. "
        f"Embeddings: {escape(st['embedding_model'])}.<br>",
        "Sets:<br>" + "<br>".join(escape(set_line(r, v)) for r, v in metrics["sets"].items()),
        "</p></div>",
        "<h2>Summary</h2>",
        "<table class='summary'><tr><th>set</th><th>metric</th><th>original</th><th>unlearned</th><th>change</th><th></th>"
        "<th></th></tr>",
    ]
    for r in summary_rows(metrics):
        m = metrics["metrics"][r["set"]][r["metric"]]
        parts.append(
            f"<tr class='{r['mark']}'><td>{escape(r['set'])}</td><td title='{escape(m['description'])}'>{escape(r['metric'])}</td>"
            f"<td class='num'>{escape(r['original'])}</td><td class='num'>{escape(r['unlearned'])}</td>"
            f"<td class='num change'>{escape(r['change'])}</td><td class='small'>{escape(r['direction'])}</td>"
            f"<td class='small{' caveat' if r['mark'] == 'caveat' else ''}'>{escape(r['verdict'])}</td></tr>"
        )
    parts.append("</table>")
    bars = before_after_png(metrics)
    if bars:
        parts += ["<h2>Before and after</h2>", img_tag(bars, "before and after bar chart")]
    curves = training_curves_png(log)
    if curves:
        parts += ["<h2>Training</h2>", "<p class='small'>Each logged term of train_log.jsonl against the step.</p>",
                  img_tag(curves, "training curves")]
    parts += benchmark_report.render_html(metrics)
    parts.append("<h2>Examples</h2><p class='small'>Forget sets: worst leaks first. Red: the unlearned "
                 "model still reproduces the target; green: a retain answer kept.</p>")
    for role, group in samples_by_set(samples).items():
        parts.append(f"<h3>{escape(SET_TITLES.get(role, role))}</h3>")
        parts.append("<table class='ex'><tr><th>prompt</th><th>target</th><th>original</th><th>unlearned</th><th>scores (unlearned)</th></tr>")
        for s in group[:MAX_EXAMPLES]:
            sc = s["scores"].get("unlearned", {})
            cls = ""
            if sc.get("leak_rate") or sc.get("extraction_leak_rate"):
                cls = "leak"
            elif sc.get("retain_accuracy"):
                cls = "kept"
            parts.append(
                f"<tr class='{cls}'><td>{escape(s['prompt'])}</td><td>{escape(s['target'] or '')}</td><td>{escape(s['original'])}</td>"
                f"<td>{escape(s['unlearned'])}</td><td class='scores'>{escape(score_text(sc))}</td></tr>"
            )
        parts.append("</table>")
        if len(group) > MAX_EXAMPLES:
            parts.append(f"<p class='small'>{len(group) - MAX_EXAMPLES} more in samples.jsonl.</p>")
    parts.append("<h2>Metrics</h2><ul>")
    for name, m in unique_metrics(metrics["metrics"]).items():
        parts.append(f"<li><b>{escape(name)}</b>: {escape(m['description'])}</li>")
    parts.append("</ul>")
    parts.append(f"<p class='small'>unlearn {escape(metrics.get('unlearn_version', ''))}; evaluation took "
                 f"{escape(metrics.get('seconds', {}).get('total'))} s.</p></body></html>")
    return "\n".join(parts)
