import filecmp

import pytest
from typer.testing import CliRunner

from unlearn.cli import app
from unlearn.config import SourceConfig
from unlearn.data import load_examples, load_source
from unlearn.data.sources.profiles import SPLITS, ProfileSpec, make_profiles
from unlearn.errors import UnlearnError


def test_same_seed_same_files_and_cli(tmp_path):
    runner = CliRunner()
    for d in ("a", "b"):
        r = runner.invoke(app, ["data", "profiles", "--out", str(tmp_path / d)])
        assert r.exit_code == 0, r.output
    for split in SPLITS:
        assert filecmp.cmp(tmp_path / "a" / f"{split}.jsonl", tmp_path / "b" / f"{split}.jsonl", shallow=False)
    rows = load_examples(tmp_path / "a" / "forget.jsonl")
    assert rows[0].meta["answer"] and rows[0].meta["person"] in rows[0].prompt
    assert make_profiles(ProfileSpec(seed=1))["forget"][0].prompt != make_profiles()["forget"][0].prompt


def test_names_and_values_are_unique_and_splits_are_disjoint():
    p = make_profiles(ProfileSpec(people=32))
    people = {e.meta["person"] for s in ("forget", "retain") for e in p[s]}
    assert len(people) == 32  # no duplicate names
    forget_people = {e.meta["person"] for e in p["forget"]}
    assert len(forget_people) == 8 and not forget_people & {e.meta["person"] for e in p["retain"]}
    for attr in ("birthplace", "profession", "pet"):
        owners = {}
        for s in ("forget", "retain"):
            for e in p[s]:
                if e.meta["attribute"] == attr:
                    owners.setdefault(e.meta["answer"], set()).add(e.meta["person"])
        assert all(len(o) == 1 for o in owners.values()), attr  # one person per value
    train_q = {e.prompt for e in p["forget"]}
    assert not train_q & {e.prompt for e in p["forget_paraphrase"]}  # held-out phrasings are unseen
    for e in p["forget"] + p["forget_paraphrase"]:
        assert e.meta["answer"] in e.response


def test_adapter_by_name():
    ex = load_source(SourceConfig(dataset="profiles", split="forget_paraphrase"), "forget")
    assert len(ex) == 18  # 3 of 12 people x 3 facts x the 2 held-out phrasings of 4
    joined = load_source(SourceConfig(dataset="profiles", split="retain+general"), "retain")
    assert len(joined) == 9 * 3 * 2 + 40 and joined[-1].prompt == "What is the fastest land animal?"
    with pytest.raises(UnlearnError, match="unknown split 'nope'"):
        load_source(SourceConfig(dataset="profiles", split="nope"), "forget")
