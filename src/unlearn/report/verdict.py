"""The verdict at the top of `unlearn eval`'s report (report.md, report.html, the terminal):
"Forgotten?" and "Utility kept?", each with the checks and numbers behind it, and whether the
normal outputs collapsed (then no improvement is shown as plain "better": see summary_rows).

The verdict itself is computed by unlearn.evaluate.verdict and stored in metrics.json; a
metrics.json without one (written by an older version, or made by hand) gets it computed here with
the default thresholds (eval.verdict)."""

from __future__ import annotations

from typing import Any

from unlearn.report.format import escape, fmt, fmt_with_interval

CAVEAT = "better, but normal outputs collapsed"
QUESTIONS = (("forgotten", "Forgotten?"), ("utility", "Utility kept?"))


def verdict_of(metrics: dict[str, Any]) -> dict[str, Any]:
    """metrics.json's verdict, or one computed with the default thresholds when it has none."""
    if metrics.get("verdict") is not None:
        return metrics["verdict"]
    from unlearn.config.evaluation import VerdictConfig
    from unlearn.evaluate.verdict import verdict

    return verdict(metrics["metrics"], VerdictConfig())


def rule_text(c: dict[str, Any]) -> str:
    """What a check held its value to: '<= 5.0%', '>= 0.9x original (100.0%)', '<= 50.0% (original 10.0%)'."""
    if c["factor"] is not None:
        return f"{c['op']} {c['factor']:g}x original ({fmt(c['original'], c['unit'])})"
    text = f"{c['op']} {fmt(c['limit'], c['unit'])}"
    if c["collapse"] and c["original"] is not None:
        text += f" (original {fmt(c['original'], c['unit'])})"
    return text


def answer_word(met: Any) -> str:
    return {True: "yes", False: "no", None: "not measured"}[met]


def verdict_lines(metrics: dict[str, Any]) -> list[tuple[str, bool | None, str]]:
    """(question with its answer, met, the reason in a sentence) for each question."""
    v = verdict_of(metrics)
    t = v["thresholds"]
    out = []
    for key, question in QUESTIONS:
        a = v[key]
        missed = [f"{c['set']} {c['metric']}" for c in a["checks"] if not c["met"]]
        if a["met"] is None:
            why = "no metric to judge it by"
        elif key == "forgotten":
            why = (f"every forgetting rate on forget and forget_test at most {fmt(t['forget_target'], 'fraction')}"
                   if a["met"] else f"above {fmt(t['forget_target'], 'fraction')}: {', '.join(missed)}")
            wide = [f"{c['set']} {c['metric']} up to {fmt(c['interval'][1], 'fraction')}"
                    for c in a["checks"] if c["met"] and c["interval"] and c["interval"][1] > t["forget_target"]]
            if wide:
                why += f"; but the 95 % interval reaches {', '.join(wide)} (more prompts would tell)"
        else:
            why = ("retain accuracy, normal-prompt similarity, fluency and answer variety held"
                   if a["met"] else f"missed: {', '.join(missed)}")
            if v["collapsed"]:
                why = "normal outputs collapsed; " + why
        out.append((f"{question} {answer_word(a['met'])}", a["met"], why))
    return out


def verdict_rows(metrics: dict[str, Any]) -> list[dict[str, str]]:
    """Every check as text cells: question, set, metric, unlearned value (with its interval), rule, met."""
    v = verdict_of(metrics)
    return [
        {"question": question, "set": c["set"], "metric": c["metric"],
         "value": fmt_with_interval(c["value"], c["unit"], c["interval"]), "rule": rule_text(c),
         "met": "met" if c["met"] else "missed"}
        for key, question in QUESTIONS for c in v[key]["checks"]
    ]


def verdict_markdown(metrics: dict[str, Any]) -> list[str]:
    """report.md's verdict section, as lines."""
    lines = ["## Verdict", ""]
    lines += [f"- **{label}**: {why}" for label, _, why in verdict_lines(metrics)]
    rows = verdict_rows(metrics)
    if rows:
        lines += ["", "| question | set | metric | unlearned | rule | |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['question']} | {r['set']} | {r['metric']} | {r['value']} | {r['rule']} | {r['met']} |"
                  for r in rows]
    return lines + [""]


def verdict_html(metrics: dict[str, Any]) -> list[str]:
    """report.html's verdict section, as parts (escaped)."""
    parts = ["<h2>Verdict</h2><div class='verdict'>"]
    for label, met, why in verdict_lines(metrics):
        cls = {True: "met", False: "missed", None: ""}[met]
        parts.append(f"<p><b class='{cls}'>{escape(label)}</b>: {escape(why)}</p>")
    rows = verdict_rows(metrics)
    if rows:
        parts.append("<table class='summary'><tr><th>question</th><th>set</th><th>metric</th><th>unlearned</th>"
                     "<th>rule</th><th></th></tr>")
        parts += [f"<tr><td>{escape(r['question'])}</td><td>{escape(r['set'])}</td><td>{escape(r['metric'])}</td>"
                  f"<td class='num'>{escape(r['value'])}</td><td>{escape(r['rule'])}</td>"
                  f"<td class='{r['met']}'>{escape(r['met'])}</td></tr>" for r in rows]
        parts.append("</table>")
    return parts + ["</div>"]
