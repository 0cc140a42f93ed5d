"""The metric registry: each metric's name, the evaluation sets it applies to, its unit and its direction.

A metric is registered with the function that computes it from a SetScoring (one model's outputs on
one set, and what else the evaluation loaded); the function returns None where the metric cannot be
computed (no judge configured, a set without hallucinated answers, ...):

    @register_metric("leak_rate", sets=("forget", "forget_test"), unit="fraction",
                     higher_is_better_when_forbidden=False, follows_target=True,
                     description="fraction of outputs that reproduce the target response")
    def _leak_rate(x: SetScoring) -> Metric | None: ...

Direction. Every set has a target: text the model must no longer produce (FORBIDDEN: the forget
sets) or text it should still produce (DESIRED: retain, normal). `higher_is_better_when_forbidden`
says which way is better on a forbidden target; a metric that `follows_target` (leak rate, ROUGE,
NLL of the targets) turns around on a desired one, the others (diversity, fluency) do not.
`direction(metric, target)` answers for both; reports, compare and keep_best ask it.

Metric modules are found, not listed: every module of this package is imported on first use.
"""

from __future__ import annotations

from unlearn.discovery import Registry

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

FORBIDDEN = "forbidden"
DESIRED = "desired"

# Decimals a value of each unit is reported with. score: a unitless number (a truth ratio, an
# accuracy-like harmonic mean, an AUC); pvalue: a test's p-value, which can be 1e-12 (TOFU's forget
# quality), shown with 3 significant digits.
UNITS = {"fraction": 4, "bleu": 2, "nats": 4, "perplexity": 2, "cosine": 4, "score": 4, "pvalue": 15}


@dataclass
class Metric:
    """An aggregate over examples plus the per-example values it came from (None: left out)."""

    value: Optional[float]
    per_example: list[Optional[float]]
    extra: dict[str, Any] = field(default_factory=dict)


def mean(values: Sequence[Optional[float]]) -> Optional[float]:
    """The mean of the values that are not None; None if none is."""
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def check_lengths(*seqs: Sequence[Any]) -> None:
    """ValueError unless all sequences have the same length (outputs, targets, ... of one set)."""
    n = {len(s) for s in seqs}
    if len(n) > 1:
        raise ValueError(f"sequences of different lengths: {[len(s) for s in seqs]}")


@dataclass
class SetScoring:
    """What a metric may read to score one model's outputs on one set."""

    set: Any  # an EvalSet (unlearn.evaluate.sets): role, kind, match, items, prompts, targets
    outputs: list[str]
    settings: Any  # the EvalConfig: bleu_threshold, hallucination_margin, ...
    nll: Optional[list[float]] = None  # teacher-forced NLL per target token, when the set has targets
    fluency_nll: Optional[list[Optional[float]]] = None  # each output's NLL under the original model
    original_outputs: Optional[list[str]] = None  # the original model's outputs (scoring the unlearned one)
    judge: Any = None  # eval.judge, loaded: judge(prompts, outputs, references) -> [harmful?]
    embedder: Any = None  # sentence embeddings: .pairwise(a, b) -> cosines
    similarity: Any = None  # the hallucination similarity (an embedder or BERTScore): .pairwise

    @property
    def targets(self) -> list[str]:
        return self.set.targets

    @property
    def answers(self) -> Optional[list[Any]]:
        """The key answers of each example with match: contains; None with match: bleu."""
        return [i.answers for i in self.set.items] if self.set.match == "contains" else None


Compute = Callable[[SetScoring], Optional[Metric]]


@dataclass(frozen=True)
class MetricSpec:
    name: str
    compute: Compute
    sets: tuple[str, ...]  # the evaluation sets it applies to
    unit: str  # a key of UNITS
    higher_is_better_when_forbidden: bool
    follows_target: bool  # the direction turns around on a set whose target is desired
    description: str
    fast: tuple[tuple[str, str], ...]  # (set, key) it is logged under in training-time evaluation
    trade_off: bool  # part of eval.trade_off's default score
    axis: Optional[tuple[str, int]]  # ("x" or "y", rank) on compare's trade-off plot
    rank: int  # report order within a set
    rate: bool = False  # a share of yes/no outcomes, one per output: reported with its Wilson interval
    detail: bool = False  # kept in metrics.json and compare.json, left out of compare's table


_METRICS: Registry[MetricSpec] = Registry("metric", "unlearn.evaluate.metrics")


def register_metric(
    name: str,
    *,
    sets: tuple[str, ...],
    unit: str,
    higher_is_better_when_forbidden: bool,
    description: str,
    follows_target: bool = False,
    fast: Optional[dict[str, str]] = None,
    trade_off: bool = False,
    axis: Optional[tuple[str, int]] = None,
    rank: int = 100,
    rate: bool = False,
    detail: bool = False,
) -> Callable[[Compute], Compute]:
    """Register the function computing metric `name` (see the module docstring). fast: {set: key}
    makes it one of the fast metrics of training-time evaluation (train.eval_every) under `key`;
    axis: its place as a candidate axis of compare's plot (x: forgetting, y: what is kept);
    rank: its position in the report (built-ins use 10-62); rate: the metric is the share of outputs
    with a yes/no property (a leak, a harmful answer), so the report gives its 95 % Wilson interval;
    detail: a finer view of another metric, left out of `unlearn compare`'s table (one row per method
    must stay readable) but kept in its compare.json and in every method's own report."""
    if unit not in UNITS:
        raise ValueError(f"metric '{name}': unknown unit '{unit}'; units: {', '.join(UNITS)}")

    def deco(fn: Compute) -> Compute:
        _METRICS.add(name, MetricSpec(
            name, fn, tuple(sets), unit, higher_is_better_when_forbidden, follows_target, description,
            tuple((fast or {}).items()), trade_off, axis, rank, rate, detail,
        ))
        return fn

    return deco


def available_metrics() -> list[MetricSpec]:
    """Every registered metric, in report order."""
    return sorted(_METRICS.entries().values(), key=lambda m: m.rank)


def get_metric(name: str) -> MetricSpec:
    """The metric registered as `name` (KeyError naming the registered ones if none is)."""
    metrics = _METRICS.entries()
    if name not in metrics:
        raise KeyError(f"unknown metric '{name}'; metrics: {', '.join(metrics)}")
    return metrics[name]


def metrics_for(role: str) -> list[MetricSpec]:
    """The metrics that apply to evaluation set `role`, in report order."""
    return [m for m in available_metrics() if role in m.sets]


def direction(metric: str, target: str) -> bool:
    """Whether a higher value of `metric` is better on a set whose target is `target`
    (FORBIDDEN or DESIRED)."""
    if target not in (FORBIDDEN, DESIRED):
        raise ValueError(f"target must be '{FORBIDDEN}' or '{DESIRED}', got {target!r}")
    spec = get_metric(metric)
    flip = spec.follows_target and target == DESIRED
    return spec.higher_is_better_when_forbidden != flip


def better(original: Optional[float], unlearned: Optional[float], higher_is_better: bool) -> Optional[bool]:
    """Whether the unlearned value is better than the original; None when either is missing or equal."""
    if original is None or unlearned is None or abs(unlearned - original) < 1e-12:
        return None
    return (unlearned > original) == higher_is_better


def round_value(value: Optional[float], unit: str) -> Optional[float]:
    """A value rounded as reports show it (UNITS)."""
    return None if value is None else round(value, UNITS[unit])


@dataclass(frozen=True)
class FastMetric:
    key: str  # the name in train_log.jsonl's eval and in eval.trade_off
    metrics: tuple[str, ...]  # the metrics logged under it (the first that applies to the set's kind)
    set: str
    trade_off: bool


def fast_metrics() -> list[FastMetric]:
    """The metrics of training-time evaluation, grouped by set (in the order sets first appear)."""
    by_key: dict[str, FastMetric] = {}
    for m in available_metrics():
        for role, key in m.fast:
            f = by_key.get(key)
            by_key[key] = FastMetric(key, (*f.metrics, m.name) if f else (m.name,), role, m.trade_off)
    roles = list(dict.fromkeys(f.set for f in by_key.values()))
    return sorted(by_key.values(), key=lambda f: roles.index(f.set))


def plot_axes() -> dict[str, list[tuple[str, str]]]:
    """{"x": [(set, metric), ...], "y": [...]}: candidates for compare's plot, the first available wins."""
    axes: dict[str, list[tuple[int, str, str]]] = {"x": [], "y": []}
    for m in available_metrics():
        if m.axis is not None:
            axes[m.axis[0]].append((m.axis[1], m.sets[0], m.name))
    return {a: [(s, n) for _, s, n in sorted(c)] for a, c in axes.items()}
