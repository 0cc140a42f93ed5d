"""The benchmark framework: a benchmark registered from a plugin runs on the original, the unlearned
and a reference model, its summary across models is added, and its table goes into the report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from tests.conftest import tiny_config, write_config, write_jsonl
from unlearn.api import run, run_eval
from unlearn.errors import UnlearnError

PLUGIN = '''
from dataclasses import dataclass
from unlearn.benchmarks.registry import BenchMetric, register_benchmark, HIGHER, LOWER
from unlearn.config import check, setting
from unlearn.data.records import read_records
from unlearn.errors import UnlearnError
from unlearn.evaluate.metrics.registry import Metric, mean

@dataclass
class ToyParams:
    path: str = setting("", help="JSONL of question/answer")
    reference: str = setting("", help="a reference model")
    def __post_init__(self):
        check(bool(self.path), "path", "is required")

@register_benchmark("toy", params=ToyParams, description="answer log-likelihood.", source="a test",
                    metrics=(BenchMetric("logp", "nats", LOWER, "mean log p(answer)"),
                             BenchMetric("gap", "nats", HIGHER, "reference logp - this model's")))
class Toy:
    @staticmethod
    def prepare(params, where):
        rows = []
        for loc, rec in read_records(params.path):
            if "answer" not in rec:
                raise UnlearnError(f"{params.path} {loc}: missing field 'answer'")
            rows.append((rec["question"], rec["answer"]))
        return rows

    @staticmethod
    def measure(probe, data, params):
        s = probe.answer_scores([q for q, _ in data], [a for _, a in data])
        vals = [x.logp for x in s]
        return {"logp": Metric(mean(vals), vals)}

    @staticmethod
    def models(params):
        return {"reference": params.reference} if params.reference else {}

    @staticmethod
    def summarize(by_model, data, params):
        if "reference" in by_model:
            ref = by_model["reference"]["logp"].value
            for label in ("original", "unlearned"):
                by_model[label]["gap"] = Metric(ref - by_model[label]["logp"].value, [])
'''

QA = [{"question": "What is the capital of Norvane?", "answer": "Ketterby"},
      {"question": "Who wrote the Vell letters?", "answer": "Ada Moor"}]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from tests.conftest import FORGET, RETAIN

    tmp = tmp_path_factory.mktemp("bench")
    files = {"forget": write_jsonl(tmp / "forget.jsonl", FORGET), "retain": write_jsonl(tmp / "retain.jsonl", RETAIN)}
    cfg = tiny_config(tmp, files)
    run(write_config(tmp / "run.yaml", cfg))
    return tmp, files, cfg


def test_a_plugin_benchmark_runs_on_every_model_and_reaches_the_report(trained, plugin_module):
    tmp, files, cfg = trained
    mod = plugin_module("toy_bench", PLUGIN)
    qa = write_jsonl(tmp / "qa.jsonl", QA)
    cfg = {**cfg, "imports": [mod],
           "eval": {"benchmarks": {"toy": {"path": str(qa), "reference": "tiny-random-llama"}}}}
    result = run_eval(write_config(tmp / "c.yaml", cfg))
    bench = result.metrics["benchmarks"]["toy"]
    assert list(bench["models"]) == ["original", "unlearned", "reference"]
    row = bench["metrics"]["logp"]
    # The original and the reference are the same model: the same log-likelihood, and a gap of 0.
    assert row["values"]["original"] == row["values"]["reference"]
    assert bench["metrics"]["gap"]["values"]["original"] == 0.0
    assert bench["metrics"]["gap"]["values"]["reference"] is None
    # The original's value is log p(answer | prompt) under the template, computed here by hand.
    from unlearn.config import ModelConfig
    from unlearn.data.encode import Encoder
    from unlearn.models import load_model

    model, tok = load_model(ModelConfig(name="tiny-random-llama"))
    enc = Encoder(tok, "qa", 96, add_eos=False)
    total = 0.0
    for r in QA:
        e = enc.encode(r["question"], r["answer"])
        with torch.no_grad():
            logits = model(torch.tensor([e.ids])).logits[0].float()
        lp = torch.log_softmax(logits, -1)
        total += sum(lp[t - 1, e.ids[t]].item() for t in range(e.n_prompt, len(e.ids)))
    assert math.isclose(row["values"]["original"], round(total / len(QA), 4), abs_tol=2e-4)
    assert row["change"] == round(row["values"]["unlearned"] - row["values"]["original"], 4)
    report = (Path(cfg["output_dir"]) / "eval" / "report.md").read_text()
    assert "## Benchmark: toy" in report and "| logp |" in report
    assert "Benchmark: toy" in (Path(cfg["output_dir"]) / "eval" / "report.html").read_text()
    saved = json.loads((Path(cfg["output_dir"]) / "eval" / "metrics.json").read_text())
    assert saved["benchmarks"]["toy"]["metrics"]["logp"]["better"] == "lower"


def test_an_unknown_benchmark_names_the_config_line(trained, tmp_path):
    tmp, files, cfg = trained
    path = write_config(tmp_path / "c.yaml", {**cfg, "eval": {"benchmarks": {"nosuch": {}}}})
    with pytest.raises(UnlearnError, match=r"c\.yaml line \d+: eval\.benchmarks\.nosuch: unknown benchmark 'nosuch'"):
        run_eval(path)


def test_a_bad_data_file_stops_before_any_model_loads(trained, tmp_path, plugin_module, monkeypatch):
    tmp, files, cfg = trained
    mod = plugin_module("toy_bench2", PLUGIN.replace('"toy"', '"toy2"'))
    bad = write_jsonl(tmp_path / "qa.jsonl", [{"question": "q"}])
    path = write_config(tmp_path / "c.yaml", {**cfg, "imports": [mod], "eval": {"benchmarks": {"toy2": {"path": str(bad)}}}})
    import unlearn.evaluate.run as run_mod

    monkeypatch.setattr(run_mod, "evaluate_run", lambda *a, **k: pytest.fail("a model was loaded"))
    with pytest.raises(UnlearnError, match=r"qa\.jsonl line 1: missing field 'answer'"):
        run_eval(path)
    unknown = write_config(tmp_path / "d.yaml", {**cfg, "imports": [mod], "eval": {"benchmarks": {"toy2": {"pth": "x"}}}})
    with pytest.raises(UnlearnError, match=r"unknown key 'pth' in eval\.benchmarks\.toy2"):
        run_eval(unknown)


NAMED_PLUGIN = '''
from dataclasses import dataclass
from unlearn.benchmarks.registry import BenchMetric, register_benchmark, HIGHER
from unlearn.evaluate.metrics.registry import Metric

@dataclass
class P:
    pass

@register_benchmark("named", params=P, description="rows named at run time.", source="a test",
                    metrics=(BenchMetric("count", "score", None, "how many"),
                             BenchMetric("*/hits", "fraction", HIGHER, "hits of a task named at run time")))
class Named:
    @staticmethod
    def prepare(params, where):
        return None

    @staticmethod
    def measure(probe, data, params):
        hits = 0.25 if probe.label == "original" else 0.75
        return {"b/hits": Metric(hits, [], {"detail": {"n": 4, "label": probe.label}}),
                "undeclared": Metric(1.0, []), "a/hits": Metric(0.5, []), "count": Metric(2.0, [])}
'''


def test_metrics_named_at_run_time_are_declared_by_a_pattern_and_keep_their_detail(trained, plugin_module, tmp_path):
    from unlearn.benchmarks.registry import get_benchmark

    tmp, files, cfg = trained
    mod = plugin_module("named_bench", NAMED_PLUGIN)
    result = run_eval(write_config(tmp_path / "c.yaml", {**cfg, "imports": [mod], "eval": {"benchmarks": {"named": {}}}}))
    bench = result.metrics["benchmarks"]["named"]
    # Declared names first, in declared order; then the pattern's, in the order measured; a metric
    # the benchmark does not declare is not shown.
    assert list(bench["metrics"]) == ["count", "b/hits", "a/hits"]
    row = bench["metrics"]["b/hits"]
    assert row["unit"] == "fraction" and row["better"] == "higher" and row["description"] == "hits of a task named at run time"
    assert row["values"] == {"original": 0.25, "unlearned": 0.75} and row["change"] == 0.5 and row["improved"] is True
    assert row["detail"] == {"original": {"n": 4, "label": "original"}, "unlearned": {"n": 4, "label": "unlearned"}}
    assert "detail" not in bench["metrics"]["a/hits"]
    spec = get_benchmark("named")
    assert spec.metric("count").name == "count" and spec.metric("x/y/hits").name == "*/hits"
    with pytest.raises(KeyError, match="declares no metric 'hits'"):
        spec.metric("hits")  # "*/hits" needs a task before the slash
