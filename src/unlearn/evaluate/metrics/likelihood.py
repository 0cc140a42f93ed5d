"""The targets' likelihood under the model: NLL per response token."""

from __future__ import annotations

from typing import Any, Optional, Sequence

from unlearn.evaluate.metrics.registry import Metric, SetScoring, check_lengths, mean, register_metric

def nll(values: Sequence[float]) -> Metric:
    """Teacher-forced NLL per response token, averaged over examples (the loss terms' averaging)."""
    vals: list[Optional[float]] = [float(v) for v in values]
    return Metric(mean(vals), vals)


@register_metric(
    "nll", sets=("forget", "forget_test", "retain"), unit="nats", higher_is_better_when_forbidden=True,
    follows_target=True, description="teacher-forced NLL per response token (nats)",
    fast={"forget": "forget_nll", "retain": "retain_nll"}, rank=50,
)
def _nll(x: SetScoring) -> Optional[Metric]:
    return None if x.nll is None else nll(x.nll)
