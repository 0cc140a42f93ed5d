"""Bad input, tried systematically (hypothesis): data loaders, the encoder and the config parser.

The property everywhere: the only exception that may escape is UnlearnError, with a one-line
message; and what loads is well formed. Where a format has a writer (CSV, JSON Lines, Parquet, the
resolved config), what is written must load back unchanged.

Runs are reproducible: conftest.py loads a derandomized hypothesis profile (`ci`); set
HYPOTHESIS_PROFILE=explore for fresh random cases. The number of cases tried is printed at the
end of the test session.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from conftest import count_fuzz_case
from unlearn.config import config_from_dict, load_config
from unlearn.data import Encoder, load_examples
from unlearn.errors import UnlearnError
from unlearn.objective import Objective

# HYPOTHESIS_PROFILE=explore: fresh random cases, 20 times as many.
SCALE = 20 if os.environ.get("HYPOTHESIS_PROFILE") == "explore" else 1
FAST = settings(
    max_examples=100 * SCALE, deadline=5000, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
FEW = settings(
    max_examples=50 * SCALE, deadline=5000, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


def expect_clean(fn):
    """Call fn; return its result, or None after an UnlearnError with a one-line message.
    Any other exception fails the test (it is a bug)."""
    try:
        return fn()
    except UnlearnError as e:
        msg = str(e)
        assert msg and len(msg.splitlines()) == 1, repr(msg)
        return None


# ---- strategies ---------------------------------------------------------------------------------

# Text with the awkward parts over-represented: NUL, quotes, separators, CR/LF, BOM, lone
# surrogates, non-BMP characters, and unicode line separators.
AWKWARD = st.sampled_from(["\x00", '"', "'", ",", "\n", "\r", "\r\n", "\ufeff", "\ud800", "\U0001f600",
                           "\u2028", "\\", "{", "}", "{prompt}", "{response}", " ", "\t", "é", "</s>", "<s>"])
TEXT = st.lists(st.one_of(st.text(max_size=12), AWKWARD), max_size=8).map("".join)
HUGE = st.sampled_from(["", " ", "x" * 200_000, "ab\n" * 50_000])
ANY_TEXT = st.one_of(TEXT, TEXT, TEXT, HUGE)
# PyYAML is pure Python (about 1 s per 100 KB): long strings in configs are long, not huge.
LONG = st.sampled_from(["", " ", "x" * 5_000, "ab\n" * 1_000])
CONFIG_TEXT = st.one_of(TEXT, TEXT, TEXT, LONG)

JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), ANY_TEXT)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)),
    max_leaves=12,
)
RECORD = st.fixed_dictionaries(
    {},
    optional={"prompt": st.one_of(ANY_TEXT, JSON_VALUES), "response": st.one_of(ANY_TEXT, JSON_VALUES),
              "meta": JSON_VALUES},
)


def _file(suffix: str, data: bytes) -> Path:
    d = Path(tempfile.mkdtemp(prefix="fuzz-"))
    p = d / f"data{suffix}"
    p.write_bytes(data)
    return p


def _check_examples(examples):
    for e in examples:
        assert isinstance(e.prompt, str) and isinstance(e.response, str)
        assert e.response.strip() and "\x00" not in e.prompt + e.response
        e.prompt.encode("utf-8"), e.response.encode("utf-8")  # no lone surrogates got through


# ---- data loaders -------------------------------------------------------------------------------


@FAST
@given(suffix=st.sampled_from([".jsonl", ".json", ".csv", ".parquet"]),
       data=st.one_of(st.binary(max_size=400), st.just(b""), st.just(b"\xef\xbb\xbf"),
                      st.just(b"PAR1" + b"\x00" * 20 + b"PAR1"), st.just(b"[" * 50_000)))
def test_arbitrary_bytes(suffix, data):
    count_fuzz_case("loader: arbitrary bytes")
    result = expect_clean(lambda: load_examples(_file(suffix, data)))
    if result is not None:
        _check_examples(result)


@FAST
@given(lines=st.lists(st.one_of(RECORD, JSON_VALUES), max_size=6), bom=st.booleans(),
       newline=st.sampled_from(["\n", "\r\n"]), as_list=st.booleans(), ascii_only=st.booleans())
def test_json_values(lines, bom, newline, as_list, ascii_only):
    count_fuzz_case("loader: random JSON values")
    if as_list:
        text, suffix = json.dumps(lines, ensure_ascii=ascii_only), ".json"
    else:
        text, suffix = newline.join(json.dumps(x, ensure_ascii=ascii_only) for x in lines), ".jsonl"
    raw = ("\ufeff" if bom else "") + text
    result = expect_clean(lambda: load_examples(_file(suffix, raw.encode("utf-8", "surrogatepass"))))
    if result is None:
        return
    _check_examples(result)
    good = [x for x in lines if isinstance(x, dict) and "prompt" in x]
    assert [(e.prompt, e.response) for e in result] == [(x["prompt"], x["response"]) for x in good]


@FAST
@given(text=st.text(max_size=300), dup=st.sampled_from(["prompt", "response", "x"]))
def test_jsonl_text_and_duplicate_keys(text, dup):
    count_fuzz_case("loader: JSONL text, duplicate keys")
    expect_clean(lambda: load_examples(_file(".jsonl", text.encode("utf-8", "surrogatepass"))))
    line = '{"prompt": "p", "response": "r", "%s": "again"}\n' % dup
    result = expect_clean(lambda: load_examples(_file(".jsonl", line.encode())))
    assert (result is None) == (dup != "x")  # a key given twice is an error, not "the last wins"


CELL = st.one_of(TEXT, st.sampled_from(['"', '""', '","', "a\nb", "a\r\nb", " lead", "trail ", ""]))


@FAST
@given(rows=st.lists(st.tuples(CELL, CELL, CELL), min_size=1, max_size=6),
       quoting=st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC]),
       bom=st.booleans(), lineterminator=st.sampled_from(["\r\n", "\n"]))
def test_csv_written_by_a_csv_writer_reads_back(rows, quoting, bom, lineterminator):
    count_fuzz_case("loader: CSV quoting")
    rows = [tuple(c.replace("\ud800", "?") for c in r) for r in rows]  # the file must be UTF-8
    buf = io.StringIO()
    w = csv.writer(buf, quoting=quoting, lineterminator=lineterminator)
    w.writerow(["prompt", "response", "extra"])
    w.writerows(rows)
    raw = (("\ufeff" if bom else "") + buf.getvalue()).encode("utf-8")
    result = expect_clean(lambda: load_examples(_file(".csv", raw)))
    # What the csv module itself reads back (with lineterminator "\n" its writer leaves a lone "\r"
    # unquoted, which readers take as a line break: that file has other rows than were written).
    read = [r for r in csv.reader(io.StringIO(buf.getvalue(), newline=""))][1:]
    read = [r for r in read if any(r)]  # all-empty rows are blank lines
    valid = all(len(r) == 3 and "\x00" not in "".join(r) and r[1].strip() for r in read)
    if valid:
        assert result is not None
        assert [(e.prompt, e.response) for e in result] == [(r[0], r[1]) for r in read]
        if read == [list(r) for r in rows if any(r)]:
            assert [e.meta["extra"] for e in result] == [r[2] for r in read]
    if result is not None:
        _check_examples(result)


@FEW
@given(text=st.text(alphabet=st.sampled_from('ab,"\n\r \x00\ufeffé'), max_size=80))
def test_csv_arbitrary_text(text):
    count_fuzz_case("loader: CSV arbitrary text")
    result = expect_clean(lambda: load_examples(_file(".csv", ("prompt,response\n" + text).encode())))
    if result is not None:
        _check_examples(result)


@FEW
@given(prompts=st.lists(st.one_of(ANY_TEXT, st.none(), st.integers()), min_size=1, max_size=4),
       response=st.one_of(TEXT, st.none(), st.floats()))
def test_parquet_columns(prompts, response):
    count_fuzz_case("loader: Parquet columns")
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"prompt": p, "response": response} for p in prompts]
    try:
        table = pa.Table.from_pylist(rows)
    except (pa.ArrowException, UnicodeEncodeError, OverflowError):
        assume(False)  # not something a Parquet file can hold
    d = Path(tempfile.mkdtemp(prefix="fuzz-"))
    pq.write_table(table, d / "a.parquet")
    result = expect_clean(lambda: load_examples(d / "a.parquet"))
    if result is not None:
        _check_examples(result)
        assert [e.prompt for e in result] == prompts


# ---- the encoder: templates, truncation, labels -------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer():
    from unlearn.config import ModelConfig
    from unlearn.models import load_tokenizer

    return load_tokenizer(ModelConfig(name="tiny-random-llama"))


@settings(max_examples=80 * SCALE, deadline=5000, suppress_health_check=[HealthCheck.too_slow])
@given(prompt=st.one_of(TEXT, TEXT, LONG), response=st.one_of(TEXT, TEXT, LONG), template=st.sampled_from(["qa", "chat", "{prompt}{response}",
       "Q: {prompt}\nA: {response}\n", "{prompt} {prompt} -> {response}"]),
       max_length=st.integers(8, 300), add_eos=st.booleans())
def test_encoder_labels_are_the_response_and_fit(tokenizer, prompt, response, template, max_length, add_eos):
    count_fuzz_case("encoder: templates and truncation")
    assume("\x00" not in prompt + response and response.strip())
    try:
        (prompt + response).encode("utf-8")
    except UnicodeEncodeError:
        assume(False)  # refused by the loaders before it gets here
    encoder = Encoder(tokenizer, template, max_length, add_eos)
    enc = expect_clean(lambda: encoder.encode(prompt, response))
    if enc is None:
        return
    assert len(enc.ids) <= max_length
    assert 0 <= enc.n_prompt < len(enc.ids)  # at least one labelled token
    assert enc.labels[: enc.n_prompt] == [-100] * enc.n_prompt
    if len(enc.ids) > 1 and not enc.prompt_truncated:
        if template == "chat":  # the chat template's own opening token, and no BOS added before it
            opening = tokenizer(encoder.prompt_text(prompt), add_special_tokens=False)["input_ids"][0]
            assert enc.ids[0] == opening and enc.ids[0] != tokenizer.bos_token_id, enc.ids[:3]
        else:
            assert enc.ids[0] == tokenizer.bos_token_id, enc.ids[:3]


# ---- the config parser ----------------------------------------------------------------------------

BASE = {"model": {"name": "tiny-random-llama"}, "output_dir": "out",
        "data": {"forget": {"path": "f.jsonl"}, "retain": {"path": "r.jsonl"}}}
KEYS = ["model", "model.name", "model.dtype", "model.lora", "model.lora.r", "model.lora.target_modules",
        "data.template", "data.max_length", "data.forget.path", "data.forget.limit", "data.mismatch.k",
        "data.mismatch.responses", "objective", "objective.ga", "objective.kl", "objective.npo",
        "train.lr", "train.betas", "train.batch_size", "train.scheduler", "train.max_grad_norm",
        "train", "seed", "output_dir", "nosuch", "train.nosuch"]
YAML_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(), CONFIG_TEXT),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(TEXT, inner, max_size=3)),
    max_leaves=8,
)


def _set(data: dict, dotted: str, value) -> None:
    node = data
    *head, last = dotted.split(".")
    for part in head:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[last] = value


def _validate(cfg) -> None:
    """What `unlearn config` and `unlearn run` check before reading any data."""
    Objective(cfg.objective, where=cfg.origin)
    # What loads is a finite positive float, or null where null means something (lr: the default
    # for the model; max_grad_norm: no clipping). No LoRA section: no alpha to check.
    for name, f in (("lr", cfg.train.lr), ("max_grad_norm", cfg.train.max_grad_norm)):
        assert f is None or (type(f) is float and math.isfinite(f) and f > 0), (name, f)
    if cfg.model.lora is not None:
        alpha = cfg.model.lora.alpha
        assert type(alpha) is float and math.isfinite(alpha) and alpha > 0, alpha


@FAST
@given(data=st.one_of(st.binary(max_size=300), st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")),
                      st.sampled_from([b"\xef\xbb\xbfmodel: {name: x}\noutput_dir: o\n", b"a: &a [*a]\n",
                                       b"!!python/object/apply:os.system [echo]\n", b"[" * 5000,
                                       b"model: {name: x}\nmodel: {name: y}\n"])))
def test_config_arbitrary_bytes(data):
    count_fuzz_case("config: arbitrary bytes")
    path = _file(".yaml", data)
    cfg = expect_clean(lambda: load_config(path))
    if cfg is not None:
        expect_clean(lambda: _validate(cfg))


@FAST
@given(edits=st.lists(st.tuples(st.sampled_from(KEYS), YAML_VALUES), min_size=1, max_size=4))
def test_config_wrong_types_and_values(edits):
    count_fuzz_case("config: wrong types and values")
    data = json.loads(json.dumps(BASE))
    for key, value in edits:
        _set(data, key, value)
    try:
        text = yaml.safe_dump(data, allow_unicode=True)
    except (yaml.YAMLError, UnicodeEncodeError):
        assume(False)
    path = _file(".yaml", text.encode("utf-8", "surrogatepass"))
    cfg = expect_clean(lambda: load_config(path))
    if cfg is None:
        return
    expect_clean(lambda: _validate(cfg))
    # what loads must print (config.yaml of a run) and load back to the same config
    again = _file(".yaml", cfg.to_yaml().encode("utf-8"))
    assert load_config(again).to_dict() == cfg.to_dict()


@FAST
@given(overrides=st.lists(st.one_of(
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(KEYS), st.text(max_size=40)),
    st.text(max_size=40)), min_size=1, max_size=3))
def test_config_overrides(overrides):
    count_fuzz_case("config: command-line overrides")
    cfg = expect_clean(lambda: config_from_dict(BASE, overrides))
    if cfg is not None:
        expect_clean(lambda: _validate(cfg))
