"""`unlearn demo`: the quick demo on the bundled model end to end, the teaching cache, and the
output folder rules. The quick demo's budget is too small to meet the demo's targets; the full demo
must meet every one of them (a slow test: `make test-slow`, about 6 minutes on a 2-core CPU)."""

import json

import pytest
from rich.console import Console
from typer.testing import CliRunner

from unlearn.cli import app
from unlearn.demo import DEMO_MARK, check_demo_dir, demo_summary, run_demo, teach
from unlearn.errors import UnlearnError

runner = CliRunner()

EVERY_METRIC = {
    "forget": {"leak_rate", "rouge_l_recall", "nll", "diversity", "degenerate_rate", "fluency"},
    "forget_test": {"leak_rate", "rouge_l_recall", "nll", "diversity", "degenerate_rate", "fluency"},
    "retain": {"retain_accuracy", "rouge_l_recall", "nll", "diversity", "degenerate_rate", "fluency"},
    "normal": {"similarity_bleu", "similarity_cosine", "diversity", "degenerate_rate", "fluency"},
}


def test_quick_demo_on_the_bundled_model(tmp_path):
    """The CI smoke test of the whole scenario (about 3 minutes): teach, unlearn, evaluate."""
    res = run_demo(tmp_path / "demo", quick=True, cache=tmp_path / "cache", console=Console(quiet=True))
    assert res.report.is_file() and res.report.stat().st_size > 10_000
    metrics = json.loads((res.report.parent / "metrics.json").read_text())
    for role, names in EVERY_METRIC.items():
        assert names <= set(metrics["metrics"][role]), (role, set(metrics["metrics"][role]))
    leak = metrics["metrics"]["forget"]["leak_rate"]
    assert leak["original"] >= 0.5, leak  # the taught model really knows the forget facts
    assert leak["unlearned"] < leak["original"], leak
    manifest = json.loads((tmp_path / "demo" / DEMO_MARK).read_text())
    assert manifest["status"] == "done" and manifest["mode"] == "quick" and not manifest["teach_cached"]
    assert [r["what"] for r in manifest["summary"]] == [r["what"] for r in res.summary]
    assert sorted(p.name for p in (tmp_path / "demo" / "data").iterdir()) == sorted(
        f"{s}.jsonl" for s in ("forget", "forget_paraphrase", "retain", "retain_paraphrase", "general",
                               "general_test", "mismatch")
    )


@pytest.mark.slow
def test_full_demo_meets_every_target(tmp_path):
    """What docs/demo.md promises: the full demo (teaching from the usual cache, so a warm cache
    skips it) meets each target of its table, and the table has all seven rows."""
    res = run_demo(tmp_path / "demo", console=Console(quiet=True))
    assert len(res.summary) == 7 and all(r["target"] for r in res.summary), res.summary
    missed = [(r["what"], r["taught"], r["unlearned"], r["target"]) for r in res.summary if r["met"] is not True]
    assert missed == [], missed
    manifest = json.loads((tmp_path / "demo" / DEMO_MARK).read_text())
    assert manifest["status"] == "done" and manifest["mode"] == "full"
    assert [r["met"] for r in manifest["summary"]] == [True] * 7


def test_taught_model_is_cached_by_config_and_data(tmp_path):
    quiet = Console(quiet=True)
    tiny = ("model.name=tiny-random-llama", "train.max_steps=1", "train.batch_size=2")
    first, cached, _ = teach(quiet, tiny, cache=tmp_path)
    assert not cached and (first / "config.json").exists()
    again, cached, _ = teach(quiet, tiny, cache=tmp_path)
    assert cached and again == first
    other, cached, _ = teach(quiet, (*tiny, "train.lr=1e-3"), cache=tmp_path)  # another config
    assert not cached and other != first


def test_an_unfinished_teaching_run_is_not_taken_from_the_cache(tmp_path):
    quiet = Console(quiet=True)
    tiny = ("model.name=tiny-random-llama", "train.max_steps=1", "train.batch_size=2")
    first, _, _ = teach(quiet, tiny, cache=tmp_path)
    manifest = first.parent / "run.json"
    manifest.write_text(manifest.read_text().replace('"done"', '"interrupted"'))
    again, cached, _ = teach(quiet, tiny, cache=tmp_path)
    assert not cached and again == first and json.loads(manifest.read_text())["status"] == "done"


def test_output_folder_needs_overwrite_and_must_be_a_demos(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    r = runner.invoke(app, ["demo", "--out", str(mine)])
    assert r.exit_code == 2 and "--overwrite" in r.output
    r = runner.invoke(app, ["demo", "--out", str(mine), "--overwrite"])
    assert r.exit_code == 2 and "not written by `unlearn demo`" in r.output
    assert (mine / "notes.txt").read_text() == "keep me"
    (mine / DEMO_MARK).write_text("{}")
    check_demo_dir(mine, overwrite=True)  # a demo's own folder may be replaced
    with pytest.raises(UnlearnError, match="already exists"):
        check_demo_dir(mine, overwrite=False)
    check_demo_dir(tmp_path / "new", overwrite=False)


def test_summary_compares_with_the_targets():
    def m(original, unlearned):
        return {"original": original, "unlearned": unlearned}

    metrics = {"metrics": {
        "forget": {"leak_rate": m(0.95, 0.0)},
        "forget_test": {"leak_rate": m(0.9, 0.2)},
        "retain": {"retain_accuracy": m(1.0, 0.85)},
        "normal": {"similarity_cosine": m(None, 0.81), "diversity": m(0.9, 0.8), "degenerate_rate": m(0.0, 0.05)},
    }}
    met = [r["met"] for r in demo_summary(metrics)]
    # taught >= 90 %, forget <= 5 %, paraphrases 20 % > 10 %, retain 85 % < 90 % of 100 %,
    # cosine 0.81, diversity 0.8 >= 0.72, one degenerate answer in twenty
    assert met == [True, True, False, False, True, True, False]
    assert [r["met"] for r in demo_summary({"metrics": {}})] == [None] * 7
