"""`unlearn audit`: every attack on the unlearned model and, as the baseline, on the original.

    check the run, the attack and rewrite names, the sets (before any model is loaded)
    for each model (unlearned, then original; one in memory at a time):
        the sets asked as in evaluation (no attack)
        every prompt attack's probes, generated together
        every weight, relearning and membership attack, each on its own copy of the model
    -> audit.json's content: a row per attack variant with each set's rates on both models, the
       unlearned model's rates on the same items without the attack, recovered examples, and the
       headline: the worst forgetting rate any attack reached on the unlearned model

The original model's outputs go through the output cache (unlearn.evaluate.cache): `compare
--audit` over several methods of one original generates them once.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Optional

from unlearn.auditing.context import FORGET_ROLES, AuditContext
from unlearn.auditing.registry import KINDS, AttackSpec, Trial, available_attacks
from unlearn.auditing.rewrites import rewrites
from unlearn.config import Config, EvalSetConfig
from unlearn.errors import UnlearnError
from unlearn.evaluate.cache import OutputCache, model_fingerprint
from unlearn.evaluate.run import check_run, free_model, pick_device, prepare
from unlearn.evaluate.sets import read_eval_set

LABELS = ("unlearned", "original")


def selected_attacks(cfg: Config) -> list[AttackSpec]:
    """audit.attacks (checked), else every registered attack; in kind order. Also checks
    audit.jailbreaks. UnlearnError naming the key's file and line for an unknown name."""
    known = available_attacks()
    names = cfg.audit.attacks or list(known)
    bad = [n for n in names if n not in known]
    if bad:
        raise UnlearnError(f"{cfg.origin('audit.attacks')}: audit.attacks: unknown attack '{bad[0]}'; "
                           f"attacks: {', '.join(known)}")
    kinds = set(rewrites())
    bad = [n for n in cfg.audit.jailbreaks or [] if n not in kinds]
    if bad:
        raise UnlearnError(f"{cfg.origin('audit.jailbreaks')}: audit.jailbreaks: unknown rewrite '{bad[0]}'; "
                           f"rewrites: {', '.join(kinds)}")
    return sorted((known[n] for n in dict.fromkeys(names)), key=lambda s: KINDS.index(s.kind))


def _holdout_config(cfg: Config, forget_kind: str) -> EvalSetConfig:
    src = cfg.audit.holdout
    assert src is not None
    keys = {f.name: getattr(src, f.name) for f in dataclasses.fields(src)}
    return EvalSetConfig(**keys, kind=forget_kind)


def build_context(cfg: Config, model_dir: Optional[Path], allow_unfinished: bool) -> tuple[AuditContext, list[AttackSpec], dict[str, str], Path, Path, dict]:
    """Everything that can fail on bad input, checked before a model is loaded."""
    out, model_dir, manifest = check_run(cfg, model_dir, allow_unfinished)
    specs = selected_attacks(cfg)
    device = pick_device(cfg)
    tokenizer, sets, judge, embedder, similarity = prepare(cfg, device, manifest.get("trained_examples"))
    if not any(r in sets for r in FORGET_ROLES):
        raise UnlearnError(f"{cfg.origin('eval')}: the audit needs a forget set (data.forget or eval.forget); "
                           "there is nothing to recover")
    cache = OutputCache() if cfg.eval.cache else None
    fingerprints = {"original": model_fingerprint(cfg.model.name, cfg.model.revision),
                    "unlearned": model_fingerprint(str(model_dir))} if cache else {}
    ctx = AuditContext(cfg, tokenizer, sets, judge=judge, embedder=embedder, similarity=similarity, device=device,
                       cache=cache, fingerprints=fingerprints,
                       paths={"original": cfg.model.name, "unlearned": str(model_dir)})
    if cfg.audit.paraphrases is not None:
        ctx.extra["paraphrases"] = read_eval_set(cfg.audit.paraphrases, "forget_test", tokenizer, "audit.paraphrases")
    if cfg.audit.holdout is not None:
        kind = next(iter(ctx.sets[r] for r in ctx.forget_roles)).kind
        ctx.extra["holdout"] = read_eval_set(_holdout_config(cfg, kind), "forget_test", tokenizer, "audit.holdout")
    skipped = {s.name: reason for s in specs if (reason := s.applies(ctx))}
    return ctx, specs, skipped, out, model_dir, manifest


def attack_model(ctx: AuditContext, model: Any, label: str, specs: list[AttackSpec]) -> tuple[Trial, list[tuple[AttackSpec, Trial]]]:
    """(the no-attack trial, [(attack, trial)]) of one model."""
    for s in specs:
        if s.check is not None:
            s.check(model)
    plain = ctx.measure(model, label, [ctx.plain()])[0]
    done: list[tuple[AttackSpec, Trial]] = []
    prompt_specs = [s for s in specs if s.kind == "prompt"]
    probes = [(s, p) for s in prompt_specs for p in s.run(ctx, model, label)]
    for (s, _), trial in zip(probes, ctx.measure(model, label, [p for _, p in probes])):
        done.append((s, trial))
    for s in specs:
        if s.kind != "prompt":
            t0 = time.time()
            trials = s.run(ctx, model, label)
            for t in trials:
                t.seconds = round((time.time() - t0) / len(trials), 2)
                done.append((s, t))
    return plain, done


def run_audit(cfg: Config, *, model_dir: Optional[Path] = None, allow_unfinished: bool = False,
              console: Any = None) -> dict[str, Any]:
    """Attack OUTPUT_DIR/model (or `model_dir`) and the original model; audit.json's content.
    Writes nothing (unlearn.report.write_audit does)."""
    from unlearn.models import load_model

    t0 = time.time()
    ctx, specs, skipped, out, model_dir, manifest = build_context(cfg, model_dir, allow_unfinished)
    run = [s for s in specs if s.name not in skipped]
    results: dict[str, tuple[Trial, list[tuple[AttackSpec, Trial]]]] = {}
    seconds = {}
    for label in LABELS:
        t1 = time.time()
        if console is not None:
            console.print(f"audit: {label} model, {len(run)} attacks")
        mc = cfg.model if label == "original" else dataclasses.replace(cfg.model, name=str(model_dir))
        model, _ = load_model(mc, ctx.tokenizer)
        model.to(ctx.device)
        try:
            results[label] = attack_model(ctx, model, label, run)
        finally:
            free_model(model)
        seconds[label] = round(time.time() - t1, 2)
    from unlearn.auditing.summary import summarise

    data = summarise(ctx, results, skipped)
    from unlearn.version import __version__

    a = cfg.audit
    return {
        "unlearn_version": __version__,
        "run": {"output_dir": str(out), "model_dir": str(model_dir), "original_model": cfg.model.name,
                "objective": manifest.get("objective", cfg.objective), "steps": manifest.get("steps")},
        "settings": {
            "template": cfg.data.template, "max_new_tokens": cfg.eval.max_new_tokens,
            "decoding": "sampling" if cfg.eval.do_sample else "greedy", "retain_limit": a.retain_limit,
            "quant_bits": a.quant_bits, "quant_group_size": a.quant_group_size,
            "relearn": {"steps": a.relearn_steps, "lr": a.relearn_lr, "batch_size": a.relearn_batch_size,
                        "lora_r": a.relearn_lora_r, "fraction": a.relearn_fraction},
            "mink_k": a.mink_k, "forget_target": cfg.eval.verdict.forget_target, "device": ctx.device, "seed": cfg.seed,
        },
        **data,
        "seconds": {**seconds, "total": round(time.time() - t0, 2)},
    }
