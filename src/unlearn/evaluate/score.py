"""Scoring both models' outputs on every set: the metrics table and the per-example samples.

Which metrics a set gets, their units and which way is better come from the metric registry
(unlearn.evaluate.metrics); nothing here names a metric.
"""

from __future__ import annotations

from typing import Any, Optional

from unlearn.config import Config
from unlearn.evaluate.metrics.interval import rate_interval
from unlearn.evaluate.metrics import Metric, SetScoring, better, direction, get_metric, metrics_for, round_value
from unlearn.evaluate.sets import EvalSet


def score_set(x: SetScoring) -> dict[str, Metric]:
    """Every registered metric that applies to x's set and can be computed, in report order."""
    out: dict[str, Metric] = {}
    for spec in metrics_for(x.set.role):
        m = spec.compute(x)
        if m is not None:
            out[spec.name] = m
    return out


def metric_row(name: str, target: str, original: Optional[Metric], unlearned: Optional[Metric]) -> dict[str, Any]:
    """One line of metrics.json: both values rounded, the change and whether it is for the better."""
    spec = get_metric(name)
    higher = direction(name, target)
    vo = original.value if original else None
    vu = unlearned.value if unlearned else None
    ro, ru = round_value(vo, spec.unit), round_value(vu, spec.unit)
    row: dict[str, Any] = {  # the change of the rounded values, so that the report's columns add up
        "original": ro,
        "unlearned": ru,
        "change": round_value(ru - ro, spec.unit) if ro is not None and ru is not None else None,
        "higher_is_better": higher,
        "better": better(vo, vu, higher),
        "unit": spec.unit,
        "description": spec.description,
    }
    intervals = {label: [round(b, 4) for b in ci] for label, m in (("original", original), ("unlearned", unlearned))
                 if m is not None and spec.rate and (ci := rate_interval(m.per_example))}
    if intervals:  # every rate's 95 % Wilson interval
        row["interval"] = intervals
    details = {}
    for label, m in (("original", original), ("unlearned", unlearned)):
        if m is not None:
            d = {k: v for k, v in m.extra.items() if k != "bleu"}  # per-example BLEU goes to the samples
            if d:
                details[label] = d
    if details:
        row["details"] = details
    return row


def evaluate_outputs(
    cfg: Config,
    sets: dict[str, EvalSet],
    original: Any,
    unlearned: Any,
    *,
    judge: Any = None,
    embedder: Any = None,
    similarity: Any = None,
) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """(metrics by set and name, sample lines) from both models' outputs (ModelOutputs). `similarity`
    scores the hallucination rate (an Embedder or BertScorer); `embedder` gives the normal-set cosine."""
    table: dict[str, dict[str, Any]] = {}
    samples: list[dict[str, Any]] = []
    for role, s in sets.items():
        per_model: dict[str, dict[str, Metric]] = {}
        for res in (original, unlearned):
            x = SetScoring(
                set=s, outputs=res.outputs[role], settings=cfg.eval, nll=res.nll.get(role),
                fluency_nll=res.fluency_nll.get(role),
                original_outputs=original.outputs[role] if res is unlearned else None,
                judge=judge, embedder=embedder, similarity=similarity,
            )
            per_model[res.label] = score_set(x)
        mo, mu = per_model["original"], per_model["unlearned"]
        names = list(mu) + [n for n in mo if n not in mu]
        target = cfg.eval.target_of(role)  # the set's declared target: which way each metric is better
        table[role] = {name: metric_row(name, target, mo.get(name), mu.get(name)) for name in names}
        for idx, item in enumerate(s.items):
            scores = {
                label: {
                    **{n: m.per_example[idx] for n, m in ms.items()},
                    **({"bleu": round(ms[k].extra["bleu"][idx], 2)} if (k := _bleu_key(ms)) else {}),
                }
                for label, ms in per_model.items()
            }
            samples.append({
                "set": role, "index": idx, "where": item.where, "prompt": item.prompt, "target": item.target,
                "original": original.outputs[role][idx], "unlearned": unlearned.outputs[role][idx],
                "scores": scores,
            })
    return table, samples


def _bleu_key(ms: dict[str, Metric]) -> Optional[str]:
    """The first metric that kept each example's BLEU against its target (the leak-rate family)."""
    return next((k for k, m in ms.items() if "bleu" in m.extra), None)
