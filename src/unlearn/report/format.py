"""Numbers and cells as every report shows them: `unlearn eval`, `unlearn compare`, the terminal
tables and the demo's summary use these, so a value reads the same everywhere."""

from __future__ import annotations

import base64
import html
from typing import Any, Optional, Sequence

MB = 2**20

# One stylesheet for both HTML reports (compare adds a few rules of its own).
CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1150px;color:#222;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}td,th{border:1px solid #ddd;padding:.35em .6em;vertical-align:top}
th{background:#f4f6f8;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.better td.change{color:#1a7f37;font-weight:600}tr.worse td.change{color:#c62828;font-weight:600}
tr.caveat td.change{color:#b26a00;font-weight:600}td.caveat{color:#b26a00}
.verdict p{margin:.3em 0}.met{color:#1a7f37}.missed{color:#c62828}
.meta{color:#555;font-size:.92em}.meta code{background:#f4f6f8;padding:0 .25em}
.ex td{max-width:300px;white-space:pre-wrap;word-wrap:break-word}.ex td.scores{font-size:.85em;color:#555;white-space:normal}
.leak{background:#fdecea}.kept{background:#eaf6ec}img{max-width:100%;border:1px solid #eee}
.small{font-size:.85em;color:#666}
"""


def fmt(value: Optional[float], unit: str) -> str:
    """A metric value as the reports show it: fractions in %, nats, cosines and scores with 3
    decimals, p-values with 3 significant digits, BLEU and perplexity with 2; '–' for a missing value."""
    if value is None:
        return "–"
    if unit == "fraction":
        return f"{100 * value:.1f}%"
    if unit in ("nats", "cosine", "score"):
        return f"{value:.3f}"
    if unit == "pvalue":
        return f"{value:.3g}"
    return f"{value:.2f}"


def fmt_interval(interval: Optional[Sequence[float]]) -> str:
    """A rate's 95 % interval in % with one decimal: '[0.0, 17.6]'; '' when there is none."""
    return "" if not interval else f"[{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]"


def fmt_with_interval(value: Optional[float], unit: str, interval: Optional[Sequence[float]]) -> str:
    """A value with its 95 % interval when it has one: '0.0% [0.0, 17.6]'."""
    return f"{fmt(value, unit)} {fmt_interval(interval)}" if interval and value is not None else fmt(value, unit)


def fmt_change(value: Optional[float], unit: str) -> str:
    """A change of a metric, signed: fractions in percentage points."""
    if value is None:
        return "–"
    if unit == "fraction":
        return f"{100 * value:+.1f} pp"
    if unit in ("nats", "cosine", "score"):
        return f"{value:+.3f}"
    if unit == "pvalue":
        return f"{value:+.3g}"
    return f"{value:+.2f}"


def fmt_mb(n: Optional[int]) -> str:
    """Bytes as whole MiB ('–' when not measured)."""
    return "–" if n is None else f"{n / MB:.0f}"


def fmt_seconds(s: Optional[float]) -> str:
    """Seconds with one decimal ('–' when not measured)."""
    return "–" if s is None else f"{s:.1f}"


def objective_text(objective: dict[str, Any]) -> str:
    """An objective as one line: {'ga': 1, 'npo': {'weight': 1, 'beta': 0.1}} -> 'ga 1 + npo 1 (beta=0.1)'."""
    parts = []
    for term, spec in objective.items():
        w = spec["weight"] if isinstance(spec, dict) else spec
        params = ", ".join(f"{k}={v}" for k, v in spec.items() if k != "weight") if isinstance(spec, dict) else ""
        parts.append(f"{term} {w:g}" + (f" ({params})" if params else ""))
    return " + ".join(parts)


def axis_label(key: Optional[str]) -> str:
    """A 'set.metric' key as an axis label: 'forget.leak_rate' -> 'forget: leak rate'."""
    if not key:
        return "none"
    role, name = key.split(".", 1)
    return f"{role}: {name.replace('_', ' ')}"


def md_cell(text: Any) -> str:
    """Text safe in one Markdown table cell: pipes escaped, line breaks shown as ⏎."""
    s = "" if text is None else str(text)
    return s.replace("|", "\\|").replace("\n", " ⏎ ")


def escape(x: Any) -> str:
    """Text safe in HTML (None is empty): model outputs and paths are never markup."""
    return html.escape("" if x is None else str(x))


def img_tag(png: bytes, alt: str) -> str:
    """A PNG embedded in the page (base64), so that the HTML is one self-contained file."""
    return f"<img alt='{escape(alt)}' src='data:image/png;base64,{base64.b64encode(png).decode('ascii')}'>"


def unique_metrics(metrics: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """{set: {metric: info}} -> {metric: info of its first set}: each metric once, for the lists
    of what the metrics mean."""
    out: dict[str, Any] = {}
    for ms in metrics.values():
        for name, info in ms.items():
            out.setdefault(name, info)
    return out


def html_head(title: str, css: str = CSS) -> str:
    """The start of a report page up to <body>: UTF-8, mobile viewport, the (escaped) title and
    the inline stylesheet (nothing is fetched from elsewhere)."""
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>\n"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>\n"
            f"<title>{escape(title)}</title><style>{css}</style></head><body>")
