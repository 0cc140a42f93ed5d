"""The tables the commands print (rich): `unlearn eval`'s summary, the demo's targets and
`unlearn compare`'s timings and trade-off. The same cells as the files (report/format.py)."""

from __future__ import annotations

from typing import Any, Optional

from unlearn.report.eval_report import summary_rows
from unlearn.report.format import axis_label, fmt, fmt_mb, fmt_seconds
from unlearn.report.verdict import verdict_lines, verdict_rows


def verdict_table(metrics: dict[str, Any]) -> Any:
    """The verdict (report/verdict.py): the two answers with their reasons, then whether a behaviour
    an earlier request removed came back (report/ledger_report.py), then every check."""
    from rich.console import Group
    from rich.markup import escape
    from rich.table import Table

    from unlearn.report.ledger_report import headline

    colour = {True: "bold green", False: "bold red", None: "bold"}
    lines = [f"[{colour[met]}]{escape(label)}[/]: {escape(why)}" for label, met, why in verdict_lines(metrics)]
    back = headline(metrics)
    if back is not None:
        lines.append(f"[{colour[None if back[0] is None else not back[0]]}]Earlier requests come back? "
                     f"{escape(back[1])}[/]")
    table = Table("", "set", "metric", "unlearned", "rule", "", title="verdict")
    for r in verdict_rows(metrics):
        table.add_row(r["question"], r["set"], r["metric"], r["value"], r["rule"],
                      f"[{'green' if r['met'] == 'met' else 'red'}]{r['met']}[/]")
    return Group(*lines, table)


def eval_table(metrics: dict[str, Any]) -> Any:
    """The verdict, then the summary of metrics.json: one row per (set, metric), the change green
    when better, amber when better but the normal outputs collapsed, red when worse."""
    from rich.console import Group
    from rich.table import Table

    table = Table("set", "metric", "original", "unlearned", "change", "")
    for r in summary_rows(metrics):
        style = {"better": "green", "worse": "red", "caveat": "yellow"}.get(r["mark"], "")
        table.add_row(r["set"], r["metric"], r["original"], r["unlearned"],
                      f"[{style}]{r['change']}[/{style}]" if style else r["change"],
                      f"[{style}]{r['verdict']}[/{style}]" if r["mark"] == "caveat" else r["verdict"])
    return Group(verdict_table(metrics), table)


def demo_value(x: Optional[float], unit: str) -> str:
    """A value of the demo's summary: unit '%' is a fraction shown in %, '' a cosine."""
    return fmt(x, "fraction" if unit == "%" else "cosine")


def demo_table(summary: list[dict[str, Any]], quick: bool) -> Any:
    """The demo's targets (unlearn.demo.demo_summary) beside the measured values, met or missed."""
    from rich.table import Table

    table = Table("", "taught", "unlearned", "target", "", title="unlearn demo" + (" --quick" if quick else ""))
    for r in summary:
        mark = {True: "[green]met[/green]", False: "[red]missed[/red]", None: ""}[r["met"]]
        table.add_row(r["what"], demo_value(r["taught"], r["unit"]), demo_value(r["unlearned"], r["unit"]),
                      r["target"], mark)
    return table


def compare_table(data: dict[str, Any]) -> Any:
    """compare.json's data for the terminal: timings, memory and the two trade-off metrics per
    method (errors and every other metric are in compare.md/html)."""
    from rich.table import Table

    axes = [a for a in (data["axes"]["x"], data["axes"]["y"]) if a]
    if data.get("audit"):
        axes.append("audit.worst_recovered")
    table = Table("method", "status", "steps", "train s", "eval s", "peak MB train/eval", *[axis_label(a) for a in axes])

    def value(metrics: dict[str, Any], key: str) -> str:
        role, name = key.split(".", 1)
        unit = data["metrics"].get(role, {}).get(name, {}).get("unit", "fraction")
        return fmt(metrics.get(role, {}).get(name), unit)

    o = data["original"]
    table.add_row("original", "", "0", "–", fmt_seconds(o["eval_seconds"]), f"–/{fmt_mb(o.get('peak_bytes'))}",
                  *[value(o["metrics"], a) for a in axes])
    for m, r in data["runs"].items():
        ok = r["status"] == "done"
        table.add_row(
            m, "[green]done[/green]" if ok else f"[red]failed ({r.get('failed_phase')})[/red]",
            "–" if r.get("steps") is None else str(r["steps"]), fmt_seconds(r.get("train_seconds")),
            fmt_seconds(r.get("eval_seconds")), f"{fmt_mb(r.get('train_peak_bytes'))}/{fmt_mb(r.get('eval_peak_bytes'))}",
            *[value(r["metrics"], a) for a in axes],
        )
    return table


def audit_table(audit: dict[str, Any]) -> Any:
    """audit.json for the terminal: the headline, then one row per attack and forget set."""
    from rich.console import Group
    from rich.markup import escape
    from rich.table import Table

    from unlearn.report.audit_report import headline_text, rows

    lines = [f"[{'bold green' if h['held'] else 'bold red'}]{escape(headline_text(h))}[/]" for h in audit.get("headline", [])]
    table = Table("attack", "set", "rate", "original\nattacked", "unlearned\nbefore", "unlearned\nattacked",
                  "retain acc.\nattacked", title="is it really gone? (unlearned model unless marked)")
    for r in rows(audit):
        style = "bold red" if r["worst"] else ""
        table.add_row(r["attack"], r["set"], r["metric"], r["original"], r["before"],
                      f"[{style}]{r['after']}[/]" if style else r["after"], r["retain_after"])
    return Group(*lines, table)


def attacks_table() -> Any:
    """`unlearn audit --list`: every registered attack and jailbreak rewrite."""
    from rich.console import Group
    from rich.table import Table

    from unlearn.auditing.registry import available_attacks
    from unlearn.auditing.rewrites import rewrites

    attacks = Table("attack", "kind", "what it does", "source", title="attacks (audit.attacks)")
    for a in available_attacks().values():
        attacks.add_row(a.name, a.kind, a.description, a.source)
    bank = Table("rewrite", "what it does", "source", title="jailbreak rewrites (audit.jailbreaks)")
    for r in rewrites().values():
        bank.add_row(r.name, r.description, r.source)
    return Group(attacks, bank)


def collect_table(summary: dict[str, Any]) -> Any:
    """`unlearn collect`'s summary: bad answers per prompt, and what the bank gave."""
    from rich.table import Table

    table = Table("prompt", "bad answers", title=f"judge: {summary['judge']}")
    for row in summary["bad_per_prompt"]:
        text = row["prompt"] if len(row["prompt"]) <= 70 else row["prompt"][:67] + "..."
        table.add_row(text, f"{row['bad']} of {row['of']}")
    b = summary["bank"]
    table.caption = (f"{summary['forget']['answers']} bad answers to {summary['forget']['prompts']} of "
                     f"{summary['prompts']} prompts; retain bank: {b['retain']} retain + {b['normal']} normal "
                     f"answers, {len(b['dropped'])} bank prompts dropped as too close to the forget prompts")
    return table
