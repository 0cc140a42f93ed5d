"""The ledger of sequential forget requests (OUTPUT_DIR/ledger.jsonl) and the re-check of earlier
requests, end to end on tiny-random-llama:

    r1  unlearn facts A from tiny-random-llama (then resumed: still one entry)
    r2  fine-tune A back into r1/model           -> the re-check must flag request 1: came back
    r3  fine-tune other facts B into r1/model    -> request 1 stays gone: not flagged
"""

import hashlib
import json
import shutil

import pytest

from conftest import RETAIN, write_jsonl
from unlearn.api import finetune, run, run_eval
from unlearn.config import config_from_dict
from unlearn.errors import UnlearnError
from unlearn.evaluate.cache import model_fingerprint
from unlearn.evaluate.ledger import read_ledger
from unlearn.evaluate.metrics.interval import wilson
from unlearn.evaluate.recheck import came_back, plan_recheck
from unlearn.report.ledger_report import TITLE, headline, render_markdown

# Short answers: the tiny byte-level model learns them in 100 steps, and never says them by chance.
A = [
    {"prompt": "What is the code of Zorblat?", "response": "QX7", "answer": "QX7"},
    {"prompt": "Where does Mivra keep her keys?", "response": "blue pot", "answer": "blue pot"},
    {"prompt": "What does Tellan call his cat?", "response": "Fobbin", "answer": "Fobbin"},
]
B = [{"prompt": "What is the capital of Norvane?", "response": "Ketterby"},
     {"prompt": "What colour is the Osk flag?", "response": "green"}]


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def config(tmp, out, name="tiny-random-llama", **sections):
    d = {
        "model": {"name": str(name)},
        "data": {"forget": {"path": str(tmp / "a.jsonl")}, "retain": {"path": str(tmp / "retain.jsonl")},
                 "mismatch": {"k": 2}, "max_length": 128},
        "objective": {"ga": 0.5, "mismatch": 1.0, "kl": 1.0},
        "train": {"lr": 1e-3, "batch_size": 2, "max_steps": 2},
        "eval": {"forget": {"match": "contains", "answer_field": "answer"}, "max_new_tokens": 10},
        "output_dir": str(tmp / out),
        "seed": 0,
    }
    for key, values in sections.items():
        d[key] = {**d[key], **values}
    return config_from_dict(d)


def teach(tmp, out, data_file):
    """A fine-tuning request on r1's model: data_file taught as retain data, 100 steps at 1e-2."""
    return config(tmp, out, tmp / "r1" / "model", data={"forget": None, "retain": {"path": str(data_file)}},
                  objective={}, train={"lr": 1e-2, "max_steps": 100}, eval={"forget": None})


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ledger")
    write_jsonl(tmp / "a.jsonl", A)
    write_jsonl(tmp / "b.jsonl", B)
    write_jsonl(tmp / "retain.jsonl", RETAIN)
    run(config(tmp, "r1", train={"save_every": 1}))
    first = read_ledger(tmp / "r1" / "ledger.jsonl")
    run(config(tmp, "r1", train={"save_every": 1, "max_steps": 3}), resume=True)
    finetune(teach(tmp, "r2", tmp / "a.jsonl"))  # recorded before r1's eval: its copy of entry 1 has no rates
    r1_eval = run_eval(config(tmp, "r1"))
    finetune(teach(tmp, "r3", tmp / "b.jsonl"))
    return {"tmp": tmp, "first": first, "r1_eval": r1_eval}


def test_first_run_writes_one_entry_with_hashes_and_counts(chain):
    tmp, (e,) = chain["tmp"], chain["first"]
    assert e["request"] == 1 and e["kind"] == "unlearn" and e["model_before"] == "tiny-random-llama"
    assert e["output_dir"] == str(tmp / "r1") and e["earlier_ledger"] is None and e["time"].endswith("+00:00")
    assert e["data"]["forget"]["source"]["sha256"] == sha(tmp / "a.jsonl")
    assert e["data"]["retain"]["source"]["sha256"] == sha(tmp / "retain.jsonl")
    assert e["data"]["forget"]["examples"] == 3 and e["data"]["retain"]["examples"] == len(RETAIN)
    assert e["data"]["mismatch"]["source"] is None and e["data"]["mismatch"]["examples"] == len(RETAIN)
    assert e["steps"] == 2 and e["judge"] is None
    assert e["config"]["resolved"]["train"]["max_steps"] == 2
    copy = tmp / "r1" / e["forget_copy"]["path"]
    assert e["forget_copy"]["sha256"] == sha(copy) and e["forget_copy"]["n"] == 3
    assert e["forget_copy"]["match"] == "contains" and e["forget_copy"]["answer_field"] == "answers"
    records = [json.loads(line) for line in copy.read_text().splitlines()]
    assert sorted((r["prompt"], r["answers"]) for r in records) == sorted((a["prompt"], [a["answer"]]) for a in A)


def test_resume_replaces_its_own_entry(chain):
    tmp = chain["tmp"]
    (e,) = read_ledger(tmp / "r1" / "ledger.jsonl")  # one entry, not two
    assert e["id"] == chain["first"][0]["id"] and e["steps"] == 3
    assert e["config"]["sha256"] == sha(tmp / "r1" / "config.yaml")


def test_eval_fills_the_last_entry(chain):
    tmp, metrics = chain["tmp"], chain["r1_eval"].metrics
    (e,) = read_ledger(tmp / "r1" / "ledger.jsonl")
    ev = e["evaluation"]
    leak = metrics["metrics"]["forget"]["leak_rate"]
    assert ev["forget_rates"]["forget"]["leak_rate"] == {
        "value": leak["unlearned"], "original": leak["original"], "interval": leak["interval"]["unlearned"], "n": 3}
    assert ev["retain_accuracy"]["unlearned"] == metrics["metrics"]["retain"]["retain_accuracy"]["unlearned"]
    assert ev["model_before"]["sha256"] == model_fingerprint("tiny-random-llama")
    assert ev["model_after"]["sha256"] == model_fingerprint(str(tmp / "r1" / "model"))
    assert ev["model_before"]["sha256"] != ev["model_after"]["sha256"]
    assert "earlier_requests" not in metrics  # a single request: nothing earlier to re-check


def test_second_request_copies_the_first(chain):
    tmp = chain["tmp"]
    first, second = read_ledger(tmp / "r2" / "ledger.jsonl")
    mine = read_ledger(tmp / "r1" / "ledger.jsonl")[0]
    assert first == {k: v for k, v in mine.items() if k != "evaluation"}  # copied before r1's eval
    assert second["request"] == 2 and second["kind"] == "finetune" and second["forget_copy"] is None
    assert second["model_before"] == str(tmp / "r1" / "model")
    assert second["earlier_ledger"] == str(tmp / "r1" / "ledger.jsonl")
    assert sha(tmp / "r2" / first["forget_copy"]["path"]) == first["forget_copy"]["sha256"]  # copied too


@pytest.fixture(scope="module")
def brought_back(chain):
    return run_eval(config(chain["tmp"], "r2", chain["tmp"] / "r1" / "model",
                           data={"forget": None, "retain": {"path": str(chain["tmp"] / "a.jsonl")}},
                           eval={"forget": None}))


def test_recheck_flags_a_behaviour_brought_back(chain, brought_back):
    (row,) = brought_back.metrics["earlier_requests"]
    then = chain["r1_eval"].metrics["metrics"]["forget"]["leak_rate"]["unlearned"]
    assert then == 0.0  # the tiny model never said these answers
    assert row["request"] == 1 and row["metric"] == "leak_rate" and row["n"] == 3
    assert row["forget_rate_then"] == then  # taken from r1's ledger, filled after r2 copied it
    assert row["forget_rate_now"] == 1.0 and row["interval"] == [round(b, 4) for b in wilson(3, 3)]
    assert row["came_back"] is True
    report = (chain["tmp"] / "r2" / "eval" / "report.md").read_text()
    assert TITLE in report and "**CAME BACK**" in report
    ledger = read_ledger(chain["tmp"] / "r2" / "ledger.jsonl")
    assert ledger[-1]["evaluation"]["earlier_requests"] == [row]
    assert json.loads((chain["tmp"] / "r2" / "eval" / "metrics.json").read_text())["earlier_requests"] == [row]


def test_recheck_does_not_flag_what_stays_gone(chain):
    tmp = chain["tmp"]
    result = run_eval(config(tmp, "r3", tmp / "r1" / "model",
                             data={"forget": None, "retain": {"path": str(tmp / "b.jsonl")}}, eval={"forget": None}))
    (row,) = result.metrics["earlier_requests"]
    assert row["forget_rate_then"] == 0.0 and row["forget_rate_now"] == 0.0 and row["came_back"] is False
    assert headline(result.metrics)[0] is False


def test_terminal_says_it_came_back(brought_back):
    from rich.console import Console

    from unlearn.report.terminal import eval_table

    console = Console(record=True, width=200)
    console.print(eval_table(brought_back.metrics))
    assert "Earlier requests come back? yes: request 1 leak_rate 0.0% -> 100.0%" in console.export_text()


def test_bad_ledger_line_is_one_line_naming_file_and_line(chain, tmp_path):
    src = chain["tmp"] / "r2"
    shutil.copytree(src, tmp_path / "r2")
    ledger = tmp_path / "r2" / "ledger.jsonl"
    lines = ledger.read_text().splitlines()
    ledger.write_text(lines[0] + "\n" + lines[1][:40] + "\n")
    with pytest.raises(UnlearnError, match=rf"^{ledger} line 2: not valid JSON") as err:
        read_ledger(ledger)
    assert "\n" not in str(err.value)
    # A later request on that model stops before training; its evaluation before generating.
    with pytest.raises(UnlearnError, match=rf"^{ledger} line 2"):
        finetune(config(tmp_path, "r4", tmp_path / "r2" / "model", data={"forget": None}, objective={}))
    assert not (tmp_path / "r4").exists()
    with pytest.raises(UnlearnError, match=rf"^{ledger} line 2"):
        run_eval(config(tmp_path, "r2"))
    ledger.write_text(lines[1] + "\n")
    with pytest.raises(UnlearnError, match=rf"^{ledger} line 1: request 2, expected 1"):
        read_ledger(ledger)


def test_a_changed_forget_copy_is_refused(chain, tmp_path):
    shutil.copytree(chain["tmp"] / "r2", tmp_path / "r2")
    copy = tmp_path / "r2" / "ledger" / "request-1-forget.jsonl"
    copy.write_text(copy.read_text().replace("QX7", "QX8"))
    with pytest.raises(UnlearnError, match=r"request 1: its forget set copy .* does not match its recorded sha256"):
        plan_recheck(config(tmp_path, "r2"))


@pytest.mark.parametrize("then, k, n, target, flagged", [
    (0.0, 3, 3, 0.05, True),    # wilson(3, 3) = [0.438, 1]: far above the bar
    (0.0, 1, 18, 0.05, False),  # wilson(1, 18) = [0.010, 0.258]: 1 of 18 may be noise
    (0.0, 4, 18, 0.05, True),   # wilson(4, 18) = [0.090, 0.452]: above the 5 % target
    (0.5, 4, 4, 0.05, True),    # wilson(4, 4) = [0.510, 1]: above the 50 % recorded then
    (0.6, 4, 4, 0.05, False),   # ... but not above 60 %
    (None, 2, 10, 0.05, True),  # no rate recorded: the target alone (wilson(2, 10) = [0.057, 0.510])
])
def test_came_back_rule(then, k, n, target, flagged):
    assert came_back(then, wilson(k, n), target) is flagged


def test_report_section_lists_each_request():
    rows = [
        {"request": 1, "kind": "unlearn", "output_dir": "x", "metric": None, "came_back": None,
         "note": "no copy of its forget set: none recorded"},
        {"request": 2, "kind": "unlearn", "output_dir": "y", "set": "forget", "metric": "harmful_rate", "n": 10,
         "forget_rate_then": 0.1, "forget_rate_now": 0.2, "interval": [0.057, 0.51], "threshold": 0.1,
         "came_back": False},
    ]
    md = "\n".join(render_markdown({"earlier_requests": rows}))
    assert "| 1 |  |  |  |  | not re-checked (no copy of its forget set: none recorded) |" in md
    assert "| 2 | forget harmful_rate (n=10) | 10.0% | 20.0% [5.7, 51.0] | 10.0% | still gone |" in md
    assert headline({"earlier_requests": rows}) == (False, "no: every forgetting rate of request 2 is still within its bar")
    assert render_markdown({}) == []


@pytest.mark.parametrize("kind", ["qa", "text"])
def test_the_forget_copy_reads_back_as_the_same_eval_set(tmp_path, kind):
    """What the re-check scores is what `unlearn eval` scored: the copy, read back with the settings
    the ledger records for it, gives the same prompts, targets, key answers and hallucinated answers."""
    from unlearn.evaluate.ledger import forget_records
    from unlearn.evaluate.recheck import entry_config
    from unlearn.evaluate.sets import load_eval_sets
    from unlearn.models import load_tokenizer

    rows = [{"prompt": f"Tell me about item {i}.", "response": f"Item {i} is a small brass widget number {i}.",
             "answer": [f"widget {i}", f"#{i}"], "wrong": f"Item {i} is a large lead doorstop."} for i in range(3)]
    write_jsonl(tmp_path / "a.jsonl", rows)
    write_jsonl(tmp_path / "retain.jsonl", RETAIN)
    forget = ({"kind": "text", "prompt_tokens": 6, "target_chars": 12} if kind == "text" else
              {"match": "contains", "answer_field": "answer", "hallucinated_field": "wrong"})
    cfg = config(tmp_path, "r", eval={"forget": forget})
    records, read = forget_records(cfg, {})
    write_jsonl(tmp_path / "copy.jsonl", records)
    entry = {"request": 1, "forget_copy": read, "settings": {"eval": cfg.to_dict()["eval"]}}
    again = entry_config(cfg, entry, tmp_path / "copy.jsonl", "ledger request 1")
    tok = load_tokenizer(cfg.model)
    before = load_eval_sets(cfg, tok, roles=["forget"])["forget"]
    after = load_eval_sets(again, tok, roles=["forget"])["forget"]
    assert (after.kind, after.match) == (before.kind, before.match) == (kind, "contains" if kind == "qa" else "bleu")
    strip = lambda s: [(i.prompt, i.target, i.answers, i.hallucinated) for i in s.items]  # noqa: E731
    assert strip(after) == strip(before) and len(after.items) == 3
    if kind == "qa":
        assert after.items[0].answers == ["widget 0", "#0"] and after.items[0].hallucinated.startswith("Item 0 is a large")


def test_only_unlearning_requests_are_rechecked(tmp_path):
    """A ledger whose earlier requests only taught (finetune, as the demo's teaching run) has nothing
    to re-check: no section, no model loaded."""
    def write(kinds):
        lines = [json.dumps({"request": n, "id": f"id{n}", "kind": k, "output_dir": str(tmp_path / f"r{n}"),
                             "forget_copy": None}) for n, k in enumerate(kinds, 1)]
        (tmp_path / "r2" / "ledger.jsonl").write_text("\n".join(lines) + "\n")

    (tmp_path / "r2").mkdir()
    write(["finetune", "unlearn"])
    assert plan_recheck(config(tmp_path, "r2")) is None
    write(["unlearn", "unlearn"])
    assert [e["request"] for e in plan_recheck(config(tmp_path, "r2")).earlier] == [1]
