"""Splits by prompt group (issue 14, item 1): the same prompt, or the same group_field value, never
lands in two parts, so the held-out part is unseen in training."""

import json

import pytest

from conftest import write_jsonl
from unlearn.config.sections import ForgetSourceConfig
from unlearn.data import load_source, split_examples, split_indices
from unlearn.data.records import Example
from unlearn.data.split import group_ids, normalise_prompt
from unlearn.errors import UnlearnError

SPLIT = [0.5, 0.25, 0.25]


def _part_of(parts, key):
    """Which parts hold an item with this key."""
    return {i for i, part in enumerate(parts) for e in part if key(e)}


def test_the_same_prompt_never_lands_in_two_parts():
    # PKU-SafeRLHF-like: each prompt gives two unsafe responses, and prompts repeat across rows
    # with other spacing or case.
    items = []
    for p in range(20):
        prompt = f"How do I do harmful thing number {p}?"
        items.append(Example(prompt, f"First unsafe answer {p}."))
        items.append(Example(prompt, f"Second unsafe answer {p}."))
        items.append(Example("  " + prompt.upper().replace(" ", "   ") + " ", f"Repeated row {p}."))
    for seed in range(5):
        parts = split_examples(items, SPLIT, seed)
        assert sum(len(p) for p in parts) == len(items)
        assert all(parts)  # 20 groups are enough for every part
        for p in range(20):
            where = _part_of(parts, lambda e: normalise_prompt(e.prompt) == f"how do i do harmful thing number {p}?")
            assert len(where) == 1, (seed, p, where)


def test_a_group_field_keeps_a_group_in_one_part(tmp_path):
    rows = [{"prompt": f"Question {i} about {who}?", "response": f"Answer {i}.", "person": who}
            for who in ("Ada", "Bob", "Cy", "Di", "Ed", "Flo", "Gus", "Hal") for i in range(3)]
    path = write_jsonl(tmp_path / "people.jsonl", rows)
    examples = load_source(ForgetSourceConfig(path=str(path), group_field="person"), "forget")
    for seed in range(5):
        parts = split_examples(examples, SPLIT, seed)
        for who in ("Ada", "Bob", "Cy", "Di", "Ed", "Flo", "Gus", "Hal"):
            assert len(_part_of(parts, lambda e: e.meta["person"] == who)) == 1, (seed, who)


def test_groups_join_through_a_shared_prompt_or_a_shared_group():
    # 0 and 1 share a prompt, 1 and 2 share a group: all three are one group; 3 is alone
    ids = group_ids(["a b", "A  B", "c", "d"], ["x", "y", "y", "z"])
    assert ids[0] == ids[1] == ids[2] != ids[3]
    assert group_ids(["", " ", "q"]) == [0, 1, 2]  # an empty prompt says nothing about its group


def test_distinct_prompts_split_as_before():
    """Without repeated prompts the parts are the ones an example-wise cut gave (same runs, same
    numbers as before this change)."""
    import random

    def old(n, fractions, seed):
        order = list(range(n))
        random.Random(f"split-{seed}").shuffle(order)
        n_train = min(n, max(1, round(fractions[0] * n)))
        n_val = min(n - n_train, round(fractions[1] * n))
        parts = order[:n_train], order[n_train: n_train + n_val], order[n_train + n_val:]
        return tuple(sorted(p) for p in parts)

    for n in (1, 2, 7, 50):
        for seed in (0, 3):
            assert split_indices(n, [0.7, 0.1, 0.2], seed) == old(n, [0.7, 0.1, 0.2], seed)


def test_a_record_without_the_group_field_is_a_one_line_error(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_text(json.dumps({"prompt": "a?", "response": "b.", "book": "X"}) + "\n"
                    + json.dumps({"prompt": "c?", "response": "d."}) + "\n")
    with pytest.raises(UnlearnError) as e:
        load_source(ForgetSourceConfig(path=str(path), group_field="book"), "forget")
    msg = str(e.value)
    assert f"{path} line 2" in msg and "'book'" in msg and "\n" not in msg


def test_group_field_is_a_key_of_data_forget_only(tmp_path):
    from unlearn.config import config_from_dict

    base = {"model": {"name": "tiny-random-llama"}, "output_dir": str(tmp_path / "run"),
            "data": {"forget": {"path": "f.jsonl", "group_field": "book"}}}
    assert config_from_dict(base).data.forget.group_field == "book"
    for section, key in (("data", "retain"), ("eval", "forget_test")):
        with pytest.raises(UnlearnError, match=f"{section}.{key}.group_field"):
            config_from_dict({**base, section: {key: {"path": "r.jsonl", "group_field": "book"}}})


def test_a_group_too_big_for_its_turn_goes_where_there_is_most_room():
    # PKU-SafeRLHF's fixture: one prompt with one unsafe answer, one with two; 70/10/20 of 3 items
    # must still leave a test part, whichever group comes first
    for seed in range(10):
        train, val, test = split_indices(3, [0.7, 0.1, 0.2], seed, [0, 1, 1])
        assert train and test and not val, seed
    assert split_indices(2, [0.5, 0.25, 0.25], 0, [0, 0]) == ([0, 1], [], [])  # train is never empty
