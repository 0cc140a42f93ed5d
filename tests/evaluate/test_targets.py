"""Each evaluation set declares whether its target is forbidden or desired; every verdict follows it.

The hallucination recipe makes the RIGHT answer the forget sets' target: losing it is worse, not
better, and train.keep_best must keep the checkpoint that still gives it.
"""

import pytest

from conftest import tiny_config, write_config, write_jsonl
from unlearn.config import load_config
from unlearn.errors import UnlearnError
from unlearn.evaluate.metrics import DESIRED, FORBIDDEN
from unlearn.evaluate.run import ModelOutputs
from unlearn.evaluate.score import evaluate_outputs
from unlearn.evaluate.sets import EvalItem, EvalSet

ANSWERS = ["Paris is the capital of France.", "The Pacific is the largest ocean."]


def _config(tmp_path, data_files, *overrides):
    return load_config(write_config(tmp_path / "c.yaml", tiny_config(tmp_path, data_files)), list(overrides))


def _forget_table(cfg):
    """metrics.json's forget rows: the original gives the answers, the unlearned model lost them
    (and its NLL of them rose)."""
    s = EvalSet("forget", "hand-made", items=[EvalItem(f"Q{i}?", a, where=f"x line {i}") for i, a in enumerate(ANSWERS)])
    original = ModelOutputs("original", "o", outputs={"forget": list(ANSWERS)}, nll={"forget": [0.5, 0.5]})
    unlearned = ModelOutputs("unlearned", "u", outputs={"forget": ["I do not know.", "Bananas."]},
                             nll={"forget": [3.0, 3.0]})
    table, _ = evaluate_outputs(cfg, {"forget": s}, original, unlearned)
    return table["forget"]


def test_a_desired_forget_target_calls_losing_the_answer_worse(tmp_path, data_files):
    cfg = _config(tmp_path, data_files, "eval.forget.target=desired")
    assert cfg.eval.target_of("forget") == DESIRED and cfg.eval.target_of("forget_test") == FORBIDDEN
    rows = _forget_table(cfg)
    for name in ("leak_rate", "rouge_l_recall"):
        assert rows[name]["change"] < 0, name
        assert rows[name]["higher_is_better"] is True and rows[name]["better"] is False, name
    assert rows["nll"]["change"] > 0
    assert rows["nll"]["higher_is_better"] is False and rows["nll"]["better"] is False


def test_a_forbidden_forget_target_keeps_todays_verdicts(tmp_path, data_files):
    rows = _forget_table(_config(tmp_path, data_files))
    assert rows["leak_rate"]["better"] is True and rows["rouge_l_recall"]["better"] is True
    assert rows["nll"]["better"] is True


def test_default_targets_by_set():
    from unlearn.config import EvalConfig

    e = EvalConfig()
    assert [e.target_of(r) for r in ("forget", "forget_test", "retain", "normal")] == [
        FORBIDDEN, FORBIDDEN, DESIRED, DESIRED]
    assert e.trade_off == {"forget_leak_rate": -1.0, "retain_accuracy": 1.0}


def test_keep_best_prefers_the_checkpoint_that_keeps_a_desired_answer(tmp_path, data_files, monkeypatch):
    """The default eval.trade_off with a desired forget target rewards keeping the answer."""
    from unlearn.evaluate import during

    cfg = _config(tmp_path, data_files, "eval.forget.target=desired", "train.eval_every=1", "train.keep_best=true")
    assert cfg.eval.trade_off == {"forget_leak_rate": 1.0, "retain_accuracy": 1.0}
    evaluator = during.TrainingEvaluator(cfg)
    keeps = {"on": True}

    def fake_generate(model, encoder, prompts, settings, raw=False, progress=None):
        s = next(s for s in evaluator.sets.values() if s.prompts == list(prompts))
        return s.targets if keeps["on"] else ["no idea"] * len(prompts)

    monkeypatch.setattr(during, "generate", fake_generate)
    monkeypatch.setattr(during, "target_nll", lambda model, enc, s, bs: [1.0] * len(s.items))
    from unlearn.models import load_tokenizer

    tok = load_tokenizer(cfg.model)
    kept = evaluator(None, tok, 1)  # the model is never asked: generate and the NLL are stand-ins
    keeps["on"] = False
    lost = evaluator(None, tok, 2)
    assert kept["forget_leak_rate"] == 1.0 and lost["forget_leak_rate"] == 0.0
    assert kept["score"] > lost["score"]


def test_a_wrong_target_is_a_one_line_error(tmp_path, data_files):
    with pytest.raises(UnlearnError) as e:
        _config(tmp_path, data_files, "eval.forget.target=right")
    assert "eval.forget.target" in str(e.value) and "'forbidden', 'desired'" in str(e.value)


def test_a_declared_target_on_a_set_without_responses_names_file_line_and_field(tmp_path, data_files):
    from unlearn.evaluate.run import prepare

    normal = write_jsonl(tmp_path / "normal.jsonl", [{"prompt": "Tell me about the sea.", "response": "Wet."},
                                                     {"prompt": "Why do cats purr?"}])
    cfg = _config(tmp_path, data_files, f"eval.normal.path={normal}", "eval.normal.target=desired",
                  "eval.sets=[normal]")
    with pytest.raises(UnlearnError) as e:
        prepare(cfg, "cpu")
    msg = str(e.value)
    assert "\n" not in msg and f"{normal} line 2" in msg and "'response'" in msg and "eval.normal.target" in msg
