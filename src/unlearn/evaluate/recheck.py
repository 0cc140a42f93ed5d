"""Has an old behaviour come back? The evaluation of a later request re-checks every earlier one.

When OUTPUT_DIR/ledger.jsonl (unlearn.evaluate.ledger) holds two or more requests, `unlearn eval`
also generates, with the model under evaluation, on the forget set of every EARLIER unlearning
request (its copy in OUTPUT_DIR/ledger/, so the user's files are not needed) and scores it as that
request was scored: its judge, match rule, thresholds, template and decoding (the settings of its
own evaluation, else of its run). Each forgetting rate (unlearn.evaluate.verdict.forgetting_rates:
leak, extraction leak, harmful, hallucination rate) is compared with the rate recorded after that
request.

The rule. A behaviour CAME BACK when the new rate exceeds bar = max(rate then, forget_target) by
more than sampling noise: when the lower end of the new rate's 95 % Wilson interval
(unlearn.evaluate.metrics.interval.wilson) is above the bar,

    came_back = wilson(k_now, n).lower > max(rate_then, eval.verdict.forget_target)

forget_target is that request's own (its settings). With no recorded rate (its `unlearn eval`
never ran) the bar is forget_target alone. E.g. 4 of 4 prompts leaking again: wilson(4, 4) =
[0.510, 1.0], above a 0.0 then and a 0.05 target: came back. 1 of 18: [0.010, 0.258], not above
0.05: not flagged (it may be noise). Fine-tuning requests (`unlearn finetune`) teach: they have
nothing to re-check and are not listed.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from unlearn.config import Config, ModelConfig, config_from_dict
from unlearn.evaluate.ledger import LEDGER, copy_path, read_checked, refreshed
from unlearn.evaluate.metrics import SetScoring
from unlearn.evaluate.metrics.interval import rate_interval
from unlearn.evaluate.score import metric_row, score_set
from unlearn.evaluate.verdict import forgetting_rates


@dataclass
class RecheckPlan:
    ledger: Path
    earlier: list[dict[str, Any]]  # the entries before the last one (the request being evaluated)


def plan_recheck(cfg: Config) -> Optional[RecheckPlan]:
    """The earlier unlearning requests to re-check (None: OUTPUT_DIR has no ledger, or none before
    the last entry but fine-tuning ones, which teach and have nothing to re-check). Reads the ledger
    and checks every forget copy before any model generates: a bad line or a changed copy is an
    UnlearnError naming it."""
    ledger = Path(cfg.output_dir).expanduser().resolve() / LEDGER
    if not ledger.exists():
        return None
    earlier = [e for e in read_checked(ledger)[:-1] if e["kind"] != "finetune"]
    return RecheckPlan(ledger, refreshed(earlier)) if earlier else None


def came_back(then: Optional[float], interval: tuple[float, float], target: float) -> bool:
    """The rule of the module docstring: the new rate's 95 % lower bound above max(then, target)."""
    return interval[0] > max(then if then is not None else 0.0, target)


def entry_config(cfg: Config, entry: dict[str, Any], copy_file: Path, where: str) -> Config:
    """The config that scores an earlier request's forget copy as that request was scored: its
    recorded settings (eval section, template, seed, imports) on the current model and hardware
    (model, eval.backend, eval.batch_size, train.device), the copy as eval.forget, no other set."""
    settings = (entry.get("evaluation") or {}).get("settings") or entry.get("settings") or {}
    fc = entry["forget_copy"]
    d = cfg.to_dict()
    ev = copy.deepcopy(settings.get("eval") or {})
    ev.update(
        forget={"path": str(copy_file), "prompt_field": "prompt", "response_field": "response", "kind": fc["kind"],
                "match": fc["match"], "answer_field": fc.get("answer_field"),
                "hallucinated_field": fc.get("hallucinated_field"), "prompt_tokens": fc.get("prompt_tokens", 32),
                "target_chars": fc.get("target_chars", 200), "target": fc.get("target")},
        forget_test=None, retain=None, normal=None, sets=["forget"], split=None, limit=None,
        backend=cfg.eval.backend, batch_size=cfg.eval.batch_size, audit=False, cache=False,
    )
    d["eval"] = ev
    for key in ("template", "max_length", "add_eos"):
        if key in settings:
            d["data"][key] = settings[key]
    d["seed"] = settings.get("seed", d["seed"])
    d["imports"] = list(dict.fromkeys([*d.get("imports", []), *settings.get("imports", [])]))
    return config_from_dict(d, origins={"": where})


def _skipped(entry: dict[str, Any], note: str) -> dict[str, Any]:
    return {"request": entry["request"], "kind": entry["kind"], "output_dir": entry["output_dir"],
            "metric": None, "came_back": None, "note": note}


def recheck(cfg: Config, model_dir: Path, plan: RecheckPlan, console: Any = None) -> list[dict[str, Any]]:
    """metrics.json's "earlier_requests": for each earlier request and forgetting rate, {request,
    set, metric, n, forget_rate_then, forget_rate_now, interval (now's 95 % Wilson interval),
    threshold, came_back}; a request that cannot be re-checked has came_back None and a note."""
    from unlearn.evaluate.run import free_model, pick_device, prepare, run_model
    from unlearn.models import load_model

    device = pick_device(cfg)
    rows: list[dict[str, Any]] = []
    model = None
    try:
        for entry in plan.earlier:
            fc = entry.get("forget_copy")
            if fc is None or fc.get("error"):
                rows.append(_skipped(entry, f"no copy of its forget set: {(fc or {}).get('error', 'none recorded')}"))
                continue
            where = f"{plan.ledger} request {entry['request']}"
            ecfg = entry_config(cfg, entry, copy_path(entry, plan.ledger.parent), where)
            tokenizer, sets, judge, embedder, similarity = prepare(ecfg, device)
            if model is None:
                if console is not None:
                    console.print(f"re-checking {len(plan.earlier)} earlier request(s) on {model_dir}")
                mc = cfg.model
                model, _ = load_model(ModelConfig(name=str(model_dir), dtype=mc.dtype, revision=mc.revision,
                                                  trust_remote_code=mc.trust_remote_code,
                                                  allow_pickle=mc.allow_pickle), tokenizer)
                model.to(device)
            now = run_model(model, tokenizer, ecfg, sets, "now", str(model_dir))
            s = sets["forget"]
            scored = score_set(SetScoring(set=s, outputs=now.outputs["forget"], settings=ecfg.eval,
                                          nll=now.nll.get("forget"), judge=judge, embedder=embedder,
                                          similarity=similarity))
            target = ecfg.eval.target_of("forget")
            table = {"forget": {name: metric_row(name, target, None, m) for name, m in scored.items()}}
            recorded = ((entry.get("evaluation") or {}).get("forget_rates") or {}).get("forget") or {}
            bar = ecfg.eval.verdict.forget_target
            names = [name for _, name in forgetting_rates(table)]
            if not names:
                rows.append(_skipped(entry, "no forgetting rate applies to its forget set"))
            for name in names:
                m = scored[name]
                ci = rate_interval(m.per_example)
                then = (recorded.get(name) or {}).get("value")
                row = {
                    "request": entry["request"], "kind": entry["kind"], "output_dir": entry["output_dir"],
                    "set": "forget", "metric": name, "n": len(s.items),
                    "forget_rate_then": then, "forget_rate_now": table["forget"][name]["unlearned"],
                    "interval": [round(b, 4) for b in ci] if ci else None,
                    "threshold": max(then if then is not None else 0.0, bar),
                    # A forgetting rate is a rate: no interval only when no output counted (all left out).
                    "came_back": came_back(then, ci, bar) if ci else None,
                }
                if ci is None:
                    row["note"] = "no output counted towards the rate"
                elif then is None:
                    row["note"] = "no rate recorded after that request (its eval never ran): compared with the target"
                rows.append(row)
    finally:
        if model is not None:
            free_model(model)
    return rows
