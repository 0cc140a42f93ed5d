"""The on-disk cache of the original model's outputs (unlearn.evaluate.cache): hits, misses on a
changed model, prompts or decoding, bad entries ignored and rebuilt, atomic writes, eval.cache: false."""

import hashlib
import json
import os
import shutil

import pytest
import torch

import unlearn.models
from conftest import FORGET, RETAIN, tiny_config, write_config, write_jsonl
from unlearn import load_config
from unlearn.evaluate import run as run_mod
from unlearn.evaluate.cache import OutputCache, cache_root, model_fingerprint, value_sha256


# --------------------------------------------------------------------------------------------
# OutputCache alone


def test_put_then_get_returns_the_value_and_the_entry_says_what_it_is(tmp_path):
    cache = OutputCache(tmp_path / "c")
    key = cache.key("a", 1, {"b": [1.5, None]})
    assert key == hashlib.sha256(json.dumps(["a", 1, {"b": [1.5, None]}], sort_keys=True).encode()).hexdigest()
    assert cache.get(key) is None  # a miss before anything is stored
    value = {"outputs": ["x", "y"], "nll": [1.25, float("inf")]}
    cache.put(key, value)
    assert cache.get(key) == value
    entry = json.loads((tmp_path / "c" / f"{key}.json").read_text())
    assert entry == {"key": key, "value": value, "sha256": value_sha256(value)}
    assert value_sha256({"b": 1, "a": [2]}) == hashlib.sha256(b'{"a":[2],"b":1}').hexdigest()
    assert [p.name for p in (tmp_path / "c").iterdir()] == [f"{key}.json"]  # no temp file left


def test_keys_differ_when_any_part_differs_and_ignore_dict_order():
    k = OutputCache.key
    assert k("m", {"a": 1, "b": 2}) == k("m", {"b": 2, "a": 1})
    assert len({k("m", 1), k("m", 2), k("n", 1), k("m", "1"), k(["m", 1])}) == 5


def tampered(entry):
    """The entry with its first output changed and its sha256 kept: the shape still fits."""
    outputs = entry["value"]["outputs"]
    (outputs if isinstance(outputs, list) else outputs[sorted(outputs)[0]])[0] = "tampered"
    return entry


BAD_ENTRIES = {
    "garbage bytes": lambda key, good: b"\x00\xff\xfe garbage \x80",
    "truncated json": lambda key, good: good[: len(good) // 2],
    "another key": lambda key, good: json.dumps({**json.loads(good), "key": "0" * 64}).encode(),
    "wrong sha256": lambda key, good: json.dumps(tampered(json.loads(good))).encode(),
    "extra field": lambda key, good: json.dumps({**json.loads(good), "more": 1}).encode(),
    "not an object": lambda key, good: b"[1, 2, 3]",
    "empty file": lambda key, good: b"",
}


@pytest.mark.parametrize("bad", list(BAD_ENTRIES))
def test_a_bad_entry_is_a_miss_and_is_removed(tmp_path, bad):
    cache = OutputCache(tmp_path)
    key = cache.key("bad", bad)
    cache.put(key, {"outputs": ["fine"]})
    path = tmp_path / f"{key}.json"
    path.write_bytes(BAD_ENTRIES[bad](key, path.read_bytes()))
    assert cache.get(key) is None
    assert not path.exists()
    cache.put(key, {"outputs": ["rebuilt"]})
    assert cache.get(key) == {"outputs": ["rebuilt"]}


def test_put_is_atomic_a_failed_rename_leaves_no_entry_and_no_temp_file(tmp_path, monkeypatch):
    cache = OutputCache(tmp_path)
    key = cache.key("atomic")

    def fail(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    cache.put(key, {"big": "value"})  # the cache only saves time: a failed write is not an error
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    cache.put(key, {"old": 1})
    monkeypatch.setattr(os, "replace", fail)
    cache.put(key, {"new": 2})
    assert cache.get(key) == {"old": 1}  # the old entry, whole; never a part of the new one
    assert [p.name for p in tmp_path.iterdir()] == [f"{key}.json"]


def test_a_disabled_cache_never_reads_or_writes(tmp_path):
    OutputCache(tmp_path / "c").put(OutputCache.key("k"), 1)
    off = OutputCache(tmp_path / "c", enabled=False)
    assert off.get(OutputCache.key("k")) is None
    off.put(OutputCache.key("other"), 2)
    assert [p.name for p in (tmp_path / "c").iterdir()] == [f"{OutputCache.key('k')}.json"]
    OutputCache(tmp_path / "none", enabled=False).put(OutputCache.key("k"), 1)
    assert not (tmp_path / "none").exists()


def test_a_key_that_is_not_hex_is_refused(tmp_path):
    from unlearn.errors import UnlearnError

    with pytest.raises(UnlearnError, match="bad key '../escape'"):
        OutputCache(tmp_path).get("../escape")


def test_the_root_is_unlearn_cache_outputs(tmp_path, monkeypatch):
    monkeypatch.delenv("UNLEARN_OUTPUT_CACHE", raising=False)
    monkeypatch.setenv("UNLEARN_CACHE", str(tmp_path / "uc"))
    assert cache_root() == tmp_path / "uc" / "outputs"
    assert OutputCache().root == tmp_path / "uc" / "outputs"
    monkeypatch.setenv("UNLEARN_OUTPUT_CACHE", str(tmp_path / "elsewhere"))
    assert cache_root() == tmp_path / "elsewhere"


# --------------------------------------------------------------------------------------------
# Model fingerprints


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    """tiny-random-llama saved as a plain folder (weights, config, tokenizer)."""
    from unlearn.config import ModelConfig

    folder = tmp_path_factory.mktemp("model") / "orig"
    model, tok = unlearn.models.load_model(ModelConfig(name="tiny-random-llama"))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def perturb_weights(folder):
    """Add small noise to one weight matrix of the model in `folder` (same file size, other bytes).
    Noise, not a constant: a constant added to the output head shifts every logit of a position
    alike, which leaves every NLL where it was (up to rounding)."""
    from safetensors.torch import load_file, save_file

    weights = load_file(folder / "model.safetensors")
    name = sorted(weights)[0]
    g = torch.Generator().manual_seed(0)
    weights[name] = weights[name] + 0.01 * torch.randn(weights[name].shape, generator=g)
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})


def test_fingerprints_follow_the_content_of_a_model_folder(model_folder, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(model_folder, copy)
    fp = model_fingerprint(str(model_folder))
    assert len(fp) == 64 and model_fingerprint(str(copy)) == fp  # content, not the path
    perturb_weights(copy)
    changed = model_fingerprint(str(copy))
    assert changed != fp
    shutil.copytree(model_folder, tmp_path / "tok")
    cfg = json.loads((tmp_path / "tok" / "tokenizer_config.json").read_text())
    (tmp_path / "tok" / "tokenizer_config.json").write_text(json.dumps({**cfg, "model_max_length": 7}))
    assert model_fingerprint(str(tmp_path / "tok")) not in (fp, changed)  # the tokenizer counts too
    (copy / ".hidden").write_text("editor state")
    assert model_fingerprint(str(copy)) == changed


def test_tiny_aliases_have_a_fixed_fingerprint_and_unknown_hub_ids_none():
    from unlearn.version import __version__

    assert model_fingerprint("tiny-random-llama") == hashlib.sha256(
        f"alias\0tiny-random-llama\0unlearn {__version__}".encode()).hexdigest()
    assert model_fingerprint("tiny-random-opt") != model_fingerprint("tiny-random-llama")
    assert model_fingerprint("nobody-here/no-such-model") is None  # not in the hub cache: do not cache


def test_an_adapter_folder_includes_its_base_model(model_folder, tmp_path):
    for name, base in (("a", str(model_folder)), ("b", "tiny-random-llama")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base}))
        (tmp_path / name / "adapter_model.safetensors").write_bytes(b"same adapter")
    assert model_fingerprint(str(tmp_path / "a")) != model_fingerprint(str(tmp_path / "b"))
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "nobody-here/none"}))
    assert model_fingerprint(str(tmp_path / "c")) is None


# --------------------------------------------------------------------------------------------
# evaluate_run with the cache


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished 2-step run on tiny-random-llama."""
    from unlearn import run

    tmp = tmp_path_factory.mktemp("cache-run")
    files = {"forget": write_jsonl(tmp / "forget.jsonl", FORGET), "retain": write_jsonl(tmp / "retain.jsonl", RETAIN)}
    cfg = tiny_config(tmp, files, train={"max_steps": 2})
    run(load_config(write_config(tmp / "train.yaml", cfg)))
    return tmp, files


@pytest.fixture
def evaluate(trained, tmp_path, monkeypatch):
    """evaluate(**eval settings) -> (EvalResult, labels run_model generated for, names load_model
    loaded), with UNLEARN_CACHE in tmp_path; `model=` names the original model."""
    tmp, files = trained
    monkeypatch.delenv("UNLEARN_OUTPUT_CACHE", raising=False)
    monkeypatch.setenv("UNLEARN_CACHE", str(tmp_path / "uc"))
    real_run, real_load = run_mod.run_model, unlearn.models.load_model

    def go(model="tiny-random-llama", **settings):
        generated, loaded = [], []

        def spy_run(model_, tokenizer, cfg, sets, label, *a, **kw):
            generated.append(label)
            return real_run(model_, tokenizer, cfg, sets, label, *a, **kw)

        def spy_load(mc, tokenizer=None):
            loaded.append(mc.name)
            return real_load(mc, tokenizer)

        monkeypatch.setattr(run_mod, "run_model", spy_run)
        monkeypatch.setattr(unlearn.models, "load_model", spy_load)
        ev = {"sets": ["forget", "retain"], "max_new_tokens": 4, "judge": None, **settings}
        cfg = tiny_config(tmp, files, model={"name": model}, train={"max_steps": 2}, eval=ev)
        result = run_mod.evaluate_run(load_config(write_config(tmp_path / "c.yaml", cfg)))
        return result, generated, loaded

    return go


def entries(tmp_path):
    """{kind: path} of the cache's entries: 'original' (ModelOutputs) and 'fluency'."""
    found = {}
    for p in (tmp_path / "uc" / "outputs").glob("*.json"):
        value = json.loads(p.read_text())["value"]
        found["original" if "label" in value else "fluency"] = p
    return found


def close(a, b, rel=1e-4) -> bool:
    """Equal, floats within `rel` (nested dicts and lists)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k], rel) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y, rel) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return a == pytest.approx(b, rel=rel)
    return a == b


def same_scores(a, b, exact=True):
    """The same results; `exact=False` where the unlearned outputs' fluency was computed again in
    another pass: a row's NLL can differ in its last digits with the rows it shares a batch with."""
    assert a.metrics["metrics"] == b.metrics["metrics"]
    assert a.samples == b.samples if exact else close(a.samples, b.samples)
    assert (a.original.outputs, a.original.nll, a.original.fluency_nll) == (b.original.outputs, b.original.nll, b.original.fluency_nll)
    assert a.unlearned.fluency_nll == b.unlearned.fluency_nll if exact else close(a.unlearned.fluency_nll, b.unlearned.fluency_nll)


def test_a_second_eval_takes_the_original_from_the_cache_without_loading_it(evaluate, tmp_path):
    first, generated, loaded = evaluate()
    assert generated == ["unlearned", "original"] and len(loaded) == 2
    assert first.metrics["settings"]["original_cached"] is False
    assert set(entries(tmp_path)) == {"original", "fluency"}
    second, generated, loaded = evaluate()
    assert generated == ["unlearned"]  # the original model generated nothing...
    assert loaded == [str(first.model_dir)]  # ...and was not even loaded: its fluency was cached too
    assert second.metrics["settings"]["original_cached"] is True
    assert second.metrics["seconds"]["original_generation"] == 0.0 < first.metrics["seconds"]["original_generation"]
    same_scores(first, second)


def test_other_unlearned_outputs_load_the_original_for_their_fluency_only(evaluate, tmp_path):
    first, _, _ = evaluate()
    entries(tmp_path)["fluency"].unlink()  # as if another run's outputs were evaluated
    second, generated, loaded = evaluate()
    assert generated == ["unlearned"] and loaded == [str(first.model_dir), "tiny-random-llama"]
    assert second.metrics["settings"]["original_cached"] is True
    same_scores(first, second, exact=False)  # the first computed it with the original's own rows
    assert set(entries(tmp_path)) == {"original", "fluency"}  # the fluency is stored again


def test_a_changed_model_is_a_miss(evaluate, model_folder, tmp_path):
    folder = tmp_path / "orig"
    shutil.copytree(model_folder, folder)
    first, generated, _ = evaluate(model=str(folder))
    assert generated == ["unlearned", "original"]
    assert evaluate(model=str(folder))[1] == ["unlearned"]
    perturb_weights(folder)  # new weights in the same folder
    changed, generated, _ = evaluate(model=str(folder))
    assert generated == ["unlearned", "original"] and changed.metrics["settings"]["original_cached"] is False
    assert changed.original.nll != first.original.nll  # the new weights' NLLs, not the stale ones
    assert len(list((tmp_path / "uc" / "outputs").glob("*.json"))) == 4  # two models' entries


def test_changed_prompts_are_a_miss(evaluate, tmp_path):
    retain = write_jsonl(tmp_path / "r.jsonl", RETAIN)
    first, generated, _ = evaluate(retain={"path": str(retain)})
    assert generated == ["unlearned", "original"]
    write_jsonl(retain, RETAIN[:-1] + [("What colour is the sky?", RETAIN[-1][1])])
    second, generated, _ = evaluate(retain={"path": str(retain)})
    assert generated == ["unlearned", "original"]
    assert len(second.original.outputs["retain"]) == len(RETAIN)
    assert second.original.outputs["forget"] == first.original.outputs["forget"]  # same model, same prompts
    write_jsonl(retain, RETAIN[:-1] + [(RETAIN[-1][0], "Another target.")])  # a target is in the key too
    assert evaluate(retain={"path": str(retain)})[1] == ["unlearned", "original"]


def test_changed_decoding_is_a_miss(evaluate):
    assert evaluate(max_new_tokens=4)[1] == ["unlearned", "original"]
    assert evaluate(max_new_tokens=4)[1] == ["unlearned"]
    result, generated, _ = evaluate(max_new_tokens=5)
    assert generated == ["unlearned", "original"] and result.metrics["settings"]["original_cached"] is False
    assert evaluate(max_new_tokens=4, do_sample=True)[1] == ["unlearned", "original"]


@pytest.mark.parametrize("bad", ["garbage bytes", "truncated json", "another key", "wrong sha256"])
def test_a_bad_original_entry_is_ignored_and_rebuilt(evaluate, tmp_path, bad):
    first, _, _ = evaluate()
    path = entries(tmp_path)["original"]
    good = path.read_bytes()
    path.write_bytes(BAD_ENTRIES[bad](path.stem, good))
    second, generated, _ = evaluate()
    assert generated == ["unlearned", "original"] and second.metrics["settings"]["original_cached"] is False
    same_scores(first, second)
    rebuilt = OutputCache(path.parent).get(path.stem)  # replaced by a good entry: the same outputs
    assert rebuilt is not None and path.exists()
    assert {**rebuilt, "seconds": 0} == {**json.loads(good)["value"], "seconds": 0}


def test_a_wellformed_entry_of_the_wrong_shape_is_not_trusted(evaluate, tmp_path):
    """A valid entry (right key and sha256) whose outputs do not fit the sets is a miss too."""
    first, _, _ = evaluate()
    path = entries(tmp_path)["original"]
    value = json.loads(path.read_text())["value"]
    value["outputs"]["retain"] = value["outputs"]["retain"][:-1]
    OutputCache(path.parent).put(path.stem, value)
    second, generated, _ = evaluate()
    assert generated == ["unlearned", "original"]
    same_scores(first, second)


def test_eval_cache_false_never_reads_or_writes(evaluate, tmp_path):
    evaluate(cache=False)
    assert not (tmp_path / "uc" / "outputs").exists()
    evaluate()  # fills the cache
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "uc" / "outputs").iterdir()}
    result, generated, _ = evaluate(cache=False)
    assert generated == ["unlearned", "original"] and result.metrics["settings"]["original_cached"] is False
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "uc" / "outputs").iterdir()} == before
