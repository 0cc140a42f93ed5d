"""What a run records is what it did: the lr each step used, strict JSON in train_log.jsonl (a
non-finite value is null, a step that did not apply is marked skipped), the stopping rule's state
across --resume, and which forget examples it trained on (run.json `trained_examples`)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import FORGET, RETAIN, tiny_config, write_config, write_jsonl
from unlearn.config import load_config
from unlearn.objective import registry
from unlearn.objective.registry import register_term
from unlearn.train import train


def strict_log(out: Path) -> list[dict]:
    """train_log.jsonl read as strict JSON: NaN, Infinity and -Infinity are refused."""

    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return [json.loads(line, parse_constant=refuse) for line in (out / "train_log.jsonl").read_text().splitlines()]


def run_config(tmp_path: Path, files, name: str = "run", **sections) -> Path:
    cfg = tiny_config(tmp_path, files, output_dir=str(tmp_path / name), **sections)
    return write_config(tmp_path / f"{name}.yaml", cfg)


def run(path: Path, *overrides: str, resume: bool = False):
    return train(load_config(path, list(overrides)), resume=resume)


# ---- C: the logged lr is the one the step used ---------------------------------------------------


def test_the_logged_lr_is_the_one_the_step_used(tmp_path, data_files, monkeypatch):
    from unlearn.train import loop

    used = []
    original = loop.train_step

    def spy(parts, step, *args, **kwargs):
        used.append(parts.optimizer.param_groups[0]["lr"])  # what this step's optimizer.step applies
        return original(parts, step, *args, **kwargs)

    monkeypatch.setattr(loop, "train_step", spy)
    path = run_config(tmp_path, data_files, train={"lr": 1e-3, "max_steps": 6, "warmup_steps": 4,
                                                   "scheduler": "linear", "save_every": 1, "keep_last": 10})
    run(path)
    log = strict_log(tmp_path / "run")
    assert [r["lr"] for r in log] == used
    assert [r["lr"] for r in log[:4]] == pytest.approx([0.0, 2.5e-4, 5e-4, 7.5e-4])
    # Step 1 ran at lr 0 (linear warmup): its checkpoint holds the initial weights.
    from unlearn.config import ModelConfig
    from unlearn.models import load_model

    model, _ = load_model(ModelConfig(name="tiny-random-llama"))
    first = load_file(tmp_path / "run" / "checkpoints" / "step-0000001" / "trainable.safetensors")
    assert all(torch.equal(first[n], p) for n, p in model.named_parameters())


# ---- D: strict JSON; a step with a non-finite gradient is skipped, not logged with Infinity --------


@pytest.fixture
def inf_gradient_term():
    def inf_gradient(ctx):
        """Test only: finite value (0), infinite gradient (sqrt at 0)."""
        v = ctx.seq_nll("forget").mean()
        return torch.sqrt((v - v.detach()).clamp(min=0.0))

    register_term("test_inf_gradient", segments=("forget",))(inf_gradient)
    yield
    registry._TERMS.entries().pop("test_inf_gradient")


def test_an_untraced_infinite_gradient_is_a_skipped_step_in_strict_json(tmp_path, data_files, monkeypatch,
                                                                       inf_gradient_term):
    """Under fp16 the gradient is not traced to a term (the loss scaler skips such steps): the step
    must still be logged as skipped, with no `Infinity` in the file, and change no weight."""
    from unlearn.train import setup as setup_module

    original = setup_module.prepare_policy

    def untraced(*args, **kwargs):
        parts, scheduler = original(*args, **kwargs)
        parts.trace_gradients = False
        return parts, scheduler

    monkeypatch.setattr(setup_module, "prepare_policy", untraced)
    path = run_config(tmp_path, data_files, objective={"ga": 1.0, "test_inf_gradient": 1.0},
                      train={"max_steps": 2, "max_nonfinite": 5})
    result = run(path)
    log = strict_log(tmp_path / "run")
    assert log == [{"step": 1, "skipped": True, "nonfinite": ["gradient"]},
                   {"step": 2, "skipped": True, "nonfinite": ["gradient"]}]
    assert result.steps == 2
    assert all(torch.isfinite(t).all() for t in load_file(tmp_path / "run" / "model" / "model.safetensors").values())


def test_the_log_writes_nonfinite_values_as_null(tmp_path):
    from unlearn.train.progress import TrainLog

    log = TrainLog(tmp_path / "train_log.jsonl", 1)
    log.add({"step": 1, "loss": 1.0, "forget_nll": float("inf"), "grad_norm": 0.5,
             "eval": {"score": float("nan"), "leak": 0.25}})
    log.add({"step": 2, "loss": float("-inf"), "grad_norm": float("inf")})
    log.close()
    assert strict_log(tmp_path) == [
        {"step": 1, "loss": 1.0, "forget_nll": None, "grad_norm": 0.5, "eval": {"score": None, "leak": 0.25}},
        {"step": 2, "loss": None, "grad_norm": None, "skipped": True},
    ]
