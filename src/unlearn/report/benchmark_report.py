"""The eval report's benchmark sections, from metrics.json's "benchmarks" (unlearn.benchmarks.run):
one table per benchmark, a row per metric and a column per model measured (original, unlearned,
and any reference model such as TOFU's retain-only model), the change and whether it improved."""

from __future__ import annotations

from typing import Any

from unlearn.report.format import escape, fmt, fmt_change, md_cell

MARK = {True: "better", False: "worse", None: ""}


def sections(metrics: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return list((metrics.get("benchmarks") or {}).items())


def table(bench: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) as text cells: metric, each model's value, change, direction, verdict."""
    labels = list(bench["models"])
    header = ["metric", *labels, "change", "better when", ""]
    rows = []
    for name, r in bench["metrics"].items():
        rows.append([name, *(fmt(r["values"].get(lb), r["unit"]) for lb in labels),
                     fmt_change(r["change"], r["unit"]), r["better"] or "", MARK[r["improved"]]])
    return header, rows


def render_markdown(metrics: dict[str, Any]) -> list[str]:
    """Each benchmark's section as Markdown lines (none when no benchmark ran)."""
    lines: list[str] = []
    for name, bench in sections(metrics):
        header, rows = table(bench)
        lines += [f"## Benchmark: {name}", "", f"{bench['description']} Source: {bench['source']}.", "",
                  "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in rows]
        models = ", ".join(f"{lb}: `{path}`" for lb, path in bench["models"].items())
        lines += ["", f"Models: {models}. Took {bench['seconds']} s.", "", "Metrics:", ""]
        lines += [f"- `{n}`: {r['description']}" + (f" ({r['source']})" if r["source"] else "")
                  for n, r in bench["metrics"].items()]
        lines.append("")
    return lines


def render_html(metrics: dict[str, Any]) -> list[str]:
    """Each benchmark's section as HTML parts (escaped)."""
    parts: list[str] = []
    for name, bench in sections(metrics):
        header, rows = table(bench)
        parts += [f"<h2>Benchmark: {escape(name)}</h2>",
                  f"<p class='small'>{escape(bench['description'])} Source: {escape(bench['source'])}. "
                  f"Took {escape(bench['seconds'])} s.</p>",
                  "<table class='summary'><tr>" + "".join(f"<th>{escape(h)}</th>" for h in header) + "</tr>"]
        for (metric, r), row in zip(bench["metrics"].items(), rows):
            cls = {True: "met", False: "missed"}.get(r["improved"], "")
            cells = [f"<td title='{escape(r['description'])}'>{escape(row[0])}</td>"]
            cells += [f"<td class='num'>{escape(c)}</td>" for c in row[1:-2]]
            cells += [f"<td class='small'>{escape(row[-2])}</td>", f"<td class='{cls}'>{escape(row[-1])}</td>"]
            parts.append("<tr>" + "".join(cells) + "</tr>")
        parts.append("</table>")
    return parts
