import json

import pytest
import torch

from conftest import FORGET, write_jsonl
from unlearn.config import SourceConfig
from unlearn.data import IGNORE, Encoder, StepBatcher, collate, encode_examples, load_examples, load_source
from unlearn.errors import UnlearnError


# ---- loaders ------------------------------------------------------------------------------


def test_jsonl_keeps_metadata(tmp_path):
    p = write_jsonl(tmp_path / "a.jsonl", [{"prompt": "p", "response": "r", "id": 7, "tags": ["x"]}])
    (ex,) = load_examples(p)
    assert (ex.prompt, ex.response, ex.meta) == ("p", "r", {"id": 7, "tags": ["x"]})


def test_csv_parquet_json_and_dataset_folder_agree(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"prompt": p, "response": r} for p, r in FORGET]
    (tmp_path / "a.csv").write_text(
        "prompt,response\n" + "".join(f'"{r["prompt"]}","{r["response"]}"\n' for r in rows)
    )
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "a.parquet")
    (tmp_path / "a.json").write_text(json.dumps(rows))
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "dsd"))
    expected = [(p, r) for p, r in FORGET]
    for name in ("a.csv", "a.parquet", "a.json", "ds"):
        got = [(e.prompt, e.response) for e in load_examples(tmp_path / name)]
        assert got == expected, name
    got = [(e.prompt, e.response) for e in load_examples(tmp_path / "dsd", split="test")]
    assert got == expected
    with pytest.raises(UnlearnError, match="split 'train' not found; splits: test"):
        load_examples(tmp_path / "dsd", split="train")


def test_field_names_and_limit(tmp_path):
    p = write_jsonl(tmp_path / "a.jsonl", [{"q": f"q{i}", "a": f"a{i}"} for i in range(5)])
    src = SourceConfig(path=str(p), prompt_field="q", response_field="a", limit=3)
    ex = load_source(src, "forget")
    assert [e.prompt for e in ex] == ["q0", "q1", "q2"]


@pytest.mark.parametrize(
    "content, pattern",
    [
        (b'{"prompt": "a", "response": "b"}\n{"prompt": "a"}\n', r"line 2: missing field 'response'"),
        (b'{"response": "b"}\n', r"line 1: missing field 'prompt'"),
        (b'{"prompt": "a", "response": 3}\n', r"line 1: field 'response' must be a string, got int"),
        (b'{"prompt": null, "response": "b"}\n', r"line 1: field 'prompt' must be a string, got null"),
        (b'{"prompt": "a", "response": "b"}\n{"prompt": "a", \n', r"line 2: invalid JSON"),
        (b'{"prompt": "a", "response": "b"}\n\xff\xfe{}\n', r"line 2: not valid UTF-8"),
        (b'[1, 2]\n', r"line 1: expected a JSON object"),
        (b'{"prompt": "a", "response": "   "}\n', r"line 1: field 'response' is empty"),
    ],
)
def test_bad_records_name_file_line_field(tmp_path, content, pattern):
    p = tmp_path / "bad.jsonl"
    p.write_bytes(content)
    with pytest.raises(UnlearnError, match=r"bad\.jsonl " + pattern):
        load_examples(p)


def test_bad_csv(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("prompt,answer\nhello,world\n")
    with pytest.raises(UnlearnError, match=r"bad\.csv line 2: missing field 'response'"):
        load_examples(p)
    p.write_text("prompt,response\nhello,world,extra\n")
    with pytest.raises(UnlearnError, match=r"bad\.csv line 2: more values than columns"):
        load_examples(p)


def test_bom_and_blank_lines(tmp_path):
    p = tmp_path / "bom.jsonl"
    p.write_bytes(b'\xef\xbb\xbf{"prompt": "a", "response": "b"}\n\n\n{"prompt": "c", "response": "d"}\n')
    assert [e.prompt for e in load_examples(p)] == ["a", "c"]


def test_empty_set_and_missing_file(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(UnlearnError, match="empty.jsonl: the forget set is empty"):
        load_source(SourceConfig(path=str(tmp_path / "empty.jsonl")), "forget")
    with pytest.raises(UnlearnError, match="data file not found"):
        load_examples(tmp_path / "missing.jsonl")
    with pytest.raises(UnlearnError, match="unknown file type '.txt'"):
        (tmp_path / "a.txt").write_text("x")
        load_examples(tmp_path / "a.txt")


# ---- templates and label masks -------------------------------------------------------------


@pytest.fixture(scope="module")
def tok():
    from unlearn.config import ModelConfig
    from unlearn.models import load_tokenizer

    return load_tokenizer(ModelConfig(name="tiny-random-llama"))


def _decode_span(tok, enc):
    return tok.decode(enc.ids[enc.n_prompt :]), tok.decode(enc.ids[: enc.n_prompt])


def test_qa_labels_cover_response_and_eos_only(tok):
    enc = Encoder(tok, "qa").encode("What is the capital of France?", "Paris is the capital.")
    resp, prompt = _decode_span(tok, enc)
    assert resp == " Paris is the capital." + tok.eos_token
    assert prompt == tok.bos_token + "### Question: What is the capital of France?\n### Answer:"
    labels = enc.labels
    assert labels[: enc.n_prompt] == [IGNORE] * enc.n_prompt
    assert labels[enc.n_prompt :] == enc.ids[enc.n_prompt :]
    assert labels[-1] == tok.eos_token_id


def test_custom_and_chat_templates(tok):
    enc = Encoder(tok, "Q: {prompt}\nA: {response}").encode("hi?", "hello")
    assert _decode_span(tok, enc) == (" hello" + tok.eos_token, tok.bos_token + "Q: hi?\nA:")
    enc = Encoder(tok, "chat").encode("hi?", "hello")
    resp, prompt = _decode_span(tok, enc)
    assert prompt == "<|im_start|>user\nhi?<|im_end|>\n<|im_start|>assistant\n"
    # The chat template's end-of-turn token ends the response; no EOS is added after it.
    assert resp == "hello<|im_end|>"
    assert Encoder(tok, "chat").prompt_text("hi?") == prompt


def test_left_truncation_keeps_response_and_bos(tok):
    encoder = Encoder(tok, "qa", max_length=40)
    enc = encoder.encode("x" * 200, "the answer")
    assert len(enc.ids) == 40 and enc.prompt_truncated and not enc.response_truncated
    assert enc.ids[0] == tok.bos_token_id
    assert _decode_span(tok, enc)[0] == " the answer" + tok.eos_token
    assert _decode_span(tok, enc)[1].endswith("xxx\n### Answer:")
    long = encoder.encode("q", "y" * 100)
    assert len(long.ids) == 40 and long.response_truncated


# ---- batches -------------------------------------------------------------------------------


def _batcher(tok, **kw):
    encoder = Encoder(tok, "qa", 96)
    forget = [(f"forget {i}?", f"secret {i}") for i in range(5)]
    retain = [(f"retain {i}?", f"fact {i}") for i in range(7)]
    from unlearn.data import Example

    fe = encode_examples(encoder, [Example(p, r) for p, r in forget])
    re_ = encode_examples(encoder, [Example(p, r) for p, r in retain])
    args = dict(
        forget=fe, forget_prompts=[p for p, _ in forget], retain=re_,
        mismatch_pool=[r for _, r in retain], batch_size=2, k=3, seed=0,
    )
    args.update(kw)
    return StepBatcher(encoder, **args)


def test_batch_layout_and_padding(tok):
    b = _batcher(tok).batch(0)
    assert b.segments == {"forget": slice(0, 2), "mismatch": slice(2, 8), "retain": slice(8, 10)}
    width = int(b.attention_mask.sum(1).max())
    assert b.input_ids.shape == (10, width)  # padded to the longest row, not a fixed length
    assert (b.labels[b.attention_mask == 0] == IGNORE).all()
    for r in range(10):  # every row has a response and it ends with EOS
        lab = b.labels[r][b.labels[r] != IGNORE]
        assert len(lab) > 0 and lab[-1] == tok.eos_token_id
    # mismatch rows are (forget prompt, random retain response)
    text = tok.decode(b.input_ids[2][b.attention_mask[2] == 1])
    assert "Question: forget" in text and " fact " in text


def test_batches_are_deterministic_fresh_and_distinct(tok):
    a, b = _batcher(tok), _batcher(tok)
    assert a.indices(3) == b.indices(3)
    assert torch.equal(a.batch(3).input_ids, b.batch(3).input_ids)
    draws = [tuple(map(tuple, a.indices(i)["mismatch"])) for i in range(6)]
    assert len(set(draws)) > 1  # fresh random responses each step
    for row in a.indices(0)["mismatch"]:
        assert len(set(row)) == 3  # k distinct responses per forget example
    assert _batcher(tok, seed=1).indices(0) != a.indices(0)


def test_epochs_cover_every_example(tok):
    b = _batcher(tok, segments=("forget",), batch_size=1)
    seen = [b.indices(i)["forget"][0] for i in range(5)]
    assert sorted(seen) == list(range(5))


def test_ranks_split_the_global_batch(tok):
    whole = _batcher(tok, batch_size=4)
    r0 = _batcher(tok, batch_size=2, rank=0, world_size=2)
    r1 = _batcher(tok, batch_size=2, rank=1, world_size=2)
    for i in range(3):
        w = whole.indices(i)
        for seg in ("forget", "retain", "mismatch"):
            assert r0.indices(i)[seg] + r1.indices(i)[seg] == w[seg]


def test_collate_pads_right(tok):
    encoder = Encoder(tok, "qa", 96)
    rows = encoder.encode_many([("a", "b"), ("longer prompt", "longer response")])
    b = collate({"retain": rows}, tok.pad_token_id)
    assert b.attention_mask[0, : len(rows[0].ids)].all() and not b.attention_mask[0, len(rows[0].ids) :].any()
