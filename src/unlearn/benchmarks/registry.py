"""The benchmark registry: each benchmark's name, parameters, the metrics it reports and where they
come from.

A benchmark is registered with three functions, and its parameters as a dataclass (fields with
defaults and help texts, checked like any config key):

    @register_benchmark("tofu", params=TofuParams, metrics=(BenchMetric(...), ...),
                        description="...", source="Maini et al. 2024, arXiv 2401.06121")
    class Tofu:
        def prepare(params, where) -> data            # read and check the data; no model yet
        def measure(probe, data, params) -> {metric: Metric}   # one model (unlearn.benchmarks.probe)
        def summarize(by_model, data, params) -> None # optional: metrics across models (adds to by_model)
        def models(params) -> {label: path}           # optional: more models to measure (a retain model)

`eval.benchmarks: {tofu: {path: data/tofu, ...}}` in a config runs it; `unlearn benchmarks` lists
every registered benchmark with its parameters. Benchmark modules are found, not listed: every
module of the unlearn.benchmarks package is imported on the first look-up.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any, Callable, Optional

from unlearn.discovery import Registry

# Which way is better for a benchmark metric after unlearning.
HIGHER, LOWER, ZERO, ONE = "higher", "lower", "closer to 0", "closer to 1"


@dataclass(frozen=True)
class BenchMetric:
    """One number a benchmark reports per model. name: the metric's name, or a pattern with "*"
    for metrics named at run time ("*/acc": Benchmark.metric); unit: a key of the metric registry's UNITS
    (decimals); better: HIGHER, LOWER, ZERO or ONE (after unlearning), or None where no direction is
    better (a statistic shown for reading); source: where the definition comes from."""

    name: str
    unit: str
    better: Optional[str]
    description: str
    source: str = ""


@dataclass(frozen=True)
class Benchmark:
    name: str
    params: type
    metrics: tuple[BenchMetric, ...]
    description: str
    source: str
    prepare: Callable[[Any, Callable[[str], str]], Any]
    measure: Callable[[Any, Any, Any], dict[str, Any]]
    summarize: Optional[Callable[[dict[str, dict[str, Any]], Any, Any], None]] = None
    models: Optional[Callable[[Any], dict[str, str]]] = None
    extra: Optional[str] = None  # the pip extra it needs ("lmeval"), for `unlearn benchmarks`

    def metric(self, name: str) -> BenchMetric:
        """The declaration of metric `name`: the one of that name, else the first declared pattern
        it matches (a name with "*", fnmatch: "*/acc" declares lm-eval's TASK/acc for any task a
        config names, so that metrics named at run time still have a unit and a direction)."""
        for m in self.metrics:
            if m.name == name:
                return m
        for m in self.metrics:
            if "*" in m.name and fnmatch.fnmatchcase(name, m.name):
                return m
        raise KeyError(f"benchmark '{self.name}' declares no metric '{name}'")


_BENCHMARKS: Registry[Benchmark] = Registry("benchmark", "unlearn.benchmarks")


def register_benchmark(
    name: str, *, params: type, metrics: tuple[BenchMetric, ...], description: str, source: str,
    extra: Optional[str] = None,
) -> Callable[[type], type]:
    """Register a class with static `prepare`, `measure` (and optionally `summarize`, `models`) as
    benchmark `name` (see the module docstring)."""
    from unlearn.evaluate.metrics.registry import UNITS

    for m in metrics:
        if m.unit not in UNITS:
            raise ValueError(f"benchmark '{name}', metric '{m.name}': unknown unit '{m.unit}'")
        if m.better not in (HIGHER, LOWER, ZERO, ONE, None):
            raise ValueError(f"benchmark '{name}', metric '{m.name}': better must be HIGHER, LOWER, ZERO, ONE or None")

    def deco(cls: type) -> type:
        _BENCHMARKS.add(name, Benchmark(
            name, params, tuple(metrics), description, source, cls.prepare, cls.measure,
            getattr(cls, "summarize", None), getattr(cls, "models", None), extra,
        ))
        return cls

    return deco


def available_benchmarks() -> dict[str, Benchmark]:
    """Every registered benchmark by name."""
    return dict(_BENCHMARKS.entries())


def get_benchmark(name: str) -> Benchmark:
    """The benchmark registered as `name` (KeyError naming the registered ones if none is)."""
    known = _BENCHMARKS.entries()
    if name not in known:
        raise KeyError(f"unknown benchmark '{name}'; benchmarks: {', '.join(known) or 'none'}")
    return known[name]
