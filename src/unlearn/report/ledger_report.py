"""The eval report's section "Earlier requests: has an old behaviour come back?", from metrics.json's
"earlier_requests" (unlearn.evaluate.recheck): one row per earlier request and forgetting rate, the
rate then and now, the rule, and a clear flag. Absent when the run's ledger holds one request."""

from __future__ import annotations

from typing import Any, Optional

from unlearn.report.format import escape, fmt, fmt_with_interval, md_cell

TITLE = "Earlier requests: has an old behaviour come back?"
RULE = ("came back = the rate now is above max(rate then, forget target) beyond noise: the lower end of "
        "its 95 % interval is above that bar")


def earlier(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    return metrics.get("earlier_requests") or []


def flag_text(came_back: Optional[bool]) -> str:
    return {True: "CAME BACK", False: "still gone", None: "not re-checked"}[came_back]


def headline(metrics: dict[str, Any]) -> Optional[tuple[Optional[bool], str]]:
    """(anything came back?, one sentence), None when there were no earlier requests."""
    rows = earlier(metrics)
    if not rows:
        return None
    back = [r for r in rows if r["came_back"]]
    checked = sorted({r["request"] for r in rows if r["came_back"] is not None})
    if back:
        what = ", ".join(f"request {r['request']} {r['metric']} {fmt(r['forget_rate_then'], 'fraction')} -> "
                         f"{fmt(r['forget_rate_now'], 'fraction')}" for r in back)
        return True, f"yes: {what}"
    if not checked:
        return None, "no earlier request could be re-checked"
    return False, f"no: every forgetting rate of request{'s' if len(checked) > 1 else ''} " \
                  f"{', '.join(map(str, checked))} is still within its bar"


def rows(metrics: dict[str, Any]) -> list[dict[str, str]]:
    """Text cells: request, metric, then, now (with interval), bar, flag, note."""
    out = []
    for r in earlier(metrics):
        if r["metric"] is None:
            out.append({"request": str(r["request"]), "metric": "", "then": "", "now": "", "bar": "",
                        "flag": flag_text(None), "note": r.get("note", ""), "came_back": ""})
            continue
        out.append({
            "request": str(r["request"]), "metric": f"{r['set']} {r['metric']} (n={r['n']})",
            "then": fmt(r["forget_rate_then"], "fraction"),
            "now": fmt_with_interval(r["forget_rate_now"], "fraction", r.get("interval")),
            "bar": fmt(r["threshold"], "fraction"), "flag": flag_text(r["came_back"]), "note": r.get("note", ""),
            "came_back": "yes" if r["came_back"] else "no",
        })
    return out


def render_markdown(metrics: dict[str, Any]) -> list[str]:
    """The section as Markdown lines (none without earlier requests)."""
    head = headline(metrics)
    if head is None:
        return []
    lines = [f"## {TITLE}", "", f"- **{'Came back' if head[0] else 'Came back?'}** {head[1]}", f"- rule: {RULE}", "",
             "| request | metric | rate then | rate now | bar | |", "|---|---|---|---|---|---|"]
    for r in rows(metrics):
        flag = f"**{r['flag']}**" if r["came_back"] == "yes" else r["flag"]
        lines.append(f"| {r['request']} | {md_cell(r['metric'])} | {r['then']} | {r['now']} | {r['bar']} | "
                     f"{flag}{' (' + md_cell(r['note']) + ')' if r['note'] else ''} |")
    return lines + [""]


def render_html(metrics: dict[str, Any]) -> list[str]:
    """The section as HTML parts (escaped; none without earlier requests)."""
    head = headline(metrics)
    if head is None:
        return []
    cls = {True: "missed", False: "met", None: ""}[head[0]]
    parts = [f"<h2>{escape(TITLE)}</h2>", f"<p><b class='{cls}'>{escape(head[1])}</b></p>",
             f"<p class='small'>{escape(RULE)}.</p>",
             "<table class='summary'><tr><th>request</th><th>metric</th><th>rate then</th><th>rate now</th>"
             "<th>bar</th><th></th></tr>"]
    for r in rows(metrics):
        mark = {"yes": "missed", "no": "met"}.get(r["came_back"], "")
        note = f" ({escape(r['note'])})" if r["note"] else ""
        parts.append(f"<tr><td>{escape(r['request'])}</td><td>{escape(r['metric'])}</td><td class='num'>"
                     f"{escape(r['then'])}</td><td class='num'>{escape(r['now'])}</td><td class='num'>{escape(r['bar'])}"
                     f"</td><td class='{mark}'>{escape(r['flag'])}{note}</td></tr>")
    return parts + ["</table>"]
