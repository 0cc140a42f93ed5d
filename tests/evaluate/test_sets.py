"""What the evaluation sets hold (issue 14): held-out prompts were never trained on (split by prompt
group), the overlap of forget_test with the training data is counted, and the forget set is drawn
from the examples the run trained on (run.json's "trained_examples")."""

import hashlib
import json

import pytest

from conftest import write_jsonl
from unlearn.config import config_from_dict
from unlearn.data import load_source, split_examples
from unlearn.data.split import normalise_prompt
from unlearn.errors import UnlearnError
from unlearn.evaluate.sets import load_eval_sets, validation_set

SPLIT = [0.5, 0.25, 0.25]


def _hash(prompt, response):
    return hashlib.sha256((prompt + "\x00" + response).encode("utf-8")).hexdigest()[:16]


def _cfg(tmp_path, forget_rows, retain_rows=None, **eval_keys):
    data = {"forget": {"path": str(write_jsonl(tmp_path / "forget.jsonl", forget_rows))}}
    if retain_rows is not None:
        data["retain"] = {"path": str(write_jsonl(tmp_path / "retain.jsonl", retain_rows))}
    return config_from_dict({"model": {"name": "tiny-random-llama"}, "output_dir": str(tmp_path / "run"),
                             "data": data, "eval": {"split": SPLIT, **eval_keys}, "seed": 0})


def _two_answers_per_prompt(n=12):
    """PKU-SafeRLHF-like rows: each prompt twice, with two different unsafe responses."""
    return [(f"Harmful question {i}?", f"Unsafe answer {i}{tag}.") for i in range(n) for tag in "ab"]


def test_no_forget_test_prompt_is_in_the_forget_or_val_part(tmp_path):
    for seed in range(4):
        cfg = _cfg(tmp_path, _two_answers_per_prompt())
        cfg.seed = seed
        sets = load_eval_sets(cfg, None, ["forget", "forget_test"])
        val = validation_set(cfg, None)
        test = {normalise_prompt(p) for p in sets["forget_test"].prompts}
        assert test and not test & {normalise_prompt(p) for p in sets["forget"].prompts}
        assert not test & {normalise_prompt(p) for p in val.prompts}
        # and training's train part is the eval forget set (same split on both sides)
        train = split_examples(load_source(cfg.data.forget, "forget"), SPLIT, seed)[0]
        assert [e.prompt for e in train] == sets["forget"].prompts


def test_group_field_on_data_forget_groups_the_eval_split(tmp_path):
    rows = [{"prompt": f"Q{i} about {who}?", "response": f"A{i}.", "person": who}
            for who in "ABCDEFGH" for i in range(3)]
    cfg = _cfg(tmp_path, rows)
    cfg.data.forget.group_field = "person"
    sets = load_eval_sets(cfg, None, ["forget", "forget_test"])
    people = lambda s: {p.split(" about ")[1] for p in s.prompts}  # noqa: E731
    assert people(sets["forget_test"]) and not people(sets["forget_test"]) & people(sets["forget"])


def test_a_record_missing_the_group_field_names_file_line_field(tmp_path):
    rows = [{"prompt": "a?", "response": "b.", "person": "A"}, {"prompt": "c?", "response": "d."}]
    cfg = _cfg(tmp_path, rows)
    cfg.data.forget.group_field = "person"
    with pytest.raises(UnlearnError) as e:
        load_eval_sets(cfg, None, ["forget_test"])
    assert str(e.value) == f"{tmp_path / 'forget.jsonl'} line 2: missing field 'person' (data.forget.group_field)"


def test_forget_test_overlap_with_the_training_data_is_counted(tmp_path):
    retain = [("Harmful question 1?", "A safe answer."), ("Something else?", "Yes.")]
    cfg = _cfg(tmp_path, _two_answers_per_prompt(), retain)
    sets = load_eval_sets(cfg, None, ["forget_test"])
    test = sets["forget_test"]
    assert test.info["prompts_in_forget_training"] == 0
    assert test.info["prompts_in_retain"] == sum(p == "Harmful question 1?" for p in test.prompts)
    # an explicit forget_test file that repeats training prompts: they are counted
    train = split_examples(load_source(cfg.data.forget, "forget"), SPLIT, 0)[0]
    picked = [train[0].prompt, train[2].prompt]  # two prompts (each has two responses)
    write_jsonl(tmp_path / "t.jsonl", [(picked[0].upper(), "x"), ("  " + picked[1], "y"), ("new?", "z")])
    from unlearn.config import EvalSetConfig

    cfg.eval.forget_test = EvalSetConfig(path=str(tmp_path / "t.jsonl"))
    info = load_eval_sets(cfg, None, ["forget_test"])["forget_test"].info
    assert info["prompts_in_forget_training"] == 2
    assert info["prompts_in_retain"] == sum(p == "Harmful question 1?" for p in picked)


def _trained(seen, total):
    return {"forget": {"total": total, "seen": [[h, 1] for h in seen]}}


def test_the_forget_set_is_what_the_run_trained_on(tmp_path):
    cfg = _cfg(tmp_path, _two_answers_per_prompt(), limit=3)
    train = split_examples(load_source(cfg.data.forget, "forget"), SPLIT, 0)[0]
    used = [train[5], train[2], train[7], train[0]]  # order of first use
    record = _trained([_hash(e.prompt, e.response) for e in used], len(train))
    s = load_eval_sets(cfg, None, ["forget"], trained=record)["forget"]
    # eval.limit 3 keeps the first three used, listed in data order
    assert [(i.prompt, i.target) for i in s.items] == [(e.prompt, e.response) for e in (train[2], train[5], train[7])]
    assert s.info == {"forget_set": "trained examples", "trained_examples": 4, "training_examples": len(train)}


def test_without_a_record_the_forget_set_is_the_whole_train_part_and_says_so(tmp_path):
    cfg = _cfg(tmp_path, _two_answers_per_prompt())
    train = split_examples(load_source(cfg.data.forget, "forget"), SPLIT, 0)[0]
    s = load_eval_sets(cfg, None, ["forget"])["forget"]
    assert s.prompts == [e.prompt for e in train]
    assert s.info["forget_set"] == "all forget examples (no record of training)"


def test_the_forget_set_in_metrics_json_comes_from_run_json(tmp_path, monkeypatch):
    """evaluate_run passes run.json's record to the sets and metrics.json's "sets" carries their info."""
    from unlearn.evaluate import run as run_mod

    seen = {}

    def fake_load(cfg, tokenizer, roles=None, trained=None):
        seen["trained"] = trained
        raise UnlearnError("stop here")

    monkeypatch.setattr(run_mod, "load_eval_sets", fake_load)
    monkeypatch.setattr("unlearn.models.load_tokenizer", lambda mc: None)
    cfg = _cfg(tmp_path, _two_answers_per_prompt())
    (tmp_path / "run" / "model").mkdir(parents=True)
    (tmp_path / "run" / "model" / "config.json").write_text("{}")
    record = _trained(["0123456789abcdef"], 12)
    (tmp_path / "run" / "run.json").write_text(json.dumps({"status": "done", "trained_examples": record}))
    with pytest.raises(UnlearnError, match="stop here"):
        run_mod.evaluate_run(cfg)
    assert seen["trained"] == record
