"""Configuration: typed dataclasses for each section, YAML loading, and dotted overrides.

A config file is YAML with the top-level sections `model`, `data`, `objective`, `train`, `eval` and the keys
`output_dir` and `seed`. Every field carries a help text (shown by `unlearn config --keys` and in the
README). Unknown keys, wrong types and out-of-range values are errors that name the file, the line and
the key, and list the valid keys of the section.

    cfg = load_config("unlearn.yaml", ["train.lr=1e-5", "objective.kl=2"])

    fields.py      setting() (a field with help), check() / InvalidValue for __post_init__ checks
    sections.py    model, lora, data (sources, mismatch), train
    evaluation.py  eval and its sets (EVAL_SETS, SET_TARGETS)
    audit.py       audit: the attacks of `unlearn audit` and their budgets
    schema.py      Config, the whole run
    reading.py     safe YAML with the line of every key
    load.py        overrides, typed construction (coercion, error positions), describe_keys

Names a registry owns are not listed here: loss terms and presets (unlearn.objective), judges and
metrics (unlearn.evaluate.judges, unlearn.evaluate.metrics); the schema asks them.
"""

from unlearn.config.audit import AuditConfig
from unlearn.config.evaluation import EVAL_SETS, SET_TARGETS, EvalConfig, EvalSetConfig
from unlearn.config.fields import InvalidValue, check, setting
from unlearn.config.load import apply_override, build, config_from_dict, describe_keys, load_config
from unlearn.config.reading import MAX_YAML_DEPTH, read_yaml
from unlearn.config.schema import Config
from unlearn.config.sections import (
    DataConfig,
    LoraConfig,
    MismatchConfig,
    ModelConfig,
    SourceConfig,
    TrainConfig,
)

__all__ = [
    "AuditConfig", "EVAL_SETS", "MAX_YAML_DEPTH", "SET_TARGETS", "Config", "DataConfig", "EvalConfig", "EvalSetConfig",
    "InvalidValue", "LoraConfig", "MismatchConfig", "ModelConfig", "SourceConfig", "TrainConfig",
    "apply_override", "build", "check", "config_from_dict", "describe_keys", "load_config", "read_yaml",
    "setting",
]
