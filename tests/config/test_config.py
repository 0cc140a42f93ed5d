from pathlib import Path

import pytest

from unlearn.config import Config, describe_keys, load_config
from unlearn.objective.presets import PRESETS
from unlearn.errors import UnlearnError

BASE = """\
model:
  name: tiny-random-llama
data:
  forget: {path: f.jsonl}
  retain: {path: r.jsonl}
objective: {ga: 0.5, mismatch: 1.0, kl: 1.0}
train:
  lr: 2.0e-6
  batch_size: 2
output_dir: out
"""


def cfg_file(tmp_path: Path, text: str = BASE) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_loads_and_defaults(tmp_path):
    cfg = load_config(cfg_file(tmp_path))
    assert isinstance(cfg, Config)
    assert cfg.model.name == "tiny-random-llama"
    assert cfg.train.lr == 2e-6 and cfg.train.batch_size == 2 and cfg.train.max_steps == 1000
    assert cfg.data.mismatch.k == 5 and cfg.data.template == "qa"
    assert cfg.objective == {"ga": 0.5, "mismatch": 1.0, "kl": 1.0}


def test_dotted_overrides(tmp_path):
    cfg = load_config(cfg_file(tmp_path), ["train.lr=1e-5", "objective.kl=2", "model.lora.r=4", "seed=7"])
    assert cfg.train.lr == pytest.approx(1e-5)  # "1e-5" is a string to PyYAML; a float here
    assert cfg.objective["kl"] == 2.0
    assert cfg.model.lora is not None and cfg.model.lora.r == 4 and cfg.model.lora.alpha == 16
    assert cfg.seed == 7


def test_objective_override_edits_the_default_preset(tmp_path):
    text = BASE.replace("objective: {ga: 0.5, mismatch: 1.0, kl: 1.0}\n", "")
    cfg = load_config(cfg_file(tmp_path, text), ["objective.kl=2"])
    assert cfg.objective == {"ga": 0.5, "mismatch": 1.0, "kl": 2.0}


def test_preset_and_null_removes_a_term(tmp_path):
    cfg = load_config(cfg_file(tmp_path), ["objective=graddiff"])
    assert cfg.objective == PRESETS["graddiff"]
    cfg = load_config(cfg_file(tmp_path), ["objective.mismatch=null"])
    assert cfg.objective == {"ga": 0.5, "kl": 1.0}


def test_unknown_key_lists_valid_keys_and_line(tmp_path):
    with pytest.raises(UnlearnError) as e:
        load_config(cfg_file(tmp_path, BASE.replace("  batch_size: 2", "  batch_sise: 2")))
    msg = str(e.value)
    assert "c.yaml line 9" in msg and "batch_sise" in msg
    assert "valid keys:" in msg and "batch_size" in msg and "max_steps" in msg


def test_unknown_override_key(tmp_path):
    with pytest.raises(UnlearnError, match=r"command line 'train\.lrr=1'.*unknown key 'lrr'.*valid keys: lr"):
        load_config(cfg_file(tmp_path), ["train.lrr=1"])


@pytest.mark.parametrize(
    "override, pattern",
    [
        ("train.batch_size=two", r"train\.batch_size: expected an integer, got 'two'"),
        ("train.lr=fast", r"train\.lr: expected a number or null, got 'fast'"),
        ("model.dtype=float8", r"model\.dtype: expected one of"),
        ("train.batch_size=0", r"train\.batch_size: must be >= 1"),
        ("data.mismatch.k=0", r"data\.mismatch\.k: must be >= 1"),
        ("objective.ga=-1", r"objective\.ga: weight must be > 0"),
        ("objective.ga=0", r"objective\.ga: weight must be > 0"),
        ("objective=nosuch", r"unknown .*preset 'nosuch'"),
        ("data.template={response}", r"data\.template: must be 'qa', 'chat', or a format string"),
        ("train.gradient_checkpointing=3", r"expected true or false, got 3"),
    ],
)
def test_type_and_range_checks(tmp_path, override, pattern):
    with pytest.raises(UnlearnError, match=pattern):
        load_config(cfg_file(tmp_path), [override])


def test_wrong_type_in_file_names_line(tmp_path):
    with pytest.raises(UnlearnError, match=r"c\.yaml line 8: train\.lr: expected a number or null, got 'abc'"):
        load_config(cfg_file(tmp_path, BASE.replace("lr: 2.0e-6", "lr: abc")))


def test_missing_required_key(tmp_path):
    with pytest.raises(UnlearnError, match="output_dir: required key is missing"):
        load_config(cfg_file(tmp_path, BASE.replace("output_dir: out\n", "")))


def test_missing_file_and_yaml_errors(tmp_path):
    with pytest.raises(UnlearnError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(UnlearnError, match=r"c\.yaml line \d+: YAML syntax error"):
        load_config(cfg_file(tmp_path, BASE + "train: [unclosed\n"))
    with pytest.raises(UnlearnError, match=r"line \d+: train: duplicate key"):
        load_config(cfg_file(tmp_path, BASE + "train: {lr: 1.0}\n"))


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(cfg_file(tmp_path), ["model.lora.r=4"])
    again = cfg_file(tmp_path, cfg.to_yaml())
    assert load_config(again).to_dict() == cfg.to_dict()


def test_every_key_has_help():
    rows = describe_keys()
    assert len(rows) > 30
    assert all(help_ for _, _, _, help_ in rows), [k for k, _, _, h in rows if not h]
