"""`unlearn audit` on the command line: bad input is one line and exit status 2 with nothing written;
a good run writes OUTPUT_DIR/audit whole, lists its attacks, and extends an existing eval report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import tiny_config, write_config
from unlearn.cli import app

runner = CliRunner()


def run_cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(result, *fragments: str) -> str:
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip() and not ln.startswith("audit: ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for frag in fragments:
        assert frag in lines[0], (frag, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished tiny run: (folder, config dict)."""
    from conftest import FORGET, RETAIN, write_jsonl
    from unlearn.api import run

    tmp = tmp_path_factory.mktemp("audit-cli")
    files = {"forget": write_jsonl(tmp / "forget.jsonl", FORGET), "retain": write_jsonl(tmp / "retain.jsonl", RETAIN)}
    cfg = tiny_config(tmp, files, eval={"max_new_tokens": 4}, audit={"relearn_steps": 1, "retain_limit": 2})
    run(write_config(tmp / "cfg.yaml", cfg))
    return tmp, cfg


def test_unknown_attack_names_the_key_and_the_attacks(trained, tmp_path):
    tmp, cfg = trained
    cfg = {**cfg, "audit": {"attacks": ["quantize", "telepathy"]}}
    path = write_config(tmp_path / "cfg.yaml", cfg)
    line = one_line_error(run_cli("audit", path), "cfg.yaml line", "audit.attacks", "'telepathy'", "relearn")
    assert "quantize" in line
    assert not (tmp / "run" / "audit").exists()


def test_unknown_rewrite_names_the_key(trained, tmp_path):
    tmp, cfg = trained
    path = write_config(tmp_path / "cfg.yaml", {**cfg, "audit": {"jailbreaks": ["role_play", "magic_words"]}})
    one_line_error(run_cli("audit", path), "audit.jailbreaks", "'magic_words'", "few_shot")
    assert not (tmp / "run" / "audit").exists()


def test_no_forget_set(trained, tmp_path):
    tmp, cfg = trained
    path = write_config(tmp_path / "cfg.yaml", {**cfg, "eval": {**cfg["eval"], "sets": ["retain"]}})
    one_line_error(run_cli("audit", path), "needs a forget set")
    assert not (tmp / "run" / "audit").exists()


def test_a_model_that_cannot_be_quantised_stops_before_anything_runs(trained, tmp_path, monkeypatch):
    """A model without Linear layers in its blocks (GPT-2's are Conv1D): one line, nothing written."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from unlearn.auditing import run as audit_run

    tmp, cfg = trained
    calls = []
    monkeypatch.setattr(audit_run.AuditContext, "measure", lambda *a, **k: calls.append(a) or [])
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=300, n_positions=128, n_embd=16, n_layer=1, n_head=2))
    gpt2.save_pretrained(tmp_path / "gpt2")
    path = write_config(tmp_path / "cfg.yaml", {**cfg, "audit": {"attacks": ["template", "quantize"]}})
    one_line_error(run_cli("audit", path, "--model", tmp_path / "gpt2"), "quantize", "GPT2LMHeadModel",
                   "cannot be quantised")
    assert calls == []  # nothing generated
    assert not (tmp / "run" / "audit").exists()


def test_paraphrase_file_with_a_missing_field(trained, tmp_path):
    tmp, cfg = trained
    bad = tmp_path / "para.jsonl"
    bad.write_text(json.dumps({"prompt": "Where does Elena Marsh live now?"}) + "\n")
    path = write_config(tmp_path / "cfg.yaml", {**cfg, "audit": {"paraphrases": {"path": str(bad)}}})
    one_line_error(run_cli("audit", path), "para.jsonl line 1", "'response'")
    assert not (tmp / "run" / "audit").exists()


def test_list_names_every_attack_and_rewrite():
    from unlearn.auditing.registry import available_attacks
    from unlearn.auditing.rewrites import rewrites

    result = runner.invoke(app, ["audit", "--list"], terminal_width=300)
    assert result.exit_code == 0, result.output
    for name in [*available_attacks(), *rewrites()]:
        assert name in result.output


def test_audit_writes_its_folder_and_extends_the_eval_report(trained):
    tmp, cfg = trained
    path = tmp / "cfg.yaml"
    assert run_cli("eval", path).exit_code == 0
    result = run_cli("audit", path, "audit.attacks=[template,quantize,membership]", "audit.quant_bits=[4]")
    assert result.exit_code == 0, result.output
    folder = tmp / "run" / "audit"
    assert sorted(p.name for p in folder.iterdir()) == ["audit.json", "report.html", "report.md"]
    data = json.loads((folder / "audit.json").read_text())
    assert [r["variant"] for r in data["attacks"]] == ["template:chat", "4-bit"]
    assert data["skipped"] == {"membership": "no non-member data: set audit.holdout or give a forget_test set with responses"}
    assert data["headline"] and data["headline"][0]["metric"] == "leak_rate"
    for name in ("report.md", "report.html"):
        assert "Is it really gone?" in (tmp / "run" / "eval" / name).read_text()
    assert "Is it really gone?" in (folder / "report.html").read_text()
    assert not [p for p in (tmp / "run").iterdir() if p.name.startswith(".")]  # no temp folder left


def test_a_second_audit_generates_nothing_and_changed_decoding_generates_again(trained, monkeypatch, tmp_path):
    """Every generation of the audit goes through the output cache, keyed by the model's content,
    the attack, the rendered prompts and the decoding: the same audit again is read back (same
    numbers, no generate call); another max_new_tokens is a miss."""
    from unlearn.api import audit
    from unlearn.auditing import context

    tmp, _ = trained
    monkeypatch.setenv("UNLEARN_OUTPUT_CACHE", str(tmp_path / "outputs"))  # empty: earlier tests' entries don't count
    calls = []
    real = context.generate
    monkeypatch.setattr(context, "generate", lambda *a, **k: calls.append(len(a[2])) or real(*a, **k))
    args = ["audit.attacks=[template,quantize,relearn]", "audit.quant_bits=[4]"]
    first = audit(tmp / "cfg.yaml", args, write=False)
    n_first = len(calls)
    assert n_first > 0
    again = audit(tmp / "cfg.yaml", args, write=False)
    assert len(calls) == n_first  # nothing generated
    def timeless(rows):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]

    assert timeless(again["attacks"]) == timeless(first["attacks"]) and again["baseline"] == first["baseline"]
    audit(tmp / "cfg.yaml", args + ["eval.max_new_tokens=3"], write=False)
    assert len(calls) == 2 * n_first
    audit(tmp / "cfg.yaml", args + ["eval.cache=false"], write=False)
    assert len(calls) == 3 * n_first  # eval.cache: false reads nothing


def test_eval_audit_true_puts_the_section_in_the_evaluation_report(trained, tmp_path):
    tmp, _ = trained
    report = tmp_path / "eval"
    from unlearn.api import run_eval

    run_eval(tmp / "cfg.yaml", ["eval.audit=true", "audit.attacks=[template]"], report_dir=report)
    md = (report / "report.md").read_text()
    assert "## Is it really gone?" in md and "template:chat" in md
    assert json.loads((tmp_path / "audit" / "audit.json").read_text())["attacks"][0]["variant"] == "template:chat"


def test_the_attack_and_rewrite_of_docs_extending_run_from_an_outside_module(trained, tmp_path, plugin_module):
    """docs/extending.md's example, taken from the page as written, named in `imports`: its attack
    and its rewrite run in the audit like the built-in ones."""
    import re

    from unlearn.api import audit

    tmp, cfg = trained
    page = (Path(__file__).parents[2] / "docs" / "extending.md").read_text()
    code = next(c for c in re.findall(r"```python\n(.*?)```", page, re.S) if "register_attack" in c)
    plugin_module("my_attacks", code)
    path = write_config(tmp_path / "cfg.yaml", {**cfg, "imports": ["my_attacks"],
                                                "audit": {"attacks": ["shout", "jailbreak"], "jailbreaks": ["polite"]}})
    data = audit(path, write=False)
    assert [r["variant"] for r in data["attacks"]] == ["shout", "jailbreak:polite"]
    assert data["attacks"][0]["unlearned"]["forget"]["leak_rate"]["n"] == 4


def test_your_paraphrases_are_asked_and_scored_by_their_own_targets(trained, tmp_path):
    from conftest import FORGET, write_jsonl
    from unlearn.api import audit

    tmp, cfg = trained
    para = write_jsonl(tmp_path / "para.jsonl", [(f"In other words: {p}", r) for p, r in FORGET[:3]])
    data = audit(write_config(tmp_path / "cfg.yaml", {**cfg, "audit": {"attacks": ["paraphrase"],
                                                                       "paraphrases": {"path": str(para)}}}),
                 write=False)
    (row,) = data["attacks"]
    assert row["variant"] == "paraphrase" and list(row["unlearned"]) == ["paraphrases"]
    assert row["unlearned"]["paraphrases"]["leak_rate"]["n"] == 3
    assert data["sets"]["paraphrases"]["n"] == 3
    assert data["headline"][0]["metric"] == "leak_rate"


def test_bitsandbytes_is_skipped_with_its_reason(tmp_path, monkeypatch):
    """No GPU: skipped, saying so; on a GPU with bitsandbytes, a LoRA adapter run is skipped too
    (bitsandbytes loads full model folders), a full model folder is attacked."""
    from types import SimpleNamespace

    from unlearn.auditing.attacks import weights

    assert "CUDA GPU" in weights._bnb_applies(SimpleNamespace(device="cpu", paths={}))
    monkeypatch.setattr(weights, "bitsandbytes_available", lambda: True)
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    (tmp_path / "full").mkdir()
    assert "LoRA adapter" in weights._bnb_applies(SimpleNamespace(device="cuda", paths={"unlearned": str(tmp_path / "adapter")}))
    assert weights._bnb_applies(SimpleNamespace(device="cuda", paths={"unlearned": str(tmp_path / "full")})) is None
