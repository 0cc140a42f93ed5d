"""Data that is legal but suspicious gets a warning with a count (and a line in run.json); data that
cannot be trained on gets an error that names the example."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from conftest import FORGET, RETAIN, tiny_config, write_config, write_jsonl
from unlearn.cli import app
from unlearn.data import Encoder, Example, encode_examples
from unlearn.data.checks import data_warnings, duplicates, overlap
from unlearn.errors import UnlearnError


def ex(p, r):
    return Example(p, r)


def test_counts_by_hand():
    forget = [ex("a", "1"), ex("a", "1"), ex("b", "2"), ex("c", "3"), ex("a", "1")]
    retain = [ex("b", "2"), ex("c", "other"), ex("d", "4")]
    assert duplicates(forget) == 2  # the second and third ("a", "1")
    assert overlap(forget, retain) == (1, 1)  # ("b", "2") in both; prompt "c" with another answer
    found = {key: n for key, n, _ in data_warnings(forget, retain, global_batch=4)}
    assert found == {"forget_duplicates": 2, "retain_smaller_than_batch": 3,
                     "forget_retain_overlap": 1, "forget_retain_same_prompt": 1}
    assert data_warnings(retain, None, global_batch=3) == []


def test_a_run_warns_and_records_the_counts(tmp_path):
    forget = FORGET + [FORGET[0], RETAIN[1]]  # one duplicate, one example that is also in retain
    files = {"forget": write_jsonl(tmp_path / "f.jsonl", forget), "retain": write_jsonl(tmp_path / "r.jsonl", RETAIN)}
    cfg = tiny_config(tmp_path, files, train={"max_steps": 1, "batch_size": 8})
    r = CliRunner().invoke(app, ["run", str(write_config(tmp_path / "c.yaml", cfg))])
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "warning: 1 of 6 forget examples are exact duplicates of another" in text
    assert "warning: 1 forget examples also appear in retain (same prompt and response)" in text
    assert "warning: the forget set has 6 examples, fewer than one batch (8 = train.batch_size x processes)" in text
    warnings = json.loads((tmp_path / "run" / "run.json").read_text())["warnings"]
    assert warnings == {"forget_duplicates": 1, "forget_smaller_than_batch": 6, "retain_smaller_than_batch": 6,
                        "forget_retain_overlap": 1}


def test_a_response_empty_after_tokenizing_names_the_example():
    from tokenizers import normalizers

    from unlearn.models import byte_tokenizer

    tok = byte_tokenizer()
    tok.pad_token = tok.eos_token
    tok.backend_tokenizer.normalizer = normalizers.Replace("x", "")  # this tokenizer drops every "x"
    encoder = Encoder(tok, "{prompt}\n{response}", 64, add_eos=False)
    examples = [Example("q", "fine", where="f.jsonl line 1"), Example("q", "xxx", where="f.jsonl line 2")]
    with pytest.raises(UnlearnError, match=r"^f\.jsonl line 2: the response is empty after templating and tokenizing"):
        encode_examples(encoder, examples)


def test_a_tokenizer_without_pad_or_eos_token(tmp_path, data_files, tiny):
    from unlearn.config import ModelConfig
    from unlearn.models import byte_tokenizer, load_model

    model, _ = tiny
    tok = byte_tokenizer()
    tok.eos_token = None
    assert tok.pad_token is None and tok.eos_token is None
    folder = tmp_path / "noeos"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    cfg = tiny_config(tmp_path, data_files, model={"name": str(folder)}, train={"max_steps": 2})
    r = CliRunner().invoke(app, ["run", str(write_config(tmp_path / "c.yaml", cfg))])
    assert r.exit_code == 0, r.output
    assert "warning: the tokenizer has no EOS token" in " ".join(r.output.split())
    assert "<pad>" in r.output
    m = json.loads((tmp_path / "run" / "run.json").read_text())
    assert m["warnings"] == {"tokenizer_without_eos": 1}
    again, tok2 = load_model(ModelConfig(name=str(tmp_path / "run" / "model")))
    assert tok2.pad_token == "<pad>" and again.get_input_embeddings().num_embeddings >= len(tok2)
