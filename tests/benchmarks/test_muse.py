"""MUSE: the adapter reads the hub's layout (and names file, row and field when a row is wrong), each
metric by hand, agreement with open-unlearning's definitions (their formulas re-expressed here on
the same inputs), and the muse-news recipe end to end on the tiny model with `unlearn eval`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from benchmarks.muse_fixtures import FORGET_QA, PRIVLEAK, RETAIN_QA, VERBMEM, write_muse, write_split
from conftest import tiny_config
from unlearn.auditing.membership import TokenStats
from unlearn.benchmarks.muse import Muse, MuseParams, knowmem_prompt, privleak, rouge_f1
from unlearn.config import SourceConfig
from unlearn.data.sources import get_source
from unlearn.errors import UnlearnError
from unlearn.evaluate.metrics.text import rouge_l_scores


@pytest.fixture(scope="module")
def muse_dir(tmp_path_factory):
    return write_muse(tmp_path_factory.mktemp("muse-news"))


def source(path, split, **kw):
    return SourceConfig(dataset="muse", path=str(path), split=split, **kw)


# --------------------------------------------------------------------------------------------
# The adapter


def test_the_adapter_cuts_the_forget_corpus_into_passages(muse_dir):
    ex = get_source("muse")(source(muse_dir, "forget", passage_words=32, prompt_words=4), "forget")
    # The two 40-word articles joined (a paragraph each) and cut at 32 words: 32 | 8 + 24 | 16 words.
    assert [len((e.prompt + e.response).split()) for e in ex] == [32, 32, 16]
    assert ex[0].prompt == "harbor0 harbor1 harbor2 harbor3"
    assert ex[1].prompt == "harbor32 harbor33 harbor34 harbor35"
    assert ex[1].response.split("\n")[1].startswith("council0 ")  # the second article, after a break
    assert ex[2].prompt + ex[2].response == " ".join(f"council{i}" for i in range(24, 40))
    assert "raw/forget-00000-of-00001.parquet passage 2" in ex[2].where
    assert all(json.loads(json.dumps(e.meta)) == e.meta and "where" in e.meta for e in ex)  # samples.jsonl
    # retain: raw/retain1 by default for any role but forget
    retain = get_source("muse")(source(muse_dir, None, prompt_words=4), "retain")
    assert retain[0].prompt == "The city library opened"


def test_the_adapter_reads_other_configs_and_other_local_layouts(muse_dir, tmp_path):
    qa = get_source("muse")(source(muse_dir, "knowmem/retain_qa"), "retain")
    assert [(e.prompt, e.response) for e in qa] == [(r["question"], r["answer"]) for r in RETAIN_QA]
    verb = get_source("muse")(source(muse_dir, "verbmem/forget"), "forget")
    assert [(e.prompt, e.response) for e in verb] == [(r["prompt"], r["gt"]) for r in VERBMEM]
    # a config saved with datasets' save_to_disk, and a split as a JSONL file, read the same
    import datasets

    datasets.DatasetDict({"forget_qa": datasets.Dataset.from_list(FORGET_QA)}).save_to_disk(str(tmp_path / "knowmem"))
    saved = get_source("muse")(source(tmp_path, "knowmem/forget_qa"), "forget")
    assert [(e.prompt, e.response) for e in saved] == [(r["question"], r["answer"]) for r in FORGET_QA]
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "retain2.jsonl").write_text(json.dumps({"text": "one two three four five six"}) + "\n")
    ex = get_source("muse_books")(source(tmp_path, "retain2", prompt_words=2), "retain")
    assert [(e.prompt, e.response) for e in ex] == [("one two", " three four five six")]


def test_a_row_in_the_wrong_schema_is_one_line_naming_file_row_and_field(tmp_path):
    write_split(tmp_path / "verbmem", "forget", [{"prompt": "a", "gt": "b"}, {"prompt": "c", "text": "d"}])
    with pytest.raises(UnlearnError, match=r"verbmem/forget-00000-of-00001\.parquet row 1: missing field 'gt' "
                                           r"\(expected fields: prompt, gt \(MUSE verbmem/forget\)\)"):
        get_source("muse")(source(tmp_path, "verbmem/forget"), "forget")
    with pytest.raises(UnlearnError, match=r"verbmem/forget-00000-of-00001\.parquet row 1: missing field 'gt'"):
        Muse.prepare(MuseParams(path=str(tmp_path)), None)
    with pytest.raises(UnlearnError, match=r"raw: no split 'retain3' of MUSE config 'raw'.*splits there: none"):
        (tmp_path / "raw").mkdir()
        get_source("muse")(source(tmp_path, "retain3"), "retain")
    with pytest.raises(UnlearnError, match=r"data\.retain\.split: unknown MUSE config 'knowmen'"):
        get_source("muse")(source(tmp_path, "knowmen/retain_qa"), "retain")


# --------------------------------------------------------------------------------------------
# Each metric by hand


def test_rouge_l_f1_by_hand():
    # stemmed, "cats" is "cat": LCS(the cat sat on the mat, the cat sat on a mat) = the cat sat on mat = 5
    assert rouge_l_scores("The cats sat on the mat", "the cat sat on a mat", stem=True) == pytest.approx((5 / 6, 5 / 6, 5 / 6))
    # unstemmed: LCS = the sat on mat = 4 of 6 on both sides
    assert rouge_l_scores("The cats sat on the mat", "the cat sat on a mat")[2] == pytest.approx(4 / 6)
    # 3 of 5 reference words, all 3 output words: P 1, R 3/5, F1 = 2 * 0.6 / 1.6 = 0.75
    assert rouge_l_scores("A new wing", "A new wing for children.", stem=True) == pytest.approx((1.0, 0.6, 0.75))
    assert rouge_l_scores("", "x y") == (0.0, 0.0, 0.0)
    # cut at the first stop string, stripped: "In May." against "In May." is 1
    m = rouge_f1(["In May.\n\nQuestion: Who?", " Nine to two"], ["In May.", "Seven to two."], ["\n\n", "Question:"])
    assert m.per_example == pytest.approx([1.0, 2 / 3]) and m.value == pytest.approx(5 / 6)


def test_knowmem_prompt_and_privleak_by_hand():
    assert knowmem_prompt([("Q1?", "A1.")], "Q2?") == "Question: Q1?\nAnswer: A1.\n\nQuestion: Q2?\nAnswer: "
    assert knowmem_prompt([], "Q?") == "Question: Q?\nAnswer: "
    assert privleak(0.9, 0.5) == pytest.approx((0.1 - 0.5) / 0.5 * 100)  # -80: forget set plainly seen
    assert privleak(0.5, 0.5) == 0.0
    assert privleak(0.2, 0.4) == pytest.approx((0.8 - 0.6) / 0.6 * 100)  # +33.3: over-unlearned
    assert privleak(0.3, 1.0) is None  # the reference's AUC' is 0: no relative change


class FakeProbe:
    """Generation and token statistics given by hand (the model's part is tested below)."""

    OUT = {
        VERBMEM[0]["prompt"]: " the harbor would reopen in June.",  # 5 of 6 words: F1 5/6
        VERBMEM[1]["prompt"]: " nothing.",  # F1 0
        FORGET_QA[0]["question"]: " In May.\n\nQuestion: Who?",  # cut: "In May.", F1 1
        FORGET_QA[1]["question"]: " Nine to two",  # F1 2/3
        RETAIN_QA[0]["question"]: " A new wing",  # F1 0.75
        RETAIN_QA[1]["question"]: " Snow.",  # F1 0
    }
    # per-token log p of each privleak text; Min-K% (k 0.4) ranks all but the last token and
    # averages the lowest max(1, int(3 * 0.4)) = 1 of them
    LOGPROBS = {
        PRIVLEAK["forget"][0]: [-0.5, -2.0, -0.1, -5.0],  # -2.0
        PRIVLEAK["forget"][1]: [-0.2, -0.3, -0.4, -9.0],  # -0.4
        PRIVLEAK["holdout"][0]: [-3.0, -1.0, -1.0, -0.1],  # -3.0
        PRIVLEAK["holdout"][1]: [-0.1, -1.0, -0.2, 0.0],  # -1.0
    }

    def __init__(self):
        self.calls = []

    def generate(self, prompts, *, max_new_tokens=None, raw=False):
        self.calls.append((max_new_tokens, raw))
        return [next(v for k, v in self.OUT.items() if prompt == k or prompt.endswith(f"Question: {k}\nAnswer: "))
                for prompt in prompts]

    def token_stats(self, prompts, answers, *, raw=False):
        assert set(prompts) == {""} and raw  # the whole text is scored
        return [TokenStats(self.LOGPROBS[a], [0.0] * 4, [1.0] * 4) for a in answers]


def test_every_metric_by_hand(muse_dir):
    params = MuseParams(path=str(muse_dir), limit=2)  # the first 2 rows of each set
    data = Muse.prepare(params, None)
    probe = FakeProbe()
    got = Muse.measure(probe, data, params)
    assert probe.calls == [(128, True), (32, True)]  # upstream's lengths, raw text (no training template)
    assert got["verbmem_forget"].value == pytest.approx((5 / 6 + 0) / 2)
    assert got["knowmem_forget"].value == pytest.approx((1 + 2 / 3) / 2)
    assert got["knowmem_retain"].value == pytest.approx((0.75 + 0) / 2)
    # members -2.0, -0.4 against non-members -3.0, -1.0: 3 of the 4 pairs ranked right
    assert got["mia_auc"].value == pytest.approx(0.75)
    by_model = {"original": got, "unlearned": {"mia_auc": type(got["mia_auc"])(0.5, [])}}
    Muse.summarize(by_model, data, params)  # no retain model: upstream's reference AUC 0.5
    assert by_model["original"]["privleak"].value == pytest.approx((0.25 - 0.5) / 0.5 * 100)  # -50
    assert by_model["unlearned"]["privleak"].value == 0.0
    by_model = {"original": got, "retain": {"mia_auc": type(got["mia_auc"])(0.6, [])}}
    Muse.summarize(by_model, data, params)
    assert by_model["original"]["privleak"].value == pytest.approx((0.25 - 0.4) / 0.4 * 100)  # -37.5
    assert by_model["retain"]["privleak"].value == 0.0
    assert by_model["original"]["privleak"].extra["reference"] == "the retain model"


# --------------------------------------------------------------------------------------------
# Agreement with open-unlearning's definitions, re-expressed on the same inputs


def upstream_privleak(auc_model, auc_retain):
    """open-unlearning src/evals/metrics/privacy.py privleak."""
    score, ref = 1 - auc_model, 1 - auc_retain
    return (score - ref) / (ref + 1e-10) * 100


def upstream_fs_prompt(fs_q, fs_a, question):
    """src/data/utils.py preprocess_chat_instance (apply_chat_template False) with the template_args
    of configs/model/Llama-2-7b-hf.yaml: the wrapped prompt up to the answer."""
    t = {"user_start_tag": "Question: ", "user_end_tag": "\n", "asst_start_tag": "Answer: ", "asst_end_tag": "\n\n"}
    wrapped = ""
    for q, a in zip(fs_q, fs_a):
        wrapped += t["user_start_tag"] + q + t["user_end_tag"] + t["asst_start_tag"] + a + t["asst_end_tag"]
    return wrapped + t["user_start_tag"] + question + t["user_end_tag"] + t["asst_start_tag"]


def upstream_rouge_f1(gen, gt, stopwords):
    """src/evals/metrics/utils.py eval_text_similarity: cut at each stop word, strip, rouge-score's
    rougeL fmeasure with use_stemmer=True."""
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
    for word in stopwords:
        if word and word in gen:
            gen = gen.split(word)[0]
    scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)
    return scorer.score(gt.strip(), gen.strip())["rougeL"].fmeasure


def test_privleak_rouge_and_knowmem_prompts_agree_with_open_unlearning():
    for m, r in [(0.9, 0.5), (0.5, 0.5), (0.2, 0.4), (0.97, 0.62), (0.05, 0.5)]:
        assert privleak(m, r) == pytest.approx(upstream_privleak(m, r), rel=1e-8, abs=1e-6)
    stops = ["</s>", "\n\n", "\nQuestion", "Question:"]  # upstream puts the EOS text first
    pairs = [("The cats sat on the mat", "the cat sat on a mat"),
             ("Running runners ran quickly.\n\nQuestion: next", "the runner runs quick"),
             ("Generously, the generation generalized", "generous generators generalize"),
             ("In 1999, U.S. officials said: 'No.'", "U.S. officials in 1999 said no"),
             ("", "anything"), ("words", "")]
    for gen, gt in pairs:
        assert rouge_f1([gen], [gt], stops).value == pytest.approx(upstream_rouge_f1(gen, gt, stops))
    icl = [("Who is the mayor?", "Ada Moor."), ("Where?", "Norvane.")]
    assert knowmem_prompt(icl, "When?") == upstream_fs_prompt([q for q, _ in icl], [a for _, a in icl], "When?")


@pytest.fixture(scope="module")
def probe(tiny, tmp_path_factory):
    from unlearn.benchmarks.probe import ModelProbe
    from unlearn.config import config_from_dict

    tmp = tmp_path_factory.mktemp("probe")
    cfg = config_from_dict(tiny_config(tmp, {"forget": tmp / "f.jsonl", "retain": tmp / "r.jsonl"},
                                       data={"max_length": 512}))
    model, tok = tiny
    return ModelProbe(model, tok, cfg, "original", "tiny-random-llama")


def test_min_k_auc_and_generations_agree_with_open_unlearning_on_the_tiny_model(probe, muse_dir):
    from sklearn.metrics import roc_auc_score

    model, tok = probe.model, probe.tokenizer
    params = MuseParams(path=str(muse_dir), max_new_tokens=6, knowmem_max_new_tokens=5)
    data = Muse.prepare(params, None)
    got = Muse.measure(probe, data, params)

    def upstream_min_k(text, k=0.4):
        # CompletionDataset with no prefix field: BOS + text, labels from index 1 (max_length 2048);
        # tokenwise_logprobs drops the last labelled token; MinKProbAttack: -mean of the lowest k share.
        ids = tok("" + text, add_special_tokens=True)["input_ids"]
        with torch.no_grad():
            lp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
        target = lp[:-1].gather(-1, torch.tensor(ids[1:]).unsqueeze(-1)).squeeze(-1)[:-1]
        n = max(1, int(len(target) * k))
        return -float(torch.sort(target).values[:n].mean())

    forget = [upstream_min_k(t) for t in PRIVLEAK["forget"]]
    holdout = [upstream_min_k(t) for t in PRIVLEAK["holdout"]]
    # labels: forget 0, holdout 1 ("auc is 1 when the forget data is much more likely")
    expected = roc_auc_score([0] * len(forget) + [1] * len(holdout), forget + holdout)
    assert got["mia_auc"].value == pytest.approx(expected)
    assert got["mia_auc"].extra["forget_mean"] == pytest.approx(-sum(forget) / len(forget), abs=1e-5)

    # Generation as eval_text_similarity runs it: greedy from tokenizer(prompt), decoded without
    # special tokens. The same continuations (stripped), so the same ROUGE.
    def upstream_generate(prompt, n):
        ids = torch.tensor([tok(prompt, add_special_tokens=True)["input_ids"]])
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                             pad_token_id=tok.eos_token_id)
        return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)

    ours = probe.generate([p for p, _ in data.verbmem], max_new_tokens=6, raw=True)
    theirs = [upstream_generate(p, 6) for p, _ in data.verbmem]
    assert [o.strip() for o in ours] == [t.strip() for t in theirs]
    prompt = knowmem_prompt(data.icl["retain"], data.knowmem["retain"][0][0])
    assert probe.generate([prompt], max_new_tokens=5, raw=True)[0].strip() == upstream_generate(prompt, 5).strip()
    want = [upstream_rouge_f1(t, gt, []) for t, (_, gt) in zip(theirs, data.verbmem)]
    assert got["verbmem_forget"].per_example == pytest.approx(want)


def test_a_long_privleak_text_is_cut_as_upstream_cuts_it(tiny, tmp_path):
    """Upstream keeps BOS + max_length tokens of a text; data.max_length = max_length + 2 does here (the
    recipe's 2050 for upstream's 2048), and the log-probabilities are the same."""
    from unlearn.benchmarks.probe import ModelProbe
    from unlearn.config import config_from_dict

    model, tok = tiny
    cfg = config_from_dict(tiny_config(tmp_path, {"forget": tmp_path / "f", "retain": tmp_path / "r"},
                                       data={"max_length": 10 + 2}))
    text = PRIVLEAK["forget"][0]  # 57 bytes: 57 tokens of the byte tokenizer
    stats = ModelProbe(model, tok, cfg, "original", "tiny").token_stats([""], [text], raw=True)[0]
    ids = tok(text, add_special_tokens=True)["input_ids"][: 1 + 10]  # preprocess_pretraining_instance
    with torch.no_grad():
        lp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
    upstream = lp[:-1].gather(-1, torch.tensor(ids[1:]).unsqueeze(-1)).squeeze(-1).tolist()
    assert len(stats.logprobs) == 10 and stats.logprobs == pytest.approx(upstream, abs=1e-5)


# --------------------------------------------------------------------------------------------
# The recipe, end to end


def test_the_muse_news_recipe_runs_and_eval_writes_the_muse_table(muse_dir, tmp_path):
    from unlearn.cli import app

    runner = CliRunner()
    out = tmp_path / "run"
    common = ["model.name=tiny-random-llama", "model.tokenizer=null", "model.dtype=float32", "train.max_steps=2", "train.batch_size=2",
              "train.grad_accum=1", "train.gradient_checkpointing=false", "data.max_length=128",
              "data.mismatch.k=2", f"data.forget.path={muse_dir}", f"data.retain.path={muse_dir}",
              f"output_dir={out}"]
    r = runner.invoke(app, ["run", "muse-news", *common])
    assert r.exit_code == 0, r.output
    assert json.loads((out / "run.json").read_text())["steps"] == 2
    bench = [f"eval.benchmarks.muse.path={muse_dir}", "eval.benchmarks.muse.reference_model=tiny-random-llama",
             "eval.benchmarks.muse.max_new_tokens=8", "eval.benchmarks.muse.knowmem_max_new_tokens=4"]
    r = runner.invoke(app, ["eval", "muse-news", *common, *bench, "eval.limit=2", "eval.max_new_tokens=4"])
    assert r.exit_code == 0, r.output
    muse = json.loads((out / "eval" / "metrics.json").read_text())["benchmarks"]["muse"]
    assert list(muse["models"]) == ["original", "unlearned", "retain"]
    assert list(muse["metrics"]) == ["verbmem_forget", "knowmem_forget", "knowmem_retain", "privleak", "mia_auc"]
    pl, auc = muse["metrics"]["privleak"]["values"], muse["metrics"]["mia_auc"]["values"]
    # the retain model here is the original model: the same AUC, a PrivLeak of 0 for both
    # (with reference_auc's 0.5 instead, the original's would not be 0)
    assert auc["original"] == auc["retain"] != 0.5 and pl["original"] == 0.0 and pl["retain"] == 0.0
    assert pl["unlearned"] == pytest.approx(privleak(auc["unlearned"], auc["retain"]), abs=0.05)
    assert muse["metrics"]["privleak"]["better"] == "closer to 0"
    report = (out / "eval" / "report.md").read_text()
    assert "## Benchmark: muse" in report
    assert "| metric | original | unlearned | retain | change | better when |" in report
    for row in ("verbmem_forget", "knowmem_forget", "knowmem_retain", "privleak", "mia_auc"):
        assert f"| {row} |" in report, row
    assert all(v is None or 0 <= v <= 1 for v in muse["metrics"]["verbmem_forget"]["values"].values())
    assert not math.isnan(auc["unlearned"])


def test_bad_parameters_name_the_config_key(muse_dir, tmp_path):
    from unlearn.benchmarks.run import plan_benchmarks
    from unlearn.config import config_from_dict

    files = {"forget": tmp_path / "f.jsonl", "retain": tmp_path / "r.jsonl"}
    key = r"eval\.benchmarks\.muse\."
    for bad, msg in (({"attack": "nope"}, key + "attack: expected one of 'loss', 'zlib', 'min_k'"),
                     ({"reference_auc": 1.5}, key + r"reference_auc: must be an AUC in \[0, 1\], got 1\.5"),
                     ({"k": 0}, key + r"k: must be in \(0, 1\]"),
                     ({"corpus": "poems"}, key + "corpus: expected one of 'news', 'books'"),
                     ({"pth": "x"}, r"unknown key 'pth' in eval\.benchmarks\.muse")):
        cfg = config_from_dict(tiny_config(tmp_path, files, eval={"benchmarks": {"muse": {"path": str(muse_dir), **bad}}}))
        with pytest.raises(UnlearnError, match=msg):
            plan_benchmarks(cfg)
    # no path and no network: one line saying what to set
    cfg = config_from_dict(tiny_config(tmp_path, files, eval={"benchmarks": {"muse": {"corpus": "books"}}}))
    with pytest.raises(UnlearnError, match=r"^eval\.benchmarks\.muse: no path, and muse-bench/MUSE-Books "
                                           r"\(verbmem/forget\) cannot be loaded from the hub; set path"):
        plan_benchmarks(cfg)
