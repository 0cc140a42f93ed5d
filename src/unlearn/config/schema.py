"""The whole config: `Config`, made of the sections in sections.py and evaluation.py.

`objective` is plain data here (term name -> weight, or -> {weight, parameters}): the loss-term
registry (unlearn.objective) owns the terms and checks their parameters; preset names belong to
unlearn.objective.presets.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Union

import yaml

from unlearn.config.audit import AuditConfig
from unlearn.config.evaluation import EvalConfig
from unlearn.config.fields import as_float, check, setting
from unlearn.config.sections import DataConfig, ModelConfig, TrainConfig
from unlearn.objective.presets import DEFAULT_PRESET, preset_names, preset_weights


@dataclass
class Config:
    """A whole run."""

    model: ModelConfig = setting(help="The model.")
    output_dir: str = setting(help="Where the run writes its files; must not exist unless --overwrite.")
    data: DataConfig = setting(help="The data.", factory=DataConfig)
    objective: Union[dict[str, Any], str] = setting(
        help="Terms and weights, e.g. {ga: 0.5, mismatch: 1, kl: 1}, or a preset name (paper, npo, ... "
        "`unlearn terms` lists every preset, those of plugins too). A term with parameters: "
        "{npo: {weight: 1, beta: 0.1}}. `unlearn terms` lists the terms, their parameters and the presets.",
        factory=lambda: preset_weights(DEFAULT_PRESET),
    )
    train: TrainConfig = setting(help="The loop.", factory=TrainConfig)
    eval: EvalConfig = setting(help="Evaluation (`unlearn eval` and train.eval_every).", factory=EvalConfig)
    audit: AuditConfig = setting(help="`unlearn audit`: attacks that try to bring forgotten outputs back.",
                                 factory=AuditConfig)
    seed: int = setting(0, help="Seed for data order, mismatch draws and initialisation.")
    imports: list[str] = setting(
        help="Python modules imported before the rest of the config is checked, e.g. [my_unlearn_terms]: "
        "the loss terms, presets, metrics, judges and dataset adapters they register can then be named "
        "here. They run as code: list only modules you trust.",
        factory=list,
    )

    # Where each key was set ("file line N" or "command line"), for error messages after loading.
    _origins: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        check(bool(self.output_dir and self.output_dir.strip()), "output_dir", "must not be empty")
        # numpy's seed (set by accelerate's set_seed) must fit in an unsigned 32-bit integer.
        check(0 <= self.seed < 2**32, "seed", f"must be in [0, 2**32), got {self.seed}")
        if isinstance(self.objective, str):
            weights = preset_weights(self.objective)
            check(
                weights is not None,
                "objective",
                f"unknown preset '{self.objective}'; presets: {', '.join(preset_names())}",
            )
            self.objective = weights
        # A null weight removes a term: `objective.mismatch=null` on the command line.
        self.objective = {k: v for k, v in self.objective.items() if v is not None}
        check(len(self.objective) > 0, "objective", "must name at least one term")
        for term, spec in self.objective.items():
            if isinstance(spec, dict):
                check("weight" in spec, f"objective.{term}", "a term given as a mapping needs 'weight'")
                weight = spec["weight"]
            else:
                weight = spec
            weight = as_float(weight)
            check(
                weight is not None,
                f"objective.{term}",
                f"weight must be a number, got {type(spec).__name__} {spec!r}",
            )
            check(
                weight > 0,
                f"objective.{term}",
                f"weight must be > 0, got {weight} (remove the term to turn it off)",
            )
            check(math.isfinite(weight), f"objective.{term}", f"weight must be finite, got {weight}")
            if isinstance(spec, dict):
                spec["weight"] = weight
            else:
                self.objective[term] = weight

    def origin(self, key: str) -> str:
        """Where `key` (dotted) was set, for error messages: 'cfg.yaml line 7' or 'command line'."""
        while key:
            if key in self._origins:
                return self._origins[key]
            key = key.rpartition(".")[0]
        return self._origins.get("", "config")

    @property
    def origins(self) -> dict[str, str]:
        """A copy of where each key was set (dotted key -> 'cfg.yaml line 7'; '' -> the file itself),
        to rebuild this config with `config_from_dict(cfg.to_dict(), overrides, cfg.origins)`."""
        return dict(self._origins)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (mappings, lists, scalars): what YAML and config_from_dict read back."""
        return _to_plain(self)

    def to_yaml(self) -> str:
        """The config as YAML, in the order of the schema."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)


def _to_plain(obj: Any) -> Any:
    """Dataclasses to mappings, recursively; private fields (`_origins`) left out."""
    if dataclasses.is_dataclass(obj):
        return {
            f.name: _to_plain(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
            if not f.name.startswith("_")
        }
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    return obj
