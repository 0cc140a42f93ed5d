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


# ---- B: the stopping rule's state survives --resume ---------------------------------------------


def test_a_resumed_run_stops_where_the_uninterrupted_one_did(tmp_path, data_files):
    """The forget-NLL rule counts from the step the NLL crossed the threshold; a run resumed after
    that step must keep counting from there, not start again at the resumed step."""
    train_cfg = {"lr": 1e-3, "max_steps": 80, "scheduler": "constant", "stop_forget_nll": 5.9,
                 "continue_factor": 1.0, "save_every": 1, "keep_last": 1}
    whole = run(run_config(tmp_path, data_files, "whole", objective={"ga": 1.0}, train=train_cfg))
    log = strict_log(tmp_path / "whole")
    assert whole.stop_reason.startswith("forget NLL above 5.9 since step ")
    crossed = int(whole.stop_reason.rsplit(" ", 1)[1])
    assert 2 <= crossed and whole.steps == 2 * crossed < 80
    assert all(r["forget_nll"] > 5.9 for r in log[crossed - 1:])

    # The same run cut one step before its stop: its last checkpoint is after the crossing.
    path = run_config(tmp_path, data_files, "cut", objective={"ga": 1.0}, train=train_cfg)
    assert run(path, f"train.max_steps={whole.steps - 1}").steps == whole.steps - 1
    resumed = run(path, resume=True)
    assert (resumed.steps, resumed.stop_reason) == (whole.steps, whole.stop_reason)
    assert [r["loss"] for r in strict_log(tmp_path / "cut")] == [r["loss"] for r in log]
    cut, full = (json.loads((tmp_path / d / "run.json").read_text()) for d in ("cut", "whole"))
    assert cut["trained_examples"] == full["trained_examples"]  # counts continue across --resume


# ---- E: which forget examples the run trained on -------------------------------------------------


def example_hash(prompt: str, response: str) -> str:
    """The lead's format, computed here independently of unlearn.data.records."""
    return hashlib.sha256((prompt + "\x00" + response).encode("utf-8")).hexdigest()[:16]


def test_run_json_records_the_forget_examples_the_batcher_served(tmp_path, monkeypatch):
    """3 steps x 2 micro-batches x 2 rows over 5 forget examples: the run crosses an epoch inside
    a step, so an example can occur twice in one step (one step that used it)."""
    from unlearn.data import StepBatcher

    forget = [(f"Question {i} about Elena Marsh?", f"Answer {i}.") for i in range(5)]
    files = {"forget": write_jsonl(tmp_path / "forget.jsonl", forget),
             "retain": write_jsonl(tmp_path / "retain.jsonl", RETAIN)}
    served: dict[int, list[int]] = {}  # micro-batch index -> forget example of each forget row
    original = StepBatcher.batch

    def spy(self, index):
        batch = original(self, index)
        rows = batch.input_ids[batch.segments["forget"]]
        masks = batch.attention_mask[batch.segments["forget"]]
        by_ids = {tuple(e.ids): i for i, e in enumerate(self.forget)}
        served[index] = [by_ids[tuple(r[m.bool()].tolist())] for r, m in zip(rows, masks)]
        return batch

    monkeypatch.setattr(StepBatcher, "batch", spy)
    path = run_config(tmp_path, files, train={"max_steps": 3, "batch_size": 2, "grad_accum": 2})
    run(path)
    expected: dict[str, int] = {}
    for step in range(3):
        used = [i for micro in (2 * step, 2 * step + 1) for i in served[micro]]
        assert len(used) == 4
        for i in dict.fromkeys(used):  # once per step, in order of first use
            h = example_hash(*forget[i])
            expected[h] = expected.get(h, 0) + 1
    recorded = json.loads((tmp_path / "run" / "run.json").read_text())["trained_examples"]
    assert recorded == {"forget": {"total": 5, "seen": [[h, n] for h, n in expected.items()]}}
    assert sum(n for _, n in recorded["forget"]["seen"]) < 12  # some step used an example twice


def test_example_hash_is_the_shared_format():
    from unlearn.data.records import example_hash as shipped

    for prompt, response in FORGET + [("", ""), ("é\x00", "ü")]:
        assert shipped(prompt, response) == example_hash(prompt, response)
