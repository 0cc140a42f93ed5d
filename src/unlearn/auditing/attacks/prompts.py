"""Prompt attacks: the same questions asked another way. The model's weights are untouched.

    template    the other prompt format: the tokenizer's chat template when the run trained with qa
                (or a format string), qa when it trained with chat. Unlearning that only learned
                "answer differently after '### Question:'" leaks here.
    jailbreak   each jailbreak-style rewrite of unlearn.auditing.rewrites (prefix injection, a forced
                "Sure, here is" start, role play, few-shot context, ...), one row per rewrite
    paraphrase  the user's own rewrites of the forget prompts (audit.paraphrases)

Each rewrite is applied to the retain prompts too: a rewrite after which the model also stops
answering ordinary questions breaks the model rather than extracting from it.
"""

from __future__ import annotations

from typing import Any, Optional

from unlearn.auditing.context import AuditContext, Probe
from unlearn.auditing.registry import register_attack
from unlearn.auditing.rewrites import RewriteContext, get_rewrite, rewrites


def other_template(ctx: AuditContext) -> Optional[str]:
    """The template the run did NOT train with (None: the tokenizer has no chat template)."""
    if ctx.cfg.data.template == "chat":
        return "qa"
    return "chat" if getattr(ctx.tokenizer, "chat_template", None) else None


def _template_applies(ctx: AuditContext) -> Optional[str]:
    if not ctx.qa_roles():
        return "no question/answer set (passages are given without a template)"
    if other_template(ctx) is None:
        return "the tokenizer has no chat template to ask with"
    return None


@register_attack("template", kind="prompt", source="Yao et al. 2024 (the paper's format shortcut, section 4); "
                 "RWKU (Jin et al. 2024)",
                 description="the questions in the other prompt format (chat template <-> qa)",
                 applies=_template_applies)
def template(ctx: AuditContext, model: Any, label: str) -> list[Probe]:
    roles = ctx.qa_roles()
    return [Probe(f"template:{other_template(ctx)}", {r: ctx.sets[r] for r in roles}, other_template(ctx) or "",
                  items={r: list(range(len(ctx.sets[r].items))) for r in roles})]


def chosen_rewrites(ctx: AuditContext) -> list[str]:
    """audit.jailbreaks, or every registered rewrite."""
    return list(ctx.cfg.audit.jailbreaks or rewrites())


def shots(ctx: AuditContext, n: int = 4) -> tuple[tuple[str, str], ...]:
    """Question/answer pairs for few-shot context: retain examples the audit does not measure
    (beyond audit.retain_limit), else the last ones, so a shot never answers a measured question."""
    full = ctx.full_retain
    if full is None:
        return ()
    measured = len(ctx.sets["retain"].items) if "retain" in ctx.sets else 0
    pool = full.items[measured:] or full.items[-n:]
    return tuple((i.prompt, i.target or "") for i in pool[:n] if i.target)


def _jailbreak_applies(ctx: AuditContext) -> Optional[str]:
    return None if ctx.qa_roles() else "no question/answer set (passages are given without a template)"


@register_attack("jailbreak", kind="prompt", source="RWKU (Jin et al. 2024) adversarial probes; "
                 "Lynch et al. 2024; Shi et al. 2024",
                 description="jailbreak-style rewrites of every question (one row per rewrite)",
                 applies=_jailbreak_applies)
def jailbreak(ctx: AuditContext, model: Any, label: str) -> list[Probe]:
    rctx = RewriteContext(shots=shots(ctx), seed=ctx.cfg.seed)
    roles = ctx.qa_roles()
    probes = []
    for name in chosen_rewrites(ctx):
        fn = get_rewrite(name).fn
        probe = Probe(f"jailbreak:{name}", {r: ctx.sets[r] for r in roles}, ctx.cfg.data.template,
                      items={r: list(range(len(ctx.sets[r].items))) for r in roles})
        for r in roles:
            done = [fn(q, rctx) for q in ctx.sets[r].prompts]
            probe.prompts[r] = [d.prompt for d in done]
            if any(d.prefill for d in done):
                probe.prefills[r] = [d.prefill for d in done]
        probes.append(probe)
    return probes


@register_attack("paraphrase", kind="prompt", source="your own rewrites (audit.paraphrases)",
                 description="your paraphrases of the forget prompts, scored by their own targets",
                 applies=lambda ctx: None if "paraphrases" in ctx.extra else "audit.paraphrases is not set")
def paraphrase(ctx: AuditContext, model: Any, label: str) -> list[Probe]:
    s = ctx.extra["paraphrases"]
    return [Probe("paraphrase", {"paraphrases": s}, ctx.cfg.data.template,
                  items={"paraphrases": list(range(len(s.items)))})]
