"""`unlearn eval` end to end on tiny-random-llama, its bad inputs, and evaluation during training."""

import json

import pytest
from typer.testing import CliRunner

from conftest import FORGET, RETAIN, tiny_config, write_config, write_jsonl
from unlearn.cli import app
from unlearn.report import FILES, fmt_change
from unlearn.report.format import fmt_with_interval

runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished run with eval during training, keep_best, a split and every eval set."""
    tmp = tmp_path_factory.mktemp("eval")
    forget = [{"prompt": p, "response": r, "answer": r.split()[-1].strip(".")} for p, r in FORGET * 2]
    files = {"forget": write_jsonl(tmp / "forget.jsonl", forget), "retain": write_jsonl(tmp / "retain.jsonl", RETAIN)}
    write_jsonl(tmp / "normal.jsonl", [{"prompt": "Tell me about the sea."}, {"prompt": "Why do cats purr?"}])
    cfg = tiny_config(
        tmp, files,
        train={"max_steps": 4, "eval_every": 2, "keep_best": True},
        # The tiny random model gives one answer to everything, which the collapse rule would refuse
        # to keep as the best; keep_best's choice by score is what this fixture tests.
        eval={"split": [0.5, 0.25, 0.25], "max_new_tokens": 8, "judge": "refusal",
              "verdict": {"max_top_answer_share": 1.0, "min_distinct_ratio": 0.0},
              "forget": {"match": "contains", "answer_field": "answer"},
              "normal": {"path": str(tmp / "normal.jsonl")}},
    )
    path = write_config(tmp / "c.yaml", cfg)
    r = cli("run", path)
    assert r.exit_code == 0, r.output
    return tmp, path, cfg


@pytest.fixture(scope="module")
def evaluated(trained):
    tmp, path, _ = trained
    r = cli("eval", path)
    assert r.exit_code == 0, r.output
    return tmp / "run" / "eval", r.output


def test_eval_during_training_logs_and_keeps_the_best(trained):
    tmp, _, _ = trained
    log = [json.loads(x) for x in (tmp / "run" / "train_log.jsonl").read_text().splitlines()]
    evals = {rec["step"]: rec["eval"] for rec in log if "eval" in rec}
    assert sorted(evals) == [2, 4]
    for values in evals.values():
        assert set(values) == {
            "forget_leak_rate", "forget_nll", "forget_harmful_rate", "retain_accuracy", "retain_nll",
            "retain_top_answer_share", "retain_distinct_answers", "normal_cosine", "normal_top_answer_share",
            "normal_distinct_answers", "score", "collapsed"}
        assert 0.0 <= values["normal_cosine"] <= 1.0001 and isinstance(values["collapsed"], bool)
        assert values["score"] == pytest.approx(values["retain_accuracy"] - values["forget_leak_rate"], abs=1e-3)
    best = json.loads((tmp / "run" / "best" / "best.json").read_text())
    top = max(v["score"] for v in evals.values())
    assert best["score"] == top and best["step"] == min(s for s, v in evals.items() if v["score"] == top)
    assert (tmp / "run" / "best" / "model" / "model.safetensors").exists()
    assert json.loads((tmp / "run" / "run.json").read_text())["best"]["step"] == best["step"]


def test_split_holds_out_forget_examples_from_training(trained):
    tmp, _, _ = trained
    manifest = json.loads((tmp / "run" / "run.json").read_text())
    assert manifest["examples"]["forget"] == 4  # half of 8: val and test parts never trained on


def test_eval_writes_every_report_file(evaluated):
    folder, output = evaluated
    assert sorted(p.name for p in folder.iterdir()) == sorted(FILES)
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".eval")]  # no temp leftovers
    m = json.loads((folder / "metrics.json").read_text())
    assert list(m["metrics"]) == ["forget", "forget_test", "retain", "normal"]
    # The run trained on the 4 examples of the train part: 2 (prompt, response) pairs, each twice in
    # the file. The forget set is those pairs, once each; forget_test holds 2 examples of the other prompts.
    assert m["sets"]["forget"]["n"] == 2 and m["sets"]["forget_test"]["n"] == 2
    assert m["sets"]["forget"]["trained_examples"] == 2 and m["sets"]["forget"]["training_examples"] == 4
    # FORGET * 2 repeats every prompt: grouped by prompt, no held-out prompt was trained on
    assert m["sets"]["forget_test"]["prompts_in_forget_training"] == 0
    assert m["sets"]["forget_test"]["prompts_in_retain"] == 0
    assert m["sets"]["forget"]["forget_set"] == "trained examples"
    assert {"leak_rate", "rouge_l_recall", "harmful_rate", "nll", "diversity", "fluency"} <= set(m["metrics"]["forget"])
    assert {"retain_accuracy", "nll"} <= set(m["metrics"]["retain"])
    assert {"similarity_bleu", "similarity_cosine"} <= set(m["metrics"]["normal"])
    assert m["metrics"]["normal"]["similarity_bleu"]["original"] is None
    for ms in m["metrics"].values():
        for row in ms.values():
            if row["original"] is not None and row["unlearned"] is not None:
                assert row["change"] == pytest.approx(row["unlearned"] - row["original"], abs=1e-3)
    assert m["metrics"]["forget"]["nll"]["higher_is_better"] is True
    assert m["metrics"]["retain"]["nll"]["higher_is_better"] is False
    # every rate carries its 95 % Wilson interval; the verdict is in metrics.json with its thresholds
    from unlearn.evaluate.metrics.interval import wilson

    leak = m["metrics"]["forget"]["leak_rate"]
    k = round(leak["unlearned"] * 2)
    assert leak["interval"]["unlearned"] == [round(b, 4) for b in wilson(k, 2)]
    assert "interval" not in m["metrics"]["forget"]["nll"]
    assert {"distinct_answers", "top_answer_share", "distinct_1", "distinct_2"} <= set(m["metrics"]["normal"])
    assert m["verdict"]["thresholds"]["forget_target"] == 0.05
    checks = {(c["set"], c["metric"]): c for c in m["verdict"]["forgotten"]["checks"]}
    assert checks[("forget", "leak_rate")]["met"] is (leak["unlearned"] <= 0.05)
    assert ("forget", "harmful_rate") in checks and ("forget", "degenerate_rate") not in checks
    assert m["verdict"]["forgotten"]["met"] is all(c["value"] <= 0.05 for c in checks.values())
    samples = [json.loads(x) for x in (folder / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 2 + 2 + len(RETAIN) + 2
    forget = [s for s in samples if s["set"] == "forget"]
    leak = sum(s["scores"]["unlearned"]["leak_rate"] for s in forget) / len(forget)
    assert leak == pytest.approx(m["metrics"]["forget"]["leak_rate"]["unlearned"], abs=1e-4)
    html = (folder / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 2  # before/after bars and training curves
    assert "leak_rate" in output  # the summary table is printed


def test_json_matches_the_markdown_table(evaluated):
    folder, _ = evaluated
    m = json.loads((folder / "metrics.json").read_text())
    md = (folder / "report.md").read_text()
    table = md.split("## Summary", 1)[1].split("\n\n", 2)[1]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()[2:]]
    expected = [
        (role, name, fmt_with_interval(v["original"], v["unit"], v.get("interval", {}).get("original")),
         fmt_with_interval(v["unlearned"], v["unit"], v.get("interval", {}).get("unlearned")),
         fmt_change(v["change"], v["unit"]))
        for role, ms in m["metrics"].items() for name, v in ms.items()
    ]
    assert [tuple(r[:5]) for r in rows] == expected
    # and the numbers themselves, read back from the Markdown
    for r, (role, name, *_rest) in zip(rows, expected):
        v = m["metrics"][role][name]
        if v["unlearned"] is not None and v["unit"] == "fraction":
            assert float(r[3].split(" [")[0].rstrip("%")) == pytest.approx(100 * v["unlearned"], abs=0.05)
        elif v["unlearned"] is not None:
            assert float(r[3]) == pytest.approx(v["unlearned"], abs=0.005)


def _no_report(tmp):
    return not (tmp / "run" / "eval").exists() and not list((tmp / "run").glob(".eval*"))


def test_bad_inputs_are_one_line_errors_and_write_nothing(trained, tmp_path):
    tmp, path, cfg = trained
    import shutil

    shutil.rmtree(tmp / "run" / "eval", ignore_errors=True)
    write_jsonl(tmp / "noanswer.jsonl", [("q", "a")])
    (tmp / "empty.jsonl").write_text("")
    cases = {
        "no answer field": ([f"eval.forget_test.path={tmp / 'noanswer.jsonl'}",
                             "eval.forget_test.match=contains", "eval.forget_test.answer_field=answer"],
                            "missing field 'answer'"),
        "empty set": ([f"eval.normal.path={tmp / 'empty.jsonl'}"], "is empty"),
        "unloadable judge": ([f"eval.judge=classifier:{tmp / 'nope'}"], "eval.judge: cannot load"),
        "missing model": ([f"output_dir={tmp_path / 'never'}"], "no model found"),
        "bad judge spec": (["eval.judge=magic"], "eval.judge"),
    }
    for name, (overrides, message) in cases.items():
        r = cli("eval", path, *overrides)
        assert r.exit_code == 2, (name, r.output)
        assert message in r.output, (name, r.output)
        assert len(r.output.strip().splitlines()) <= 2, (name, r.output)  # one line (wrapped at most once)
        assert _no_report(tmp), name


def test_unfinished_runs_are_refused_unless_allowed(trained):
    tmp, path, _ = trained
    manifest_path = tmp / "run" / "run.json"
    saved = manifest_path.read_text()
    try:
        manifest_path.write_text(json.dumps({**json.loads(saved), "status": "running"}))
        r = cli("eval", path, "eval.sets=[retain]")
        assert r.exit_code == 2 and "--allow-unfinished" in r.output
        assert _no_report(tmp)
        r = cli("eval", path, "eval.sets=[retain]", "--allow-unfinished")
        assert r.exit_code == 0, r.output
        m = json.loads((tmp / "run" / "eval" / "metrics.json").read_text())
        assert list(m["metrics"]) == ["retain"] and m["run"]["status"] == "running"
    finally:
        manifest_path.write_text(saved)


def test_python_api_and_reusing_the_original_outputs(trained, tmp_path):
    from unlearn import load_config, run_eval

    tmp, path, _ = trained
    cfg = load_config(path, ["eval.sets=[forget, retain]", "eval.judge=null"])
    first = run_eval(cfg, write=False)
    assert first.metrics["metrics"]["forget"]["leak_rate"]["unlearned"] is not None
    best = run_eval(cfg, model_dir=tmp / "run" / "best" / "model", original=first.original,
                    report_dir=tmp_path / "best-eval")
    assert best.original is first.original  # same prompts and settings: not generated again
    assert (tmp_path / "best-eval" / "report.html").exists()
    assert best.metrics["metrics"]["forget"]["leak_rate"]["original"] == first.metrics["metrics"]["forget"]["leak_rate"]["original"]


def test_text_passages_give_an_extraction_leak_rate(tmp_path, data_files):
    passage = "It was a bright cold day in April, and the clocks were striking thirteen. " * 3
    write_jsonl(tmp_path / "book.jsonl", [{"text": passage}, {"text": passage[10:]}])
    cfg = tiny_config(tmp_path, data_files, train={"max_steps": 1},
                      eval={"max_new_tokens": 8, "sets": ["forget"],
                            "forget": {"path": str(tmp_path / "book.jsonl"), "kind": "text",
                                       "response_field": "text", "prompt_tokens": 20, "target_chars": 40}})
    path = write_config(tmp_path / "c.yaml", cfg)
    assert cli("run", path).exit_code == 0
    r = cli("eval", path)
    assert r.exit_code == 0, r.output
    samples = [json.loads(x) for x in (tmp_path / "run" / "eval" / "samples.jsonl").read_text().splitlines()]
    # byte-level tokenizer: 20 tokens are the first 20 bytes; the target is the next 40 characters
    assert samples[0]["prompt"] == passage[:20] and samples[0]["target"] == passage[20:60]
    m = json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())
    assert "extraction_leak_rate" in m["metrics"]["forget"]


def test_the_forget_set_is_read_from_run_json(trained, tmp_path):
    """A hand-written run.json record of two trained forget examples: the forget set is those two,
    in order of first use, and metrics.json says so."""
    import hashlib

    from unlearn import load_config, run_eval
    from unlearn.data import load_source, split_examples

    tmp, path, _ = trained
    cfg = load_config(path, ["eval.sets=[forget]", "eval.judge=null"])
    train = split_examples(load_source(cfg.data.forget, "forget"), cfg.eval.split, cfg.seed)[0]
    used = [train[3], train[0]]
    digest = [hashlib.sha256((e.prompt + "\x00" + e.response).encode()).hexdigest()[:16] for e in used]
    manifest_path = tmp / "run" / "run.json"
    saved = manifest_path.read_text()
    try:
        record = {"forget": {"total": len(train), "seen": [[digest[0], 2], [digest[1], 1]]}}
        manifest_path.write_text(json.dumps({**json.loads(saved), "trained_examples": record}))
        result = run_eval(cfg, report_dir=tmp_path / "eval")
    finally:
        manifest_path.write_text(saved)
    m = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert m["sets"]["forget"] == {**m["sets"]["forget"], "n": 2, "forget_set": "trained examples",
                                   "trained_examples": 2, "training_examples": len(train)}
    assert [s["prompt"] for s in result.samples] == [e.prompt for e in (train[0], train[3])]  # in data order
