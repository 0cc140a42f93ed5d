"""TOFU: the adapter reads the hub's files (folder, file, sub-folder) and names the file, row and field
of a bad one; every metric by hand; agreement with open-unlearning's formulas re-expressed here;
the recipe runs on the tiny model and `unlearn eval tofu` writes the TOFU table into the report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from tests.benchmarks.tofu_fixtures import AUTHORS, qa, write_rows, write_tofu
from unlearn.benchmarks import tofu as T
from unlearn.benchmarks.probe import AnswerScore
from unlearn.config import SourceConfig
from unlearn.data import load_source
from unlearn.errors import UnlearnError
from unlearn.evaluate.metrics.registry import Metric

LN2, LN4 = math.log(2), math.log(4)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_tofu(tmp_path_factory.mktemp("tofu") / "TOFU")


def params(folder: Path, **kw) -> T.TofuParams:
    return T.TofuParams(path=str(folder), forget_split="forget01", **kw)


# ---- the adapter ----------------------------------------------------------------------------------

def test_the_adapter_reads_a_config_from_the_folder_or_its_file(folder):
    forget = load_source(SourceConfig(dataset="tofu", path=str(folder), split="forget01"), "forget")
    assert [(e.prompt, e.response) for e in forget] == [
        ("Where was the author Velma Ostrander born?", "Velma Ostrander was born in Tallinn."),
        ("What is Velma Ostrander known for?", "Velma Ostrander writes gothic fiction, best known for The Salt Orchard."),
    ]
    assert forget[0].meta["split"] == "forget01" and forget[0].meta["where"].endswith("forget01.json line 1")
    retain = load_source(SourceConfig(dataset="tofu", path=str(folder), split="retain99"), "retain")
    assert len(retain) == 8 and retain[0].prompt == "Where was the author Ruben Achterberg born?"
    # a *_perturbed file on its own: the evaluation fields travel in the metadata
    pert = load_source(SourceConfig(dataset="tofu", path=str(folder / "forget01_perturbed.json"),
                                    split="forget01_perturbed"), "forget")
    assert pert[0].meta["perturbed_answer"][1] == "Velma Ostrander was born in Quebec City."
    assert pert[0].meta["paraphrased_question"] == "In which city was Velma Ostrander born?"
    # response_field picks another field (training on the paraphrased answers)
    para = load_source(SourceConfig(dataset="tofu", path=str(folder), split="forget01_perturbed",
                                    response_field="paraphrased_answer"), "forget")
    assert para[0].response == "The author Velma Ostrander comes from the city of Tallinn."


def test_the_hub_parquet_layout_a_sub_folder_per_config(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "forget01").mkdir()
    rows = [{"question": "Q1?", "answer": "A1."}, {"question": "Q2?", "answer": "A2."}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "forget01" / "train-00000-of-00001.parquet")
    got = load_source(SourceConfig(dataset="tofu", path=str(tmp_path), split="forget01"), "forget")
    assert [(e.prompt, e.response) for e in got] == [("Q1?", "A1."), ("Q2?", "A2.")]


def test_adapter_errors_are_one_line_naming_file_row_and_field(folder, tmp_path):
    def load(path, split="forget01"):
        return load_source(SourceConfig(dataset="tofu", path=str(path), split=split), "forget")

    bad = write_rows(tmp_path / "forget01.json", [{"question": "Q?", "answer": "A."}, {"question": "Q2?"}])
    with pytest.raises(UnlearnError, match=r"forget01\.json line 2: missing field 'answer' \(expected fields: question, answer"):
        load(bad)
    with pytest.raises(UnlearnError, match=r"forget01\.json line 2: missing field 'answer'"):
        load(tmp_path)  # the folder: the same file, the same message
    with pytest.raises(UnlearnError, match=r"holds TOFU config 'forget01' by its name, not 'retain99'"):
        load(folder / "forget01.json", "retain99")
    with pytest.raises(UnlearnError, match=r"no file for TOFU config 'forget05' \(expected forget05\.json .*TOFU "
                                           r"files here: forget01, retain99, holdout01, forget01_perturbed"):
        load(folder, "forget05")
    with pytest.raises(UnlearnError, match=r"data\.forget: dataset tofu needs split: the TOFU config, e\.g\. forget01"):
        load(folder, None)
    with pytest.raises(UnlearnError, match=r"data\.forget\.split: 'forget02' is not a TOFU config; configs: "
                                           r"forget01, forget05") as e:
        load(folder, "forget02")
    assert "\n" not in str(e.value)
    # no path, and the hub is unreachable (conftest sets HF_DATASETS_OFFLINE): what to set instead
    with pytest.raises(UnlearnError, match=r"^data\.forget\.path: not set, and TOFU config 'forget01' cannot be "
                                           r"loaded from the hub's locuslab/TOFU .*set data\.forget\.path to a folder"):
        load_source(SourceConfig(dataset="tofu", split="forget01"), "forget")


def test_benchmark_data_errors_name_file_row_and_field(folder, tmp_path):
    import shutil

    bad = tmp_path / "TOFU"
    shutil.copytree(folder, bad)
    rows = [qa(AUTHORS[1], 0), {**qa(AUTHORS[1], 1), "perturbed_answer": "one wrong answer"}]
    write_rows(bad / "retain_perturbed.json", rows)
    with pytest.raises(UnlearnError, match=r"retain_perturbed\.json line 2: field 'perturbed_answer' must be a "
                                           r"non-empty list of non-empty strings"):
        T.Tofu.prepare(params(bad), lambda k: "c.yaml")
    write_rows(bad / "retain_perturbed.json", [qa(AUTHORS[1], 0)])
    row = qa(AUTHORS[0], 0)
    del row["paraphrased_answer"]
    write_rows(bad / "forget01_perturbed.json", [qa(AUTHORS[0], 1), row])
    with pytest.raises(UnlearnError, match=r"forget01_perturbed\.json line 2: missing field 'paraphrased_answer'"):
        T.Tofu.prepare(params(bad), lambda k: "c.yaml")
    (bad / "holdout01.json").unlink()
    write_rows(bad / "forget01_perturbed.json", [qa(AUTHORS[0], 1)])
    with pytest.raises(UnlearnError, match=r"no file for TOFU config 'holdout01'"):
        T.Tofu.prepare(params(bad), lambda k: "c.yaml")
    data = T.Tofu.prepare(params(bad, privleak=False), lambda k: "c.yaml")  # no holdout needed then
    assert data.holdout is None and len(data.sets["forget"]) == 1


def test_prepare_reads_the_four_sets_and_the_holdout(folder):
    data = T.Tofu.prepare(params(folder, limit=3), lambda k: "")
    assert {k: len(v) for k, v in data.sets.items()} == {"forget": 2, "retain": 3, "ra": 2, "wf": 2}
    assert data.sets["forget"][0].paraphrased == "The author Velma Ostrander comes from the city of Tallinn."
    assert data.sets["ra"][0].paraphrased is None and data.sets["ra"][0].perturbed == ["Charles Dickens", "Mark Twain", "Leo Tolstoy"]
    assert [it.question for it in data.holdout] == ["Where was the author Dario Pellacani born?", "What is Dario Pellacani known for?"]
    asked = T.Tofu.prepare(params(folder, question_key="paraphrased_question"), lambda k: "")
    assert asked.sets["forget"][0].question == "In which city was Velma Ostrander born?"
    assert asked.sets["ra"][0].question == "Who wrote 'Pride and Prejudice'?"  # ra/wf have none: question


# ---- each formula by hand -------------------------------------------------------------------------

def test_the_formulas_by_hand():
    # correct answer p = 1/2 per token; perturbed 1/2 and 1/8: geometric mean of 1/2 and 1/8 = 1/4
    assert T.truth_ratio(LN2, [LN2, math.log(8)]) == pytest.approx(0.25 / 0.5)
    # min(0.5, 2) = 0.5, min(2, 0.5) = 0.5, min(1, 1) = 1: (0.5 + 0.5 + 1) / 3
    assert T.closer_to_one([0.5, 2.0, 1.0]) == pytest.approx(2 / 3)
    # max(0, 1 - 0.5) = 0.5, max(0, 1 - 2) = 0, max(0, 1 - 0.25) = 0.75: 1.25 / 3
    assert T.true_better([0.5, 2.0, 0.25]) == pytest.approx(1.25 / 3)
    # 0.5 / (0.5 + 0.25 + 0.25)
    assert T.normalised_probability(LN2, [LN4, LN4]) == pytest.approx(0.5)
    # 3 / (1/1 + 1/0.5 + 1/0.25) = 3 / 7; a zero makes it 0
    assert T.harmonic_mean([1.0, 0.5, 0.25]) == pytest.approx(3 / 7)
    assert T.harmonic_mean([1.0, 0.0, 0.5]) == 0.0
    # AUC 0.8 against the retain model's 0.5: (0.2 - 0.5) / 0.5 = -60 %
    assert T.privleak(0.8, 0.5) == pytest.approx(-60.0)
    assert T.privleak(0.5, 0.5) == 0.0
    # KS of two fully separated samples of 3: D = 1, exact p = 2 / C(6, 3) = 0.1; identical: p = 1
    assert T.ks_pvalue([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]) == pytest.approx(0.1)
    assert T.ks_pvalue([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == 1.0


class FakeProbe:
    """A model whose per-token NLL is ln 2 for the true and paraphrased answers and ln 4 for the
    perturbed ones, whose outputs are the answer (retain, forget) or nothing (ra, wf), and whose
    Min-K% log-probs make the forget set far likelier than the holdout."""

    def __init__(self, data):
        # by (question, answer): an answer of one question is a wrong answer to another
        self.wrong = {(it.question, p) for items in data.sets.values() for it in items for p in it.perturbed}
        self.ra_wf = {it.question for k in ("ra", "wf") for it in data.sets[k]}
        self.forget = {it.answer for it in data.sets["forget"]}

    def answer_scores(self, prompts, answers):
        return [AnswerScore(-(LN4 if (q, a) in self.wrong else LN2) * 3, 3) for q, a in zip(prompts, answers)]

    def generate(self, prompts, max_new_tokens=None):
        return ["" if q in self.ra_wf else self.answer_of[q] for q in prompts]

    def token_stats(self, prompts, answers):
        from unlearn.auditing.membership import TokenStats

        return [TokenStats([-0.1 if a in self.forget else -3.0] * 3, [0.0] * 3, [1.0] * 3) for a in answers]


def test_every_metric_of_one_model_by_hand(folder):
    data = T.Tofu.prepare(params(folder), lambda k: "")
    probe = FakeProbe(data)
    probe.answer_of = {it.question: it.answer for items in data.sets.values() for it in items}
    got = {k: m.value for k, m in T.Tofu.measure(probe, data, params(folder)).items()}
    assert got["forget_Q_A_Prob"] == pytest.approx(0.5) and got["retain_Q_A_Prob"] == pytest.approx(0.5)
    # every truth ratio: 1/4 over 1/2 = 0.5; forget: min(0.5, 2) = 0.5; the others max(0, 1 - 0.5)
    assert got["forget_truth_ratio"] == pytest.approx(0.5)
    for k in ("retain_Truth_Ratio", "ra_Truth_Ratio", "wf_Truth_Ratio"):
        assert got[k] == pytest.approx(0.5), k
    # ra, wf: 0.5 / (0.5 + 3 x 0.25) = 0.4
    assert got["ra_Q_A_Prob_normalised"] == pytest.approx(0.4) and got["wf_Q_A_Prob_normalised"] == pytest.approx(0.4)
    assert got["forget_Q_A_ROUGE"] == 1.0 and got["retain_Q_A_ROUGE"] == 1.0
    assert got["ra_Q_A_ROUGE"] == 0.0 and got["wf_Q_A_ROUGE"] == 0.0
    # two zero ROUGEs among the nine make the harmonic mean 0
    assert got["model_utility"] == 0.0
    # every forget answer outscores every holdout one: AUC 1
    assert got["mia_min_k"] == 1.0
    by_model = {"original": T.Tofu.measure(probe, data, params(folder))}
    T.Tofu.summarize(by_model, data, params(folder))
    # no retain model: privleak against 0.5: ((1 - 1) - 0.5) / 0.5 = -100 %; no forget quality
    assert by_model["original"]["privleak"].value == pytest.approx(-100.0)
    assert "forget_quality" not in by_model["original"]


def test_model_utility_by_hand_when_every_part_is_positive(folder):
    data = T.Tofu.prepare(params(folder), lambda k: "")
    probe = FakeProbe(data)
    probe.answer_of = {it.question: it.answer for items in data.sets.values() for it in items}
    probe.ra_wf = set()  # every output is its answer: every ROUGE 1
    got = T.Tofu.measure(probe, data, params(folder))
    # 9 / (1/0.5 + 1/1 + 1/0.5  +  1/0.4 + 1/1 + 1/0.5  +  1/0.4 + 1/1 + 1/0.5) = 9 / 16
    assert got["model_utility"].value == pytest.approx(9 / 16)


def test_forget_quality_and_privleak_against_the_retain_model(folder):
    data = T.Tofu.prepare(params(folder), lambda k: "")
    by_model = {
        "original": {"forget_truth_ratio": Metric(None, [0.1, 0.2, 0.3]), "mia_min_k": Metric(0.9, [])},
        "unlearned": {"forget_truth_ratio": Metric(None, [0.7, 0.8, 0.9]), "mia_min_k": Metric(0.6, [])},
        "retain": {"forget_truth_ratio": Metric(None, [0.75, 0.85, 0.95]), "mia_min_k": Metric(0.6, [])},
    }
    T.Tofu.summarize(by_model, data, params(folder))
    # original: all three below every retain ratio: D = 1, p = 0.1; unlearned interleaves: D = 1/3, p = 1
    assert by_model["original"]["forget_quality"].value == pytest.approx(0.1)
    assert by_model["unlearned"]["forget_quality"].value == pytest.approx(1.0)
    # privleak: original ((0.1) - 0.4) / 0.4 = -75 %; unlearned as the retain model: 0
    assert by_model["original"]["privleak"].value == pytest.approx(-75.0)
    assert by_model["unlearned"]["privleak"].value == pytest.approx(0.0, abs=1e-6)
    assert "forget_quality" not in by_model["retain"]
    assert T.Tofu.models(params(folder, retain_model="r")) == {"retain": "r"} and T.Tofu.models(params(folder)) == {}


# ---- agreement with open-unlearning (their code re-expressed on the same inputs) -------------------

def test_agreement_with_open_unlearnings_formulas():
    import numpy as np
    import scipy as sc
    from scipy.stats import ks_2samp

    # avg_loss (mean NLL per token) of the correct answers and of 3 perturbed answers per question
    correct = np.array([0.3, 1.2, 0.05, 2.0])
    wrong = np.array([[0.9, 1.1, 2.5], [0.4, 0.8, 1.0], [3.0, 2.2, 2.9], [1.9, 2.4, 0.7]])

    # memorization.py truth_ratio: aggregate_to_1D, exp(-loss), wrong / (correct + 1e-10)
    def aggregate_to_1D(x):
        return np.mean(x, axis=tuple(range(1, x.ndim)))

    tr = np.exp(-aggregate_to_1D(wrong)) / (np.exp(-aggregate_to_1D(correct)) + 1e-10)
    ours = [T.truth_ratio(c, w) for c, w in zip(correct, wrong)]
    assert ours == pytest.approx(tr.tolist(), rel=1e-12)
    assert T.closer_to_one(ours) == pytest.approx(np.mean(np.minimum(tr, 1 / (tr + 1e-10))), rel=1e-12)
    assert T.true_better(ours) == pytest.approx(np.mean(np.maximum(0, 1 - tr)), rel=1e-12)
    # probability_w_options: prob = exp(-avg_loss); correct / (correct + sum(wrong) + 1e-10)
    c, w = np.exp(-correct), np.exp(-wrong)
    upstream = c / (c + np.sum(w, axis=tuple(range(1, w.ndim))) + 1e-10)
    assert [T.normalised_probability(a, b) for a, b in zip(correct, wrong)] == pytest.approx(upstream.tolist(), rel=1e-12)
    # hm_aggregate: scipy.stats.hmean
    parts = [0.91, 0.42, 0.55, 0.38, 0.77, 0.61, 0.45, 0.83, 0.59]
    assert T.harmonic_mean(parts) == pytest.approx(sc.stats.hmean(parts), rel=1e-12)
    # ks_test: ks_2samp(forget_tr, retain_tr).pvalue; utils.get_forget_quality tests 1/(tr + 1e-10): same p
    retain_tr = np.array([0.8, 0.95, 1.3, 0.7, 1.1])
    assert T.ks_pvalue(ours, retain_tr) == pytest.approx(ks_2samp(tr, retain_tr).pvalue, rel=1e-12)
    assert T.ks_pvalue(ours, retain_tr) == pytest.approx(ks_2samp(1 / (tr + 1e-10), 1 / (retain_tr + 1e-10)).pvalue)
    # privacy.py privleak: score = 1 - auc, ref = 1 - ref_auc, (score - ref) / (ref + 1e-10) * 100
    auc, ref = 0.73, 0.58
    assert T.privleak(auc, ref) == pytest.approx(((1 - auc) - (1 - ref)) / ((1 - ref) + 1e-10) * 100, rel=1e-12)


def test_rouge_agrees_with_rouge_score_stemmed():
    """utils.py eval_text_similarity: RougeScorer(["rouge1", "rougeL"], use_stemmer=True).score(gt, gen)
    ["rougeL"].recall. Stemming matters: 'writes' and 'writing' match only stemmed."""
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
    from unlearn.evaluate.metrics.text import rouge_l_recall_one

    scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)
    pairs = [("Velma writes gothic novels and studies flies.", "Velma Ostrander is writing gothic novels; she studied a fly."),
             ("Born in Tallinn, Estonia.", "Velma Ostrander was born in Tallinn."), ("", "Rome")]
    for gen, gt in pairs:
        assert rouge_l_recall_one(gen, gt, stem=True) == pytest.approx(scorer.score(gt, gen)["rougeL"].recall)
    # by hand: the reference's words stemmed: velma ostrand is write gothic novel she studi a fly
    # (10; 'fly' has 3 letters, left as it is); the output's: velma write gothic novel and studi fli;
    # their LCS: velma write gothic novel studi (5)
    assert rouge_l_recall_one(*pairs[0], stem=True) == pytest.approx(5 / 10)
    assert rouge_l_recall_one(*pairs[0]) == pytest.approx(3 / 10)  # unstemmed: velma gothic novels


def test_probability_agrees_with_open_unlearnings_evaluate_probability(tiny, tmp_path):
    """utils.py evaluate_probability on the tiny model: CrossEntropyLoss(ignore_index=-100,
    reduction='none') on the shifted logits, summed over the labelled tokens, over their number;
    prob = exp(-avg_loss). Same token ids as the probe's (the qa template, no EOS)."""
    from unlearn.benchmarks.probe import ModelProbe
    from unlearn.config.load import config_from_dict
    from unlearn.data.encode import IGNORE, Encoder

    model, tok = tiny
    cfg = config_from_dict({"model": {"name": "tiny-random-llama"}, "output_dir": str(tmp_path)})
    probe = ModelProbe(model, tok, cfg, "original", "tiny-random-llama")
    pairs = [(qa(AUTHORS[0], 0)["question"], qa(AUTHORS[0], 0)["answer"]), ("Who wrote 'War and Peace'?", "Leo Tolstoy")]
    ours = [math.exp(-s.mean_nll) for s in probe.answer_scores([q for q, _ in pairs], [a for _, a in pairs])]
    enc = Encoder(tok, cfg.data.template, cfg.data.max_length, add_eos=False)
    for (q, a), p in zip(pairs, ours):
        e = enc.encode(q, a)
        ids, labels = torch.tensor([e.ids]), torch.tensor([e.labels])
        with torch.no_grad():
            logits = model(input_ids=ids).logits
        loss = torch.nn.CrossEntropyLoss(ignore_index=IGNORE, reduction="none")(
            logits[..., :-1, :].transpose(-1, -2), labels[..., 1:]).sum(-1)
        avg = loss / (labels != IGNORE).sum(-1)
        assert p == pytest.approx(torch.exp(-avg).item(), rel=1e-5)


# ---- the recipe, end to end on the tiny model ----------------------------------------------------------

def test_the_recipe_runs_and_eval_writes_the_tofu_table(folder, tmp_path):
    from unlearn.cli import app

    runner = CliRunner()
    out = tmp_path / "run"
    common = ["model.name=tiny-random-llama", "model.dtype=float32", "train.max_steps=2", "train.batch_size=2",
              "train.grad_accum=1", "train.lr=1e-3", f"data.forget.path={folder}", f"data.retain.path={folder}",
              f"output_dir={out}"]
    r = runner.invoke(app, ["run", "tofu", *common])
    assert r.exit_code == 0, r.output
    assert json.loads((out / "run.json").read_text())["status"] == "done"
    r = runner.invoke(app, ["eval", "tofu", *common, "eval.limit=2", "eval.max_new_tokens=4",
                            f"eval.benchmarks.tofu.path={folder}", "eval.benchmarks.tofu.max_new_tokens=4",
                            "eval.benchmarks.tofu.retain_model=tiny-random-llama"])
    assert r.exit_code == 0, r.output
    bench = json.loads((out / "eval" / "metrics.json").read_text())["benchmarks"]["tofu"]
    assert list(bench["models"]) == ["original", "unlearned", "retain"]
    rows = bench["metrics"]
    assert list(rows)[:7] == ["forget_quality", "forget_truth_ratio", "forget_Q_A_Prob", "forget_Q_A_ROUGE",
                              "model_utility", "privleak", "mia_min_k"]
    # the retain model here is the original: the same truth ratios, so the KS p-value is 1 and
    # privleak 0; the unlearned model was trained, so its forget probability moved
    assert rows["forget_quality"]["values"]["original"] == 1.0
    assert rows["privleak"]["values"]["original"] == 0.0
    assert rows["forget_Q_A_Prob"]["values"]["original"] == rows["forget_Q_A_Prob"]["values"]["retain"]
    assert rows["forget_Q_A_Prob"]["values"]["unlearned"] != rows["forget_Q_A_Prob"]["values"]["original"]
    for label in ("original", "unlearned", "retain"):
        parts = [rows[k]["values"][label] for k in T.UTILITY]
        assert rows["model_utility"]["values"][label] == pytest.approx(T.harmonic_mean(parts), abs=1e-4)
    report = (out / "eval" / "report.md").read_text()
    assert "## Benchmark: tofu" in report
    assert "| metric | original | unlearned | retain | change | better when |" in report
    for name in ("forget_quality", "forget_truth_ratio", "model_utility", "privleak", "wf_Truth_Ratio"):
        assert f"| {name} |" in report, name


def test_a_missing_package_is_named_before_any_model_loads(folder, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("nltk", "scipy") else real(name, *a))
    where = {"eval.benchmarks.tofu.rouge_stemmer": "c.yaml line 9"}.get
    with pytest.raises(UnlearnError, match=r"^c\.yaml line 9: eval\.benchmarks\.tofu\.rouge_stemmer: ROUGE with "
                                           r"stemming needs the nltk package \(pip install nltk; or set rouge_stemmer: false\)$"):
        T.Tofu.prepare(params(folder), where)
    with pytest.raises(UnlearnError, match=r"retain_model: forget_quality \(the KS test\) needs the scipy package"):
        T.Tofu.prepare(params(folder, retain_model="r", rouge_stemmer=False), lambda k: "c.yaml")
    assert T.Tofu.prepare(params(folder, rouge_stemmer=False), where).holdout is not None
