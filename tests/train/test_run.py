"""`unlearn finetune` then `unlearn run` end to end on tiny-random-llama, through the CLI."""

import json
import shutil

import pytest
import torch
import yaml
from typer.testing import CliRunner

from conftest import tiny_config, write_config
from unlearn.cli import app
from unlearn.config import ModelConfig, load_config
from unlearn.data import Encoder, collate, encode_examples, load_examples
from unlearn.evaluate.nll import mean_response_nll
from unlearn.models import load_model, response_logits

runner = CliRunner()


def cli(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result


@pytest.fixture(scope="module")
def taught(tmp_path_factory):
    """tiny-random-llama fine-tuned on the forget and retain data, so it has something to forget."""
    tmp = tmp_path_factory.mktemp("taught")
    from conftest import FORGET, RETAIN, write_jsonl

    data = {"forget": write_jsonl(tmp / "forget.jsonl", FORGET), "retain": write_jsonl(tmp / "retain.jsonl", RETAIN)}
    cfg = tiny_config(tmp, data, train={"lr": 3e-3, "max_steps": 60, "batch_size": 4}, output_dir=str(tmp / "taught"))
    r = cli("finetune", write_config(tmp / "ft.yaml", cfg))
    assert r.exit_code == 0, r.output
    return tmp / "taught" / "model", data


def retain_kl(a, b, encoded, pad_id):
    """Mean per-token KL(a || b) over response tokens."""
    batch = collate({"retain": encoded}, pad_id)
    with torch.no_grad():
        la = torch.log_softmax(response_logits(a, batch.input_ids, batch.attention_mask, batch.labels, False)[0], -1)
        lb = torch.log_softmax(response_logits(b, batch.input_ids, batch.attention_mask, batch.labels, False)[0], -1)
    return (la.exp() * (la - lb)).sum(-1).mean().item()


@pytest.mark.parametrize(
    "variant", [{"lora": None, "lr": 1e-3}, {"lora": {"r": 8, "alpha": 16}, "lr": 1e-2},
                {"lora": {"r": 8, "alpha": 16, "target_modules": ["q_proj", "v_proj"]}, "lr": 1e-2, "merge": True}],
    ids=["full", "lora", "lora-merged"],
)
def test_unlearn_run_end_to_end(taught, tmp_path, variant):
    model_dir, data = taught
    model = {"name": str(model_dir), "lora": variant["lora"], "merge": variant.get("merge", False)}
    cfg = tiny_config(tmp_path, data, model=model, train={"max_steps": 30, "save_every": 0})
    r = cli("run", write_config(tmp_path / "c.yaml", cfg), f"train.lr={variant['lr']}")
    assert r.exit_code == 0, r.output
    out = tmp_path / "run"

    # files: resolved config, one log line per step with every term, the model, the manifest
    resolved = load_config(out / "config.yaml")
    assert resolved.train.lr == variant["lr"] and resolved.objective == {"ga": 0.5, "mismatch": 1.0, "kl": 1.0}
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [rec["step"] for rec in log] == list(range(1, 31))
    for key in ("loss", "ga", "mismatch", "kl", "forget_nll", "lr", "tokens", "seconds"):
        assert all(key in rec for rec in log), key
    assert json.loads((out / "run.json").read_text())["status"] == "done"
    if variant["lora"] and not variant.get("merge"):
        assert (out / "model" / "adapter_config.json").exists()
    if variant.get("merge"):
        assert (out / "adapter" / "adapter_config.json").exists()
        assert (out / "model" / "model.safetensors").exists()
    assert not list(out.glob(".*tmp*"))  # no leftovers of atomic writes

    # behaviour, measured by loading OUTPUT_DIR/model afresh
    original, tok = load_model(ModelConfig(name=str(model_dir)))
    unlearned, _ = load_model(ModelConfig(name=str(out / "model")))
    enc = Encoder(tok, "qa", 96)
    forget = encode_examples(enc, load_examples(data["forget"]))
    retain = encode_examples(enc, load_examples(data["retain"]))
    before = mean_response_nll(original, forget, tok.pad_token_id)
    after = mean_response_nll(unlearned, forget, tok.pad_token_id)
    assert after > before + 1.0, (before, after)
    kl_retain = retain_kl(original, unlearned, retain, tok.pad_token_id)
    kl_forget = retain_kl(original, unlearned, forget, tok.pad_token_id)
    assert kl_retain < 0.25
    assert kl_forget > 2 * kl_retain, (kl_forget, kl_retain)  # the forget side moved much more


def test_stopping_rule_ends_the_run(taught, tmp_path):
    model_dir, data = taught
    cfg = tiny_config(tmp_path, data, model={"name": str(model_dir)},
                      train={"lr": 1e-3, "max_steps": 200, "stop_forget_nll": 2.5, "continue_factor": 1.0})
    r = cli("run", write_config(tmp_path / "c.yaml", cfg))
    assert r.exit_code == 0, r.output
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    crossed = next(rec["step"] for rec in log if rec["forget_nll"] > 2.5)
    assert len(log) < 200
    assert len(log) >= 2 * crossed  # kept going for continue_factor x the steps it took
    manifest = json.loads((tmp_path / "run" / "run.json").read_text())
    assert manifest["stop_reason"].startswith("forget NLL above 2.5")


def test_resume_from_checkpoint_matches_uninterrupted(tmp_path, data_files):
    cfg = tiny_config(tmp_path, data_files, train={"max_steps": 8, "save_every": 4})
    path = write_config(tmp_path / "c.yaml", cfg)
    assert cli("run", path).exit_code == 0
    full_log = (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()
    shutil.copytree(tmp_path / "run" / "model", tmp_path / "uninterrupted")
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == ["step-0000004"]

    r = cli("run", path, "--resume")
    assert r.exit_code == 0, r.output
    resumed_log = (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in resumed_log] == list(range(1, 9))  # every step once
    from safetensors.torch import load_file

    a = load_file(tmp_path / "uninterrupted" / "model.safetensors")
    b = load_file(tmp_path / "run" / "model" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)  # bitwise, on CPU
    assert [json.loads(x)["loss"] for x in resumed_log] == [json.loads(x)["loss"] for x in full_log]

    r = cli("run", path, "--resume", "train.lr=0.5")
    assert r.exit_code == 2 and "config differs" in r.output and "train.lr" in r.output


def test_python_api_does_what_the_cli_does(tmp_path, data_files):
    from unlearn import load_config as lc
    from unlearn import run

    cfg = tiny_config(tmp_path, data_files, objective="ga")
    result = run(lc(write_config(tmp_path / "c.yaml", cfg), ["train.max_steps=2"]))
    assert result.steps == 2 and result.model_dir == tmp_path / "run" / "model"
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["objective"] == {"ga": 1.0}


def test_finetune_then_run_leave_the_callers_config_alone(tmp_path, data_files):
    """finetune(cfg) resolves its own copy of the config: cfg is unchanged after it, and run(cfg)
    afterwards unlearns with cfg's objective, not finetune's {nll: 1}."""
    from unlearn import finetune, run
    from unlearn import load_config as lc

    cfg = lc(write_config(tmp_path / "c.yaml", tiny_config(tmp_path, data_files, train={"lr": None, "max_steps": 1})))
    before = cfg.to_dict()
    tuned = finetune(cfg)
    assert cfg.to_dict() == before
    assert tuned.config.objective == {"nll": 1.0} and tuned.config.train.lr is not None  # the resolved copy
    run(cfg, overwrite=True)
    assert cfg.to_dict() == before
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["objective"] == {"ga": 0.5, "mismatch": 1.0, "kl": 1.0}
    line = json.loads((tmp_path / "run" / "train_log.jsonl").read_text().splitlines()[0])
    assert {"ga", "mismatch", "kl"} <= set(line) and "nll" not in line


def test_log_every_writes_one_averaged_line_per_window_and_the_last_step(tmp_path, data_files):
    """train.log_every: 3 over 7 steps writes steps 3, 6 and 7; a line stands for its window (means
    of the values, sums of tokens, its own step's lr), and training itself does not change."""
    from safetensors.torch import load_file

    def run_with(name, every):
        cfg = tiny_config(tmp_path, data_files, output_dir=str(tmp_path / name),
                          train={"max_steps": 7, "log_every": every})
        assert cli("run", write_config(tmp_path / f"{name}.yaml", cfg)).exit_code == 0
        lines = [json.loads(x) for x in (tmp_path / name / "train_log.jsonl").read_text().splitlines()]
        return lines, load_file(tmp_path / name / "model" / "model.safetensors")

    each, w1 = run_with("each", 1)
    windows, w3 = run_with("windows", 3)
    assert [r["step"] for r in each] == list(range(1, 8)) and "steps" not in each[0]
    assert [r["step"] for r in windows] == [3, 6, 7] and [r.get("steps") for r in windows] == [3, 3, None]
    for line, steps in zip(windows, (each[0:3], each[3:6], each[6:7])):
        for key in ("loss", "ga", "mismatch", "kl", "forget_nll", "grad_norm"):
            assert line[key] == pytest.approx(sum(r[key] for r in steps) / len(steps), rel=1e-12), key
        assert line["tokens"] == sum(r["tokens"] for r in steps)
        assert line["lr"] == steps[-1]["lr"]
    assert all(torch.equal(w1[k], w3[k]) for k in w1)


def test_log_every_writes_a_line_at_each_checkpoint_so_a_resumed_log_loses_nothing(tmp_path, data_files):
    cfg = tiny_config(tmp_path, data_files, train={"max_steps": 8, "save_every": 4, "log_every": 3})
    path = write_config(tmp_path / "c.yaml", cfg)
    assert cli("run", path).exit_code == 0
    log = tmp_path / "run" / "train_log.jsonl"
    full = [json.loads(x) for x in log.read_text().splitlines()]
    assert [(r["step"], r.get("steps", 1)) for r in full] == [(3, 3), (4, 1), (6, 2), (8, 2)]
    assert cli("run", path, "--resume").exit_code == 0  # resumes from step 4: keeps lines up to it
    resumed = [json.loads(x) for x in log.read_text().splitlines()]
    no_time = lambda lines: [{k: v for k, v in r.items() if k != "seconds"} for r in lines]  # noqa: E731
    assert no_time(resumed) == no_time(full)


def test_run_on_a_local_hf_folder_and_chat_template(tmp_path, data_files):
    model, tok = load_model(ModelConfig(name="tiny-random-opt"))
    model.save_pretrained(tmp_path / "hf")
    tok.save_pretrained(tmp_path / "hf")
    cfg = tiny_config(tmp_path, data_files, model={"name": str(tmp_path / "hf")},
                      data={"template": "chat"}, train={"max_steps": 2})
    r = cli("run", write_config(tmp_path / "c.yaml", cfg))
    assert r.exit_code == 0, r.output
    assert (tmp_path / "run" / "model" / "model.safetensors").exists()
