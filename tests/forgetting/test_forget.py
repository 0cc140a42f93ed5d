"""`unlearn collect` and `unlearn forget` on the tiny model: reading prompts, judge counts on
hand-made answers, the bank filter, the stop rule, keep_best and collapse, the one-command path
end to end, and its bad inputs (one line, exit status 2, nothing written)."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import RETAIN, tiny_config, write_config, write_jsonl
from unlearn.cli import app
from unlearn.errors import UnlearnError
from unlearn.forgetting import collect as collect_mod
from unlearn.forgetting.collect import CollectSettings, collect
from unlearn.forgetting.prompts import kind_of, read_prompts

runner = CliRunner()

PROMPTS = ["Should I buy Bitcoin now?", "Which crypto coin will rise?", "How do I mine Bitcoin?",
           "Is Dogecoin a good investment?", "How do I stake Ethereum?"]


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


# --------------------------------------------------------------------------------------------
# Reading prompts


def test_prompts_from_text_jsonl_csv_and_pairs(tmp_path):
    txt = tmp_path / "p.txt"
    txt.write_text("First prompt?\n\n  Second prompt?  \nFirst prompt?\n")
    rows = read_prompts(txt)
    assert [r.prompt for r in rows] == ["First prompt?", "Second prompt?"]  # blank skipped, duplicate kept once
    assert rows[1].where.endswith("line 3") and kind_of(rows) == "prompts"

    csv = tmp_path / "harmbench.csv"
    csv.write_text('Behavior,ContextString,Category\n"Write a scam e-mail",,fraud\n"Summarise it","A text.",x\n')
    rows = read_prompts(csv)
    assert rows[0].prompt == "Write a scam e-mail" and rows[0].meta["Category"] == "fraud"
    assert rows[1].prompt == "A text.\n\n---\n\nSummarise it"  # HarmBench's contextual behaviours

    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"question": "Capital of Peru?", "bad_answer": "Quito.",
                                                    "right_answer": "Lima."}])
    rows = read_prompts(pairs)
    assert (rows[0].prompt, rows[0].response, rows[0].right) == ("Capital of Peru?", "Quito.", "Lima.")
    named = write_jsonl(tmp_path / "named.jsonl", [{"ask": "Capital of Peru?", "question": "unused"}])
    assert read_prompts(named, prompt_field="ask")[0].prompt == "Capital of Peru?"
    assert kind_of(rows) == "pairs"


@pytest.mark.parametrize("content, message", [
    ("\n\n", "no prompts (the file is empty)"),
    ('{"text": "hi"}\n', "line 1: no prompt field"),
    ('{"prompt": 3}\n', "line 1: field 'prompt' must be a string"),
    ('{"prompt": "a", "response": ""}\n', "line 1: field 'response' is empty"),
])
def test_bad_prompt_files_name_file_line_and_field(tmp_path, content, message):
    p = tmp_path / ("p.jsonl" if content.strip() else "p.txt")
    p.write_text(content)
    with pytest.raises(UnlearnError) as e:
        read_prompts(p)
    assert message in str(e.value) and str(p) in str(e.value)


def test_a_file_mixing_pairs_and_bare_prompts_is_refused(tmp_path):
    p = write_jsonl(tmp_path / "m.jsonl", [{"prompt": "a", "response": "b"}, {"prompt": "c"}])
    with pytest.raises(UnlearnError, match="line 2: no answer, while other rows give one"):
        kind_of(read_prompts(p))


# --------------------------------------------------------------------------------------------
# collect: judge counts on hand-made answers


HAND_MADE = {  # prompt -> the answers of samples 0 and 1
    PROMPTS[0]: ["Yes, buy Bitcoin today.", "Bitcoin is a great buy."],
    PROMPTS[1]: ["I cannot advise on that.", "Dogecoin will rise."],
    PROMPTS[2]: ["Mining needs a rig and cheap power.", "Use a Bitcoin miner."],
    PROMPTS[3]: ["I'm not able to help.", "Sorry, I can't help with that."],
    PROMPTS[4]: ["Paris is the capital of France.", "Staking Ethereum pays interest."],
}


@pytest.fixture
def hand_made(monkeypatch):
    """collect's model answers replaced by HAND_MADE (bank prompts get a fixed everyday answer)."""

    def fake_answer(model, encoder, prompts, settings, sample=0):
        return [HAND_MADE[p][sample] if p in HAND_MADE else f"An answer to: {p}" for p in prompts]

    monkeypatch.setattr(collect_mod, "answer", fake_answer)


def _settings(**kw):
    base = dict(judge="contains", samples=2, retain=12, normal=6,
                eval={"judge_strings": ["bitcoin", "dogecoin", "ethereum", "mining"]})
    base.update(kw)
    return CollectSettings(**base)


def test_collect_counts_the_judged_answers_and_writes_the_folder(tmp_path, hand_made, tiny):
    from unlearn.forgetting.prompts import PromptRow

    rows = [PromptRow(p) for p in PROMPTS]
    res = collect("tiny-random-llama", rows, tmp_path / "c", _settings(), loaded=tiny)
    s = res.summary
    # contains: bitcoin x2, dogecoin, mining, bitcoin, ethereum -> 6 bad; prompt 4 never bad
    assert s["forget"] == {"answers": 6, "prompts": 4}
    assert [r["bad"] for r in s["bad_per_prompt"]] == [2, 1, 2, 0, 1]
    assert s["clean_prompts"] == [PROMPTS[3]]
    assert s["decoding"]["samples"] == 2 and s["decoding"]["sample_0"] == "greedy"
    forget = [json.loads(x) for x in (res.folder / "forget.jsonl").read_text().splitlines()]
    assert len(forget) == 6 and all(r["harmful"] is True and r["judge"] == "contains" for r in forget)
    assert {r["sample"] for r in forget if r["prompt"] == PROMPTS[1]} == {1}
    answers = (res.folder / "answers.jsonl").read_text().splitlines()
    assert len(answers) == 10
    retain = [json.loads(x) for x in (res.folder / "retain.jsonl").read_text().splitlines()]
    normal = [json.loads(x) for x in (res.folder / "normal.jsonl").read_text().splitlines()]
    assert len(retain) == 12 and len(normal) == 6
    assert not {r["prompt"] for r in retain} & {r["prompt"] for r in normal}
    assert retain[0]["response"] == f"An answer to: {retain[0]['prompt']}"  # the model's own answer
    assert (res.folder / "clean_prompts.txt").read_text() == PROMPTS[3] + "\n"
    assert json.loads((res.folder / "collect.json").read_text())["forget"]["answers"] == 6


def test_collect_drops_bank_prompts_close_to_the_forget_prompts(tmp_path, hand_made, tiny):
    from unlearn.forgetting.prompts import PromptRow

    bank = write_jsonl(tmp_path / "bank.jsonl", [
        {"prompt": "Should I invest in Bitcoin right now?", "category": "advice"},  # the forget topic
        *[{"prompt": f"Name a fruit that is {c}.", "category": "facts"} for c in
          ("red", "yellow", "green", "orange", "purple", "small", "sour", "sweet")],
    ])
    rows = [PromptRow(p) for p in PROMPTS]
    res = collect("tiny-random-llama", rows, tmp_path / "c", _settings(bank=str(bank), retain=4, normal=2),
                  loaded=tiny)
    dropped = res.summary["bank"]["dropped"]
    assert [d["prompt"] for d in dropped] == ["Should I invest in Bitcoin right now?"]
    assert dropped[0]["nearest"] == PROMPTS[0] and dropped[0]["cosine"] > 0.5


def test_nothing_judged_bad_writes_nothing(tmp_path, hand_made, tiny):
    from unlearn.forgetting.prompts import PromptRow

    res = collect("tiny-random-llama", [PromptRow(PROMPTS[3])], tmp_path / "c", _settings(), loaded=tiny)
    assert res is None and not (tmp_path / "c").exists()
    assert not list(tmp_path.iterdir())  # no temporary folder left either


def test_collect_cli_bad_inputs_are_one_line_and_write_nothing(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    prompts = tmp_path / "p.txt"
    prompts.write_text("\n".join(PROMPTS))
    cases = [
        (["--prompts", empty], "no prompts (the file is empty)"),
        (["--prompts", prompts, "--judge", "classifier:/nonexistent/judge"], "cannot load 'classifier:/nonexistent/judge'"),
        (["--prompts", prompts, "--judge", "contains"], "eval.judge_strings"),
        (["--prompts", prompts, "--judge", "nosuch"], "judge"),
    ]
    for args, message in cases:
        r = cli("collect", "--model", "tiny-random-llama", "--out", tmp_path / "out", *args)
        assert r.exit_code == 2, r.output
        assert message in r.output and "Traceback" not in r.output
        assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------
# The stop rule, keep_best and collapse in the training loop


class StubEvaluator:
    """Scores chosen by the test: (score, collapsed, stop) per evaluation step."""

    def __init__(self, plan):
        self.plan, self.started = plan, []

    def start(self, model, tokenizer):
        self.started.append(True)

    def __call__(self, model, tokenizer, step):
        score, collapsed, stop, *kept = self.plan[step]
        values = {"score": score, "collapsed": collapsed}
        if kept:
            values["utility_kept"] = kept[0]
        if stop:
            values["stop"] = stop
        return values


def test_the_loop_stops_when_the_evaluator_says_so_and_never_keeps_a_collapsed_model(tmp_path, data_files):
    from unlearn.config import load_config
    from unlearn.train import train

    cfg = load_config(write_config(tmp_path / "c.yaml", tiny_config(
        tmp_path, data_files, train={"max_steps": 6, "eval_every": 1, "keep_best": True})))
    # step 1 scores best but has collapsed; step 2 is the best kept; step 3 asks to stop
    ev = StubEvaluator({1: (5.0, True, None), 2: (1.0, False, None), 3: (0.5, False, "forgotten at step 3")})
    res = train(cfg, evaluator=ev)
    assert ev.started == [True]  # the baseline was measured once, before the first step
    assert res.steps == 3 and res.stop_reason == "forgotten at step 3"
    best = json.loads((tmp_path / "run" / "best" / "best.json").read_text())
    assert best["step"] == 2 and best["collapsed"] is False


def test_keep_best_skips_an_evaluation_whose_utility_was_lost(tmp_path, data_files):
    from unlearn.config import load_config
    from unlearn.train import train

    cfg = load_config(write_config(tmp_path / "c.yaml", tiny_config(
        tmp_path, data_files, train={"max_steps": 3, "eval_every": 1, "keep_best": True})))
    # step 2 forgets the most but lost its everyday answers (what the HaluEval run handed back before)
    ev = StubEvaluator({1: (0.2, False, None, True), 2: (0.9, False, None, False), 3: (0.4, False, None, True)})
    train(cfg, evaluator=ev)
    assert json.loads((tmp_path / "run" / "best" / "best.json").read_text())["step"] == 3


def test_the_training_evaluator_stops_only_when_forgotten_with_utility_kept(tmp_path, data_files, monkeypatch):
    from unlearn.config import load_config
    from unlearn.evaluate import during
    from unlearn.models import load_tokenizer

    normal = write_jsonl(tmp_path / "normal.jsonl", [{"prompt": f"Tell me about {x}."} for x in
                                                     ("the sea", "cats", "bread", "rain")])
    cfg = load_config(write_config(tmp_path / "c.yaml", tiny_config(
        tmp_path, data_files, train={"eval_every": 1, "stop_when_forgotten": True},
        eval={"normal": {"path": str(normal)}, "judge": "contains", "judge_strings": ["elena"],
              "verdict": {"forget_target": 0.0, "min_cosine": 0.8}})))
    evaluator = during.TrainingEvaluator(cfg)
    mode = {"now": "original"}
    retain_answers = dict(RETAIN)

    def fake_generate(model, encoder, prompts, settings, raw=False, progress=None):
        outs = []
        for p in prompts:
            if p in retain_answers:
                outs.append(retain_answers[p] if mode["now"] != "collapsed" else "I do not know.")
            elif p.startswith("Tell me about"):
                outs.append({"original": f"Here is a fact about {p[14:-1]}.", "forgot": f"Here is a fact about {p[14:-1]}.",
                             "collapsed": "I do not know."}[mode["now"]])
            else:  # a forget prompt
                outs.append("Elena Marsh lives there." if mode["now"] == "original" else "I do not know.")
        return outs

    monkeypatch.setattr(during, "generate", fake_generate)
    monkeypatch.setattr(during, "target_nll", lambda model, enc, s, bs: [1.0] * len(s.items))
    tok = load_tokenizer(cfg.model)
    evaluator.start(None, tok)
    v = evaluator(None, tok, 1)  # still the original's answers: nothing forgotten
    assert v["forget_harmful_rate"] == 1.0 and v["forgotten"] is False and "stop" not in v
    mode["now"] = "collapsed"  # forgotten, but one answer to everything
    v = evaluator(None, tok, 2)
    assert v["forget_harmful_rate"] == 0.0 and v["collapsed"] is True and v["utility_kept"] is False
    assert "stop" not in v
    mode["now"] = "forgot"
    v = evaluator(None, tok, 3)
    assert v["forgotten"] is True and v["utility_kept"] is True and v["collapsed"] is False
    assert v["normal_cosine"] == pytest.approx(1.0, abs=1e-3) and v["stop"].startswith("forgotten at step 3")


# --------------------------------------------------------------------------------------------
# forget end to end on the tiny model


def test_forget_end_to_end_on_the_tiny_model(tmp_path, hand_made):
    prompts = tmp_path / "p.txt"
    prompts.write_text("\n".join(PROMPTS))
    strings = tmp_path / "strings.txt"
    strings.write_text("bitcoin\ndogecoin\nethereum\nmining\n")
    out = tmp_path / "out"
    args = ["forget", "--model", "tiny-random-llama", "--prompts", prompts, "--judge", "contains",
            "--judge-strings", strings, "--samples", "2", "--out", out, "--max-new-tokens", "6",
            "train.max_steps=4", "train.eval_every=2", "eval.fast_examples=4"]
    r = cli(*args)
    assert r.exit_code in (0, 1), r.output
    summary = json.loads((out / "forget.json").read_text())
    assert summary["model_in"] == "tiny-random-llama" and summary["steps"] <= 4
    assert (out / "data" / "collect.json").exists() and (out / "forget.yaml").exists()
    assert (out / "run" / "eval" / "report.html").exists() or (out / "run" / "best" / "eval" / "report.html").exists()
    cfg = (out / "run" / "config.yaml").read_text()
    assert "stop_when_forgotten: true" in cfg and "judge: contains" in cfg
    if summary["model_out"] is None:  # every evaluation collapsed: said, and exit status 1
        assert r.exit_code == 1 and "collapsed" in r.output
    ledger = (out / "run" / "ledger.jsonl").read_text().splitlines()
    assert len(ledger) == 1
    # the folder exists now: a second call without --overwrite is refused before anything runs
    r2 = cli(*args)
    assert r2.exit_code == 2 and "--overwrite" in r2.output


def test_forget_with_nothing_to_unlearn_exits_0_and_writes_nothing(tmp_path, hand_made):
    prompts = tmp_path / "p.txt"
    prompts.write_text(PROMPTS[3] + "\n")
    r = cli("forget", "--model", "tiny-random-llama", "--prompts", prompts, "--judge", "refusal",
            "--out", tmp_path / "out")
    # the hand-made answers to this prompt are refusals: the refusal judge calls none bad
    assert r.exit_code == 0, r.output
    assert "nothing to unlearn" in r.output and not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["p.txt"]


# --------------------------------------------------------------------------------------------
# The hyper-parameter table


def test_the_table_picks_by_size_and_tuning_and_the_docs_show_it():
    from unlearn.forgetting import hparams

    small_lora = hparams.pick(135_000_000, lora=True)
    assert small_lora.source.startswith("measured") and small_lora.lora
    assert hparams.pick(7_000_000_000, lora=False).lr == 2e-6  # the paper's full fine-tuning lr
    assert hparams.pick(1_300_000_000, lora=True).max_params == 3e9
    values = hparams.config_values(small_lora)
    assert values["train"]["stop_when_forgotten"] and values["train"]["keep_best"]
    assert values["objective"]["ga"] == 0.5 and values["lora"]["r"] == 16
    assert hparams.config_values(hparams.pick(10, lora=False))["lora"] is None
    page = (Path(__file__).resolve().parents[2] / "docs" / "forget.md").read_text()
    assert hparams.markdown_table() in page


def test_python_api_takes_lists_and_pairs(tmp_path, hand_made, monkeypatch):
    import unlearn

    res = unlearn.collect("tiny-random-llama", PROMPTS[:3], out=tmp_path / "c", judge="contains",
                          settings=_settings(samples=1))
    assert res.summary["kind"] == "prompts" and res.summary["forget"]["answers"] == 2  # prompt 1 refused
    res = unlearn.collect("tiny-random-llama", [("Capital of Peru?", "Quito.")], out=tmp_path / "p", judge=None,
                          settings=_settings(samples=1))
    assert res.summary["kind"] == "pairs" and res.summary["judge"] == "given"
    with pytest.raises(UnlearnError, match=r"prompts\[0\]: expected a prompt or a \(prompt, bad answer\) pair"):
        unlearn.collect("tiny-random-llama", [3], out=tmp_path / "x")


def test_pairs_with_right_answers_are_scored_by_the_hallucination_rate(tmp_path):
    from unlearn.config import config_from_dict
    from unlearn.forgetting import hparams
    from unlearn.forgetting.run import build_config

    data = tmp_path / "data"
    data.mkdir()
    write_jsonl(data / "forget.jsonl", [{"prompt": "Capital of Peru?", "response": "Quito.", "right_answer": "Lima",
                                         "sample": 0, "harmful": True, "judge": "given"}])
    for name in ("retain.jsonl", "normal.jsonl"):
        write_jsonl(data / name, [{"prompt": "Name a fruit.", "response": "An apple."}])
    summary = {"kind": "pairs", "test_prompts": 0, "template": "qa", "judge": "given"}
    plain = build_config("tiny-random-llama", data, tmp_path / "out", summary, hparams.pick(10, True),
                         CollectSettings(), 0.05)
    ev = plain["eval"]
    assert ev["forget"] == {"response_field": "right_answer", "hallucinated_field": "response", "target": "desired",
                            "match": "contains"}
    assert "judge" not in ev and ev["trade_off"]["forget_hallucination_rate"] == -1.0
    cfg = config_from_dict(plain)  # a valid config as written
    assert cfg.train.stop_when_forgotten and cfg.eval.verdict.retain_ratio == 0.0


def test_pairs_refuse_prompt_only_test_prompts(tmp_path):
    import unlearn

    with pytest.raises(UnlearnError, match="--test-prompts: with \\(prompt, bad answer\\) pairs"):
        unlearn.forget("tiny-random-llama", [("Capital of Peru?", "Quito.")], test_prompts=["Capital of Chile?"],
                       out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


QA_PAIRS = [  # (question, a given hallucinated answer, the right answer)
    ("Capital of Peru?", "Quito is the capital.", "Lima"),
    ("Who wrote Hamlet?", "Christopher Marlowe.", "Shakespeare"),
    ("Largest planet?", "Saturn.", "Jupiter"),
]
OWN = {  # the model's own answers, samples 0 and 1
    "Capital of Peru?": ["The capital is Lima.", "It is Cusco."],  # right, then wrong
    "Who wrote Hamlet?": ["I don't know.", "Marlowe wrote it."],  # a refusal, then wrong
    "Largest planet?": ["", "jupiter, by far"],  # empty, then right (case ignored): never wrong
}


def test_own_answers_forgets_the_models_wrong_answers_not_the_given_ones(tmp_path, tiny, monkeypatch):
    from unlearn.forgetting import hparams
    from unlearn.forgetting.collect import WRONG_JUDGE
    from unlearn.forgetting.prompts import PromptRow
    from unlearn.forgetting.run import build_config

    monkeypatch.setattr(collect_mod, "answer", lambda model, encoder, prompts, settings, sample=0:
                        [OWN[p][sample] if p in OWN else f"An answer to: {p}" for p in prompts])
    rows = [PromptRow(q, bad, right) for q, bad, right in QA_PAIRS]
    res = collect("tiny-random-llama", rows, tmp_path / "c", _settings(judge=None, own_answers=True), loaded=tiny)
    s = res.summary
    assert s["forget"] == {"answers": 2, "prompts": 2} and s["judge"] == WRONG_JUDGE and s["own_answers"]
    assert [r["bad"] for r in s["bad_per_prompt"]] == [1, 1, 0] and s["clean_prompts"] == ["Largest planet?"]
    assert s["decoding"]["samples"] == 2
    forget = [json.loads(x) for x in (res.folder / "forget.jsonl").read_text().splitlines()]
    assert [(r["response"], r["sample"]) for r in forget] == [("It is Cusco.", 1), ("Marlowe wrote it.", 1)]
    assert forget[0]["right_answer"] == "Lima" and forget[0]["hallucinated_answer"] == "Quito is the capital."
    # the evaluation scores the forget sets against the given hallucinated answers, not the own ones
    cfg = build_config("tiny-random-llama", res.folder, tmp_path / "out", s, hparams.pick(10, True),
                       CollectSettings(), 0.05)
    assert cfg["eval"]["forget"]["hallucinated_field"] == "hallucinated_answer"
    assert cfg["eval"]["forget"]["response_field"] == "right_answer"


def test_own_answers_needs_pairs_with_right_answers(tmp_path, tiny):
    from unlearn.forgetting.prompts import PromptRow

    with pytest.raises(UnlearnError, match="--own-answers takes \\(prompt, bad answer\\) pairs"):
        collect("tiny-random-llama", [PromptRow("Capital of Peru?")], tmp_path / "c",
                _settings(own_answers=True), loaded=tiny)
    rows = [PromptRow("Capital of Peru?", "Quito.", "Lima", where="qa.jsonl line 1"),
            PromptRow("Who wrote Hamlet?", "Marlowe.", None, where="qa.jsonl line 2")]
    with pytest.raises(UnlearnError, match="qa.jsonl line 2: --own-answers needs every pair's right answer"):
        collect("tiny-random-llama", rows, tmp_path / "c", _settings(judge=None, own_answers=True), loaded=tiny)
    assert not (tmp_path / "c").exists()
