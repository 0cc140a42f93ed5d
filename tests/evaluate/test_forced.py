"""Teacher-forced NLL of evaluation (unlearn.evaluate.forced): the original model scores the targets,
its own outputs and the unlearned model's outputs in one pass, rows of one prompt side by side,
and every value is the one the per-set functions give."""

from __future__ import annotations

import pytest

from conftest import tiny_config, write_config
from unlearn.config import load_config
from unlearn.evaluate import nll
from unlearn.evaluate.cache import ModelOutputs
from unlearn.evaluate.forced import output_nll, score_nll, set_encoder, target_nll
from unlearn.evaluate.sets import EvalItem, EvalSet


@pytest.fixture
def cfg(tmp_path, data_files):
    return load_config(write_config(tmp_path / "c.yaml", tiny_config(tmp_path, data_files)), ["eval.batch_size=64"])


def qa_set(role: str, n: int) -> EvalSet:
    items = [EvalItem(f"Where is {role[0]}{i} from?", f"From town {i}.",
                      where=f"{role} line {i + 1}") for i in range(n)]
    return EvalSet(role, role, kind="qa", items=items)


def outputs(label: str, sets: dict[str, EvalSet], text: str) -> ModelOutputs:
    res = ModelOutputs(label, label)
    res.outputs = {role: [f"{text} {i}" if i % 3 else ("" if label == "unlearned" else text) for i in range(len(s.items))]
                   for role, s in sets.items()}
    return res


def test_targets_and_both_models_outputs_are_scored_in_one_pass(cfg, tiny, monkeypatch):
    model, tok = tiny
    sets = {"forget": qa_set("forget", 5), "retain": qa_set("retain", 7)}
    original, unlearned = outputs("original", sets, "From town"), outputs("unlearned", sets, "No idea")
    passes = []
    real = nll.response_nll

    def spy(model, rows, pad_id, batch_size=8):
        assert not any(e.prompt_truncated or e.response_truncated for e in rows)  # each prompt whole, alike in every row
        passes.append([tuple(e.ids[: e.n_prompt]) for e in rows])
        return real(model, rows, pad_id, batch_size)

    monkeypatch.setattr(nll, "response_nll", spy)
    score_nll(model, tok, cfg, sets, targets=original, fluency=[original, unlearned])
    assert len(passes) == 1  # one pass, not one per set and kind of row
    prompts = passes[0]
    empty = sum(o == "" for outs in unlearned.outputs.values() for o in outs)
    assert empty == 5 and len(prompts) == 12 + 12 + 12 - empty  # targets, both models' outputs but the empty ones
    # the rows of one prompt sit side by side, so a batch computes the prompt once
    runs = [p for i, p in enumerate(prompts) if i == 0 or p != prompts[i - 1]]
    assert len(runs) == len(set(prompts)) == 12

    monkeypatch.setattr(nll, "response_nll", real)
    for role, s in sets.items():
        want = target_nll(model, set_encoder(cfg, tok, s), s, 4)
        assert original.nll[role] == pytest.approx(want, rel=1e-4)
        for res in (original, unlearned):
            want = output_nll(model, set_encoder(cfg, tok, s, add_eos=False), s.prompts, res.outputs[role], 4)
            got = res.fluency_nll[role]
            assert [v is None for v in got] == [v is None for v in want] == [o == "" for o in res.outputs[role]]
            assert [v for v in got if v is not None] == pytest.approx([v for v in want if v is not None], rel=1e-4)
    assert unlearned.nll == {}  # asked for its fluency only


def test_grouped_values_come_back_per_list_in_order(tiny):
    model, tok = tiny
    from unlearn.data.encode import Encoder

    enc = Encoder(tok, "qa", 96)
    a = enc.encode_many([(f"Question {i}?", f"Answer {i}.") for i in (3, 1, 2)])
    b = enc.encode_many([(f"Question {i}?", f"Another answer {i}, longer.") for i in (2, 3)])
    got = nll.grouped_nll(model, [a, [], b], tok.pad_token_id, batch_size=4)
    want = [nll.response_nll(model, rows, tok.pad_token_id, 1) if rows else [] for rows in (a, [], b)]
    assert [len(g) for g in got] == [3, 0, 2]
    for g, w in zip(got, want):
        assert g == pytest.approx(w, rel=1e-4)
