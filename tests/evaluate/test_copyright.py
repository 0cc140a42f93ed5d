"""The copyright setting (kind: text): continuations are scored as generated (issue 14, item 5).

A passage's prompt ends at a token boundary, so its continuation often starts with a space: fluency
must read "the boy walked", not "the boywalked", and retain accuracy must cut the output to the
target's length as the forget side's extraction leak rate does.
"""

import pytest

from conftest import scripted_lm, tiny_config, write_config
from unlearn.config import load_config
from unlearn.evaluate import nll, run
from unlearn.evaluate.metrics import SetScoring, extraction_leak_rate, get_metric
from unlearn.evaluate.sets import EvalItem, EvalSet

CONTINUATION = " walked away from the house"


def continues(ids, tok):
    """A 'model' that continues every prompt with the same tokens, then ends."""
    return scripted_lm(lambda prompt, new: ids[len(new)] if len(new) < len(ids) else tok.eos_token_id, len(tok))


@pytest.fixture
def cfg(tmp_path, data_files):
    return load_config(write_config(tmp_path / "c.yaml", tiny_config(tmp_path, data_files)), ["eval.max_new_tokens=40"])


def test_fluency_reads_a_text_continuation_as_generated(cfg, tiny, monkeypatch):
    _, tok = tiny
    assert tok(CONTINUATION, add_special_tokens=False)["input_ids"][0] == tok(" ", add_special_tokens=False)["input_ids"][0]
    model = continues(tok(CONTINUATION, add_special_tokens=False)["input_ids"], tok)
    sets = {"forget": EvalSet("forget", "book", kind="text", items=[EvalItem("the boy", CONTINUATION, where="b line 1")])}
    seen = []

    def fake_nll(model, encoded, pad_id, batch_size):
        seen.extend(tok.decode(e.ids, skip_special_tokens=True) for e in encoded)
        return [1.0] * len(encoded)

    monkeypatch.setattr(nll, "response_nll", fake_nll)
    res = run.run_model(model, tok, cfg, sets, "unlearned", "fake")
    assert res.outputs["forget"] == [CONTINUATION]  # the leading space is part of what was generated
    seen.clear()
    run.add_fluency(model, tok, cfg, sets, res)
    assert seen == ["the boy" + CONTINUATION]  # not "the boywalked ..."


def test_retain_accuracy_cuts_a_text_output_like_the_forget_side():
    target = " and the rest of the passage goes on here"
    output = target + " and then a great many other words that the passage never had in it at all"
    retain = EvalSet("retain", "corpus", kind="text", items=[EvalItem("Once", target, where="c line 1")])
    settings = type("E", (), {"bleu_threshold": 50.0})()
    m = get_metric("retain_accuracy").compute(SetScoring(set=retain, outputs=[output], settings=settings))
    forget_side = extraction_leak_rate([output], [target], threshold=50.0)
    assert forget_side.per_example == [1.0]
    assert m.per_example == forget_side.per_example and m.extra["bleu"] == forget_side.extra["bleu"]
