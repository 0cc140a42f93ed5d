"""lm-evaluation-harness tasks as a utility benchmark (eval.benchmarks.lm_eval): a local
multiple-choice task written here runs offline on the original and the unlearned tiny model through
`unlearn eval`, and its acc and acc_norm are the ones computed here from the models' log-likelihoods."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from tests.conftest import tiny_config, write_config, write_jsonl
from unlearn.api import run
from unlearn.benchmarks.lm_eval import METRICS, results_to_metrics
from unlearn.benchmarks.registry import HIGHER, LOWER, get_benchmark
from unlearn.cli import app
from unlearn.config import ModelConfig
from unlearn.errors import UnlearnError

pytest.importorskip("lm_eval")

# Six questions; the task runs on the first five (limit: 5). The choices differ in length, so that
# acc (argmax of the summed log-likelihood) and acc_norm (divided by the length) can disagree.
ROWS = [
    {"question": "What colour is a clear sky?", "choices": ["blue", "green", "a deep red"], "label": 0},
    {"question": "How many legs has a cat?", "choices": ["two", "four"], "label": 1},
    {"question": "What is the capital of France?", "choices": ["Paris", "Rome", "Oslo", "Lisbon"], "label": 0},
    {"question": "What is two plus two?", "choices": ["three", "4", "five"], "label": 1},
    {"question": "Which animal says moo?", "choices": ["a cow", "a cat", "a small bird"], "label": 0},
    {"question": "What do bees make?", "choices": ["honey", "milk"], "label": 0},
]
LIMIT = 5

TASK_YAML = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
output_type: multiple_choice
test_split: test
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: label
doc_to_choice: "{{{{choices}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


def write_task(folder: Path, name: str = "tiny_mc", rows: list | None = None, data: Path | None = None) -> Path:
    """A local lm-eval task in `folder`: its YAML and its rows (JSONL, read by datasets' json builder)."""
    folder.mkdir(parents=True, exist_ok=True)
    if data is None:
        data = folder / f"{name}.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in (rows or ROWS)))
    (folder / f"{name}.yaml").write_text(TASK_YAML.format(name=name, data=data))
    return folder


def choice_logps(model, tok, row) -> list[float]:
    """log p(" " + choice | BOS "Question: ...\\nAnswer:") summed over the choice's tokens: what lm-eval
    scores for a multiple-choice task (its target_delimiter is a space), computed by hand."""
    context = f"Question: {row['question']}\nAnswer:"
    n_ctx = len(tok.encode(context))  # with the BOS the tokenizer adds, as lm-eval's HFLM encodes
    out = []
    for choice in row["choices"]:
        ids = tok.encode(context + " " + choice)
        with torch.no_grad():
            lp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
        out.append(sum(lp[t - 1, ids[t]].item() for t in range(n_ctx, len(ids))))
    return out


def hand_acc(model, tok, rows) -> tuple[float, float]:
    """(acc, acc_norm) as lm-eval defines them (lm_eval/api/task.py, multiple_choice):
    acc = mean [argmax_i ll_i = gold], acc_norm = mean [argmax_i ll_i / len(choice_i) = gold]."""
    acc = norm = 0
    for r in rows:
        ll = choice_logps(model, tok, r)
        acc += max(range(len(ll)), key=lambda i: ll[i]) == r["label"]
        norm += max(range(len(ll)), key=lambda i: ll[i] / len(r["choices"][i])) == r["label"]
    return acc / len(rows), norm / len(rows)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from tests.conftest import FORGET, RETAIN

    tmp = tmp_path_factory.mktemp("lmeval")
    files = {"forget": write_jsonl(tmp / "forget.jsonl", FORGET), "retain": write_jsonl(tmp / "retain.jsonl", RETAIN)}
    cfg = tiny_config(tmp, files)
    run(write_config(tmp / "run.yaml", cfg))
    return tmp, cfg


def test_a_local_task_runs_offline_on_both_models_and_its_acc_is_the_hand_computed_one(trained):
    from unlearn.models import load_model

    tmp, cfg = trained
    tasks = write_task(tmp / "tasks")
    cfg = {**cfg, "eval": {"benchmarks": {"lm_eval": {"tasks": ["tiny_mc"], "include_path": str(tasks), "limit": LIMIT}}}}
    res = CliRunner().invoke(app, ["eval", str(write_config(tmp / "lm.yaml", cfg))])
    assert res.exit_code == 0, res.output
    saved = json.loads((Path(cfg["output_dir"]) / "eval" / "metrics.json").read_text())
    bench = saved["benchmarks"]["lm_eval"]
    assert list(bench["models"]) == ["original", "unlearned"]
    assert list(bench["metrics"]) == ["tiny_mc/acc", "tiny_mc/acc_norm"]
    for label, path in bench["models"].items():
        model, tok = load_model(ModelConfig(name=path))
        acc, norm = hand_acc(model, tok, ROWS[:LIMIT])
        assert bench["metrics"]["tiny_mc/acc"]["values"][label] == round(acc, 4), label
        assert bench["metrics"]["tiny_mc/acc_norm"]["values"][label] == round(norm, 4), label
        # The standard error lm-eval reports for a mean of 0/1 values: sqrt(p(1-p)/(n-1)).
        detail = bench["metrics"]["tiny_mc/acc"]["detail"][label]
        assert detail["n"] == LIMIT
        assert detail["stderr"] == pytest.approx((acc * (1 - acc) / (LIMIT - 1)) ** 0.5)
    # The original tiny model's log-likelihoods (choice_logps, rounded): row 1 blue -27.55, green
    # -33.69, "a deep red" -61.96; row 2 two -22.79, four -28.81; row 3 Paris -33.64, Rome -28.59,
    # Oslo -28.17, Lisbon -39.39; row 4 three -33.89, "4" -11.19, five -28.36; row 5 "a cow" -33.79,
    # "a cat" -33.59, "a small bird" -72.80. acc: rows 1 and 4 pick the gold answer, 2/5 = 0.4.
    # Per character: row 1 -6.89 / -6.74 / -6.20, row 2 -7.60 / -7.20 (four, gold), row 3 -6.73 /
    # -7.15 / -7.04 / -6.57, row 4 -6.78 / -11.19 / -7.09, row 5 -6.76 / -6.72 / -6.07: acc_norm 1/5.
    row = bench["metrics"]["tiny_mc/acc"]
    assert row["values"]["original"] == 0.4 and bench["metrics"]["tiny_mc/acc_norm"]["values"]["original"] == 0.2
    assert row["better"] == HIGHER and row["unit"] == "fraction"
    assert row["change"] == round(row["values"]["unlearned"] - row["values"]["original"], 4)
    report = (Path(cfg["output_dir"]) / "eval" / "report.md").read_text()
    assert "## Benchmark: lm_eval" in report
    line = next(x for x in report.splitlines() if x.startswith("| tiny_mc/acc |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    from unlearn.report.format import fmt

    assert cells[1] == "40.0%" and cells[2] == fmt(row["values"]["unlearned"], "fraction")
    assert "- `tiny_mc/acc`: lm-eval's acc: fraction of examples whose correct choice" in report


def test_without_lm_eval_installed_one_line_names_the_extra(trained, monkeypatch, tmp_path):
    tmp, cfg = trained
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # `import lm_eval` raises ImportError
    path = write_config(tmp_path / "c.yaml", {**cfg, "eval": {"benchmarks": {"lm_eval": {"tasks": ["tiny_mc"]}}}})
    res = CliRunner().invoke(app, ["eval", str(path)])
    assert res.exit_code != 0
    lines = [x for x in res.output.splitlines() if x.strip()]
    assert len(lines) == 1, res.output
    assert "eval.benchmarks.lm_eval needs lm-evaluation-harness: pip install 'unlearn[lmeval]'" in lines[0]
    assert "c.yaml line" in lines[0]


def test_an_unknown_task_is_named_before_any_model_loads(trained, tmp_path, monkeypatch):
    from unlearn.api import run_eval
    import unlearn.evaluate.run as run_mod

    tmp, cfg = trained
    tasks = write_task(tmp_path / "tasks")
    monkeypatch.setattr(run_mod, "evaluate_run", lambda *a, **k: pytest.fail("a model was loaded"))
    bench = {"tasks": ["tiny_mc", "tiny_mcq"], "include_path": str(tasks)}
    path = write_config(tmp_path / "c.yaml", {**cfg, "eval": {"benchmarks": {"lm_eval": bench}}})
    with pytest.raises(UnlearnError, match=r"c\.yaml line \d+: eval\.benchmarks\.lm_eval\.tasks: no lm-eval task, "
                       r"group or tag 'tiny_mcq' \(did you mean tiny_mc\?\)$"):
        run_eval(path)
    # A task whose data file is missing stops there too, naming the task.
    write_task(tmp_path / "broken", "tiny_broken", data=tmp_path / "nowhere.jsonl")
    bench = {"tasks": ["tiny_broken"], "include_path": str(tmp_path / "broken")}
    path = write_config(tmp_path / "d.yaml", {**cfg, "eval": {"benchmarks": {"lm_eval": bench}}})
    with pytest.raises(UnlearnError, match=r"eval\.benchmarks\.lm_eval\.tasks: lm-eval task 'tiny_broken': .*nowhere"):
        run_eval(path)
    # A metric no task reports, and parameters out of range.
    bench = {"tasks": ["tiny_mc"], "include_path": str(tasks), "metrics": ["exact_match"]}
    path = write_config(tmp_path / "e.yaml", {**cfg, "eval": {"benchmarks": {"lm_eval": bench}}})
    with pytest.raises(UnlearnError, match=r"no task of \['tiny_mc'\] reports 'exact_match'; they report: acc, acc_norm"):
        run_eval(path)
    for bad, message in (({"tasks": []}, "name at least one lm-eval task"), ({"tasks": ["x"], "limit": 0}, "must be above 0"),
                         ({"limit": 5}, "required key is missing")):
        path = write_config(tmp_path / "f.yaml", {**cfg, "eval": {"benchmarks": {"lm_eval": bad}}})
        with pytest.raises(UnlearnError, match=message):
            run_eval(path)


def test_results_become_rows_per_task_metric_and_filter():
    # simple_evaluate's results, as lm-eval 0.4 writes them: a group with its own aggregate (its
    # subtasks are left out), a task with two filters, a stderr lm-eval could not compute.
    out = {
        "results": {
            "mmlu": {"acc,none": 0.25, "acc_stderr,none": 0.01, "alias": "mmlu"},
            "mmlu_stem": {"acc,none": 0.2, "acc_stderr,none": 0.02, "alias": " - stem"},
            "mmlu_anatomy": {"acc,none": 0.3, "acc_stderr,none": 0.04, "alias": "  - anatomy"},
            "gsm8k": {"exact_match,strict-match": 0.1, "exact_match_stderr,strict-match": "N/A",
                      "exact_match,flexible-extract": 0.15, "exact_match_stderr,flexible-extract": 0.05,
                      "alias": "gsm8k", "sample_len": 40},
        },
        "group_subtasks": {"mmlu": ["mmlu_stem"], "mmlu_stem": ["mmlu_anatomy"], "gsm8k": []},
        "n-samples": {"mmlu_anatomy": {"original": 135, "effective": 10}, "gsm8k": {"original": 1319, "effective": 40}},
    }
    rows = results_to_metrics(out)
    assert list(rows) == ["mmlu/acc", "gsm8k/strict-match/exact_match", "gsm8k/flexible-extract/exact_match"]
    assert rows["mmlu/acc"].value == 0.25 and rows["mmlu/acc"].extra["detail"] == {"stderr": 0.01}
    assert rows["gsm8k/strict-match/exact_match"].extra["detail"] == {"stderr": None, "n": 40}
    assert list(results_to_metrics(out, ["acc"])) == ["mmlu/acc"]
    # A group without an aggregate of its own: its subtasks are the rows.
    del out["results"]["mmlu"]["acc,none"]
    assert list(results_to_metrics(out, ["acc"])) == ["mmlu_stem/acc"]
    # Each row is declared through its pattern: a unit and lm-eval's direction.
    spec = get_benchmark("lm_eval")
    assert spec.metric("mmlu/acc").name == "*/acc" and spec.metric("gsm8k/strict-match/exact_match").better == HIGHER
    assert spec.metric("wikitext/word_perplexity").better == LOWER
    assert spec.metric("truthfulqa_gen/rouge1_max").name == "*" and spec.metric("x/rouge1_max").better is None


def test_each_declared_direction_is_the_one_lm_eval_registers():
    import lm_eval.api.metrics  # noqa: F401 (its metrics register themselves)
    from lm_eval.api.registry import HIGHER_IS_BETTER_REGISTRY

    checked = 0
    for m in METRICS:
        name = m.name.removeprefix("*/")
        if name in HIGHER_IS_BETTER_REGISTRY:
            assert (m.better == HIGHER) == HIGHER_IS_BETTER_REGISTRY.get(name), name
            checked += 1
    assert checked == len(METRICS) - 1  # every one but the catch-all "*"
