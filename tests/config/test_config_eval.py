"""The eval section and the train keys of evaluation during training: checks with file and line."""

import pytest

from conftest import tiny_config, write_config
from unlearn.config import load_config
from unlearn.errors import UnlearnError


@pytest.mark.parametrize("overrides, message", [
    (["train.keep_best=true"], "keep_best: needs train.eval_every > 0"),
    (["eval.split=[0.7, 0.2, 0.2]"], "fractions must sum to 1"),
    (["eval.split=[0.7, 0.3]"], "three fractions"),
    (["eval.judge=classifier"], "classifier:PATH_OR_ID"),
    (["eval.judge=refusal:x"], "eval.judge"),
    (["eval.trade_off.forget_nlll=1"], "unknown metric(s) forget_nlll"),
    (["eval.sets=[forget, unseen]"], "unknown set(s) unseen"),
    (["eval.forget.match=exact"], "eval.forget.match: expected one of 'bleu', 'contains'"),
    (["eval.judge_template=no placeholders"], "must contain {prompt} and {response}"),
    (["eval.bleu_threshold=101"], "must be in [0, 100]"),
])
def test_eval_config_mistakes(tmp_path, data_files, overrides, message):
    path = write_config(tmp_path / "c.yaml", tiny_config(tmp_path, data_files))
    with pytest.raises(UnlearnError) as e:
        load_config(path, overrides)
    assert message in str(e.value)
    if "trade_off" not in overrides[0]:  # a new key below trade_off: the error names the section
        assert "command line" in str(e.value)


def test_eval_keys_from_a_file_name_the_line(tmp_path, data_files):
    cfg = tiny_config(tmp_path, data_files, eval={"max_new_tokens": 0})
    path = write_config(tmp_path / "c.yaml", cfg)
    with pytest.raises(UnlearnError) as e:
        load_config(path)
    line = next(i for i, t in enumerate(path.read_text().splitlines(), 1) if "max_new_tokens" in t)
    assert f"c.yaml line {line}: eval.max_new_tokens: must be >= 1" in str(e.value)


def test_eval_set_options_inherit_the_training_source(tmp_path, data_files):
    from unlearn.evaluate.sets import _set_config

    cfg = load_config(write_config(tmp_path / "c.yaml", tiny_config(tmp_path, data_files)),
                      ["eval.forget.match=contains"])
    source, from_forget = _set_config(cfg, "forget")
    assert source.path == str(data_files["forget"]) and source.match == "contains" and from_forget
    assert _set_config(cfg, "forget_test") == (None, False)  # no split: no held-out set
    with pytest.raises(UnlearnError, match="eval.normal: set 'path'"):
        _set_config(load_config(write_config(tmp_path / "d.yaml", tiny_config(tmp_path, data_files)),
                                ["eval.normal.kind=qa"]), "normal")
