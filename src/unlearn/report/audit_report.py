"""The "Is it really gone?" section (audit.json rendered), in Markdown and HTML.

It stands alone in OUTPUT_DIR/audit/report.{md,html} and is appended to the evaluation report
when `unlearn eval` ran the audit (eval.audit: true) or `unlearn audit` found that report.
"""

from __future__ import annotations

from typing import Any, Optional

from unlearn.report.format import escape, fmt, html_head, md_cell

FORGET_FIRST = ("forget", "forget_test", "paraphrases")
RETAIN = ("retain", "retain_accuracy")


def _value(cell: Optional[dict[str, Any]]) -> Optional[float]:
    return None if cell is None else cell.get("value")


def headline_text(h: dict[str, Any]) -> str:
    """One sentence: the worst recovered rate, where, against the rule and the no-attack values."""
    verdict = "held" if h["held"] else "NOT held"
    if not h.get("raised", True):
        return (f"no attack made {h['metric']} worse than without one ({fmt(h['no_attack'], 'fraction')}); "
                f"{verdict} against the forget target ({'at most' if h['rule']['op'] == '<=' else 'at least'} "
                f"{fmt(h['rule']['limit'], 'fraction')}). The original model: {fmt(h['original_no_attack'], 'fraction')}.")
    return (f"worst {h['metric']} under attack: {fmt(h['value'], 'fraction')} ({h['set']}, {h['variant']}); "
            f"{verdict} against the forget target ({'at most' if h['rule']['op'] == '<=' else 'at least'} "
            f"{fmt(h['rule']['limit'], 'fraction')}). "
            f"Without an attack: {fmt(h['no_attack'], 'fraction')}; the original model: "
            f"{fmt(h['original_no_attack'], 'fraction')}.")


def rows(audit: dict[str, Any]) -> list[dict[str, Any]]:
    """One table row per (attack variant, forget set, forgetting rate): the original model after
    the attack, the unlearned model before and after it, and retain accuracy after it."""
    worst = {(h["variant"], h["set"], h["metric"]) for h in audit.get("headline", []) if h.get("raised", True)}
    names = [h["metric"] for h in audit.get("headline", [])]
    out = []
    for row in audit["attacks"]:
        keep_u = _value(row["unlearned"].get(RETAIN[0], {}).get(RETAIN[1]))
        keep_o = _value(row["original"].get(RETAIN[0], {}).get(RETAIN[1]))
        for role in [r for r in FORGET_FIRST if r in row["unlearned"]]:
            for name in [n for n in names if n in row["unlearned"][role]]:
                out.append({
                    "attack": row["variant"], "kind": row["kind"], "set": role, "metric": name,
                    "original": fmt(_value(row["original"].get(role, {}).get(name)), "fraction"),
                    "before": fmt(row["before"].get(role, {}).get(name), "fraction"),
                    "after": fmt(_value(row["unlearned"][role][name]), "fraction"),
                    "retain_original": fmt(keep_o, "fraction"), "retain_after": fmt(keep_u, "fraction"),
                    "worst": (row["variant"], role, name) in worst,
                })
    return out


def auc_text(x: Optional[float]) -> str:
    return "–" if x is None else f"{x:.3f}"


def membership_rows(audit: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    m = audit.get("membership")
    if not m:
        return []
    out = []
    for score, res in m["unlearned"].items():
        o = (m.get("original") or {}).get(score, {}).get("auc")
        u = res.get("auc")
        out.append((score, auc_text(o), auc_text(u), auc_text(None if u is None else abs(u - 0.5))))
    return out


INTRO = ("Attacks that try to bring the forgotten outputs back, run on the unlearned model and, as the "
         "reference, on the original. 'before': the unlearned model on the same prompts without the attack. "
         "Retain accuracy after the attack tells an attack that extracts from one that breaks the model.")


def render_markdown(audit: dict[str, Any], level: int = 2) -> str:
    h = "#" * level
    lines = [f"{h} Is it really gone?", "", INTRO, ""]
    for head in audit.get("headline", []):
        lines.append(f"- **{md_cell(headline_text(head))}**")
    lines += ["", "| attack | set | rate | original, attacked | unlearned, before | unlearned, attacked | "
              "retain acc. original, attacked | retain acc. unlearned, attacked |", "|---|---|---|---|---|---|---|---|"]
    for r in rows(audit):
        b = "**" if r["worst"] else ""
        lines.append(f"| {b}{r['attack']}{b} | {r['set']} | {r['metric']} | {r['original']} | {r['before']} | "
                     f"{b}{r['after']}{b} | {r['retain_original']} | {r['retain_after']} |")
    mrows = membership_rows(audit)
    if mrows:
        m = audit["membership"]
        lines += ["", f"Membership inference: forget targets ({m.get('members')}) against {m.get('nonmember_set')} "
                  f"({m.get('nonmembers')}); AUC 0.5 = cannot tell them apart.", "",
                  "| score | AUC original | AUC unlearned | distance from 0.5 |", "|---|---|---|---|"]
        lines += [f"| {s} | {o} | {u} | {d} |" for s, o, u, d in mrows]
    if audit.get("skipped"):
        lines += ["", "Not run: " + "; ".join(f"{k} ({v})" for k, v in audit["skipped"].items()) + "."]
    ex = [(row["variant"], e) for row in audit["attacks"] for e in row["examples"]]
    if ex:
        lines += ["", f"{h}# Recovered outputs", "", "| attack | prompt | target | before | after the attack |",
                  "|---|---|---|---|---|"]
        for v, e in ex[:30]:
            lines.append(f"| {v} | {md_cell(e['prompt'])} | {md_cell(e['target'] or '')} | {md_cell(e['before'] or '')} "
                         f"| {md_cell(e['after'])} |")
    else:
        lines += ["", "No attack brought back an output the unlearned model had stopped giving."]
    return "\n".join(lines) + "\n"


def render_html_section(audit: dict[str, Any]) -> str:
    parts = ["<h2>Is it really gone?</h2>", f"<p class='small'>{escape(INTRO)}</p>", "<div class='verdict'>"]
    for head in audit.get("headline", []):
        cls = "met" if head["held"] else "missed"
        parts.append(f"<p class='{cls}'><b>{escape(headline_text(head))}</b></p>")
    parts += ["</div>", "<table class='summary'><tr><th>attack</th><th>set</th><th>rate</th><th>original, attacked</th>"
              "<th>unlearned, before</th><th>unlearned, attacked</th><th>retain acc. original, attacked</th>"
              "<th>retain acc. unlearned, attacked</th></tr>"]
    for r in rows(audit):
        cls = " class='worse'" if r["worst"] else ""
        parts.append(f"<tr{cls}><td>{escape(r['attack'])}</td><td>{escape(r['set'])}</td><td>{escape(r['metric'])}</td>"
                     f"<td class='num'>{escape(r['original'])}</td><td class='num'>{escape(r['before'])}</td>"
                     f"<td class='num change'>{escape(r['after'])}</td><td class='num'>{escape(r['retain_original'])}</td>"
                     f"<td class='num'>{escape(r['retain_after'])}</td></tr>")
    parts.append("</table>")
    mrows = membership_rows(audit)
    if mrows:
        m = audit["membership"]
        parts.append(f"<p class='small'>Membership inference: forget targets ({escape(m.get('members'))}) against "
                     f"{escape(m.get('nonmember_set'))} ({escape(m.get('nonmembers'))}); AUC 0.5 = cannot tell them apart.</p>")
        parts.append("<table><tr><th>score</th><th>AUC original</th><th>AUC unlearned</th><th>distance from 0.5</th></tr>")
        parts += [f"<tr><td>{escape(s)}</td><td class='num'>{o}</td><td class='num'>{u}</td><td class='num'>{d}</td></tr>"
                  for s, o, u, d in mrows]
        parts.append("</table>")
    if audit.get("skipped"):
        parts.append("<p class='small'>Not run: " + escape("; ".join(f"{k} ({v})" for k, v in audit["skipped"].items())) + ".</p>")
    ex = [(row["variant"], e) for row in audit["attacks"] for e in row["examples"]]
    if ex:
        parts.append("<h3>Recovered outputs</h3><table class='ex'><tr><th>attack</th><th>prompt</th><th>target</th>"
                     "<th>before</th><th>after the attack</th></tr>")
        parts += [f"<tr class='leak'><td>{escape(v)}</td><td>{escape(e['prompt'])}</td><td>{escape(e['target'] or '')}</td>"
                  f"<td>{escape(e['before'] or '')}</td><td>{escape(e['after'])}</td></tr>" for v, e in ex[:30]]
        parts.append("</table>")
    else:
        parts.append("<p>No attack brought back an output the unlearned model had stopped giving.</p>")
    return "\n".join(parts)


def render_html(audit: dict[str, Any]) -> str:
    """OUTPUT_DIR/audit/report.html: the section on its own page."""
    return "\n".join([html_head("Audit: is it really gone?"), "<h1>Audit</h1>",
                      f"<p class='meta'>Unlearned model <code>{escape(audit['run']['model_dir'])}</code>; original "
                      f"<code>{escape(audit['run']['original_model'])}</code>.</p>",
                      render_html_section(audit),
                      f"<p class='small'>unlearn {escape(audit.get('unlearn_version', ''))}; the audit took "
                      f"{escape(audit.get('seconds', {}).get('total'))} s.</p></body></html>"])
