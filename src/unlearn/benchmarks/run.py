"""Running the benchmarks named in `eval.benchmarks` on the original, the unlearned and any
reference model (a retain-only model for TOFU's forget quality, ...), one model in memory at a time.

    plan_benchmarks  each benchmark's parameters built and its data read and checked: bad input
                     stops here, before any model loads
    run_benchmarks   per model: load, measure every benchmark, free; then each benchmark's
                     summary across models; returns metrics.json's "benchmarks"
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from unlearn.benchmarks.registry import HIGHER, LOWER, ONE, ZERO, Benchmark, get_benchmark
from unlearn.config import Config, ModelConfig
from unlearn.config.load import build
from unlearn.errors import UnlearnError
from unlearn.evaluate.metrics.registry import Metric, round_value

ORIGINAL, UNLEARNED = "original", "unlearned"


@dataclass
class Planned:
    spec: Benchmark
    params: Any
    data: Any


def plan_benchmarks(cfg: Config) -> list[Planned]:
    """Every benchmark of eval.benchmarks with its checked parameters and data (none: empty list)."""
    out: list[Planned] = []
    for name, raw in (cfg.eval.benchmarks or {}).items():
        key = f"eval.benchmarks.{name}"
        try:
            spec = get_benchmark(name)
        except KeyError as e:
            raise UnlearnError(f"{cfg.origin(key)}: {key}: {e.args[0]}") from None
        if raw is not None and not isinstance(raw, dict):
            raise UnlearnError(f"{cfg.origin(key)}: {key}: expected a mapping of parameters, got {raw!r}")
        params = build(spec.params, dict(raw or {}), key, cfg.origin)
        out.append(Planned(spec, params, spec.prepare(params, cfg.origin)))
    return out


def _columns(cfg: Config, model_dir: Path, plan: list[Planned]) -> dict[str, str]:
    """label -> model to load: the original, the unlearned, then the benchmarks' reference models."""
    cols = {ORIGINAL: cfg.model.name, UNLEARNED: str(model_dir)}
    for p in plan:
        for label, path in (p.spec.models(p.params) if p.spec.models else {}).items():
            if label in cols and cols[label] != path:
                raise UnlearnError(f"eval.benchmarks.{p.spec.name}: model '{label}' is named twice, as "
                                   f"{cols[label]} and {path}")
            cols[label] = path
    return cols


def _shown(spec: Benchmark, by_model: dict[str, dict[str, Metric]]) -> list[str]:
    """The metrics measured that the benchmark declares: in declared order, then those declared by
    a pattern ("*/acc": named at run time, like lm-eval's TASK/acc) in the order measured."""
    seen = list(dict.fromkeys(n for ms in by_model.values() for n in ms))
    names = [m.name for m in spec.metrics if m.name in seen]
    for n in seen:
        if n not in names:
            try:
                spec.metric(n)
            except KeyError:
                continue  # measured but not declared: not shown, as before
            names.append(n)
    return names


def _row(spec: Benchmark, name: str, per_model: dict[str, dict[str, Metric]]) -> dict[str, Any]:
    m = spec.metric(name)
    values = {label: round_value(ms[name].value, m.unit) if name in ms else None for label, ms in per_model.items()}
    o, u = values.get(ORIGINAL), values.get(UNLEARNED)
    improved = None
    if o is not None and u is not None and abs(u - o) > 1e-12 and m.better is not None:
        improved = {HIGHER: u > o, LOWER: u < o, ZERO: abs(u) < abs(o), ONE: abs(u - 1) < abs(o - 1)}[m.better]
    row = {
        "values": values, "change": round_value(u - o, m.unit) if o is not None and u is not None else None,
        "better": m.better, "improved": improved, "unit": m.unit, "description": m.description, "source": m.source,
    }
    # What a benchmark keeps beside a value (lm-eval's standard error, the examples counted): a
    # Metric's extra["detail"], plain JSON data, per model.
    detail = {label: ms[name].extra["detail"] for label, ms in per_model.items()
              if name in ms and "detail" in ms[name].extra}
    if detail:
        row["detail"] = detail
    return row


def run_benchmarks(cfg: Config, model_dir: Path, plan: list[Planned], console: Any = None) -> dict[str, Any]:
    """metrics.json's "benchmarks": per benchmark its settings, the models measured and one row per
    metric with each model's value, the change (unlearned - original) and whether it improved."""
    from unlearn.evaluate.run import free_model, pick_device
    from unlearn.models import load_model, load_tokenizer

    if not plan:
        return {}
    from unlearn.benchmarks.probe import ModelProbe

    device = pick_device(cfg)
    tokenizer = load_tokenizer(cfg.model)
    cols = _columns(cfg, model_dir, plan)
    per: dict[str, dict[str, dict[str, Metric]]] = {p.spec.name: {} for p in plan}
    seconds: dict[str, float] = {p.spec.name: 0.0 for p in plan}
    mc = cfg.model
    for label, name in cols.items():
        needed = [p for p in plan if label in (ORIGINAL, UNLEARNED)
                  or label in (p.spec.models(p.params) if p.spec.models else {})]
        if console is not None:
            console.print(f"benchmarks: {label} model ({name})")
        model_cfg = mc if label == ORIGINAL else ModelConfig(
            name=name, dtype=mc.dtype, trust_remote_code=mc.trust_remote_code, allow_pickle=mc.allow_pickle)
        try:
            model, _ = load_model(model_cfg, tokenizer)
        except UnlearnError as e:
            raise UnlearnError(f"benchmarks: the {label} model: {e}") from None
        model.to(device)
        probe = ModelProbe(model, tokenizer, cfg, label, name)
        for p in needed:
            t0 = time.time()
            per[p.spec.name][label] = p.spec.measure(probe, p.data, p.params)
            seconds[p.spec.name] += time.time() - t0
        probe = None
        free_model(model)
    out: dict[str, Any] = {}
    for p in plan:
        by_model = per[p.spec.name]
        if p.spec.summarize is not None:
            p.spec.summarize(by_model, p.data, p.params)
        names = _shown(p.spec, by_model)
        out[p.spec.name] = {
            "description": p.spec.description,
            "source": p.spec.source,
            "settings": dataclasses.asdict(p.params),
            "models": {label: cols[label] for label in by_model},
            "metrics": {n: _row(p.spec, n, by_model) for n in names},
            "seconds": round(seconds[p.spec.name], 2),
        }
    return out


def describe_params(spec: Benchmark) -> list[tuple[str, str, str]]:
    """(name, default, help) of each parameter, for `unlearn benchmarks`."""
    rows = []
    for f in dataclasses.fields(spec.params):
        default: Optional[Any] = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "required")
        rows.append((f.name, repr(default), f.metadata.get("help", "")))
    return rows
