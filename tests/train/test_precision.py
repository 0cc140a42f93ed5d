"""Full fine-tuning of half-precision weights keeps fp32 master weights: an update far below the
spacing of bfloat16 numbers (lr 2e-6 against weights of 1e-3..5e-2) still moves the weights."""

import json

import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from conftest import tiny_config, write_config
from unlearn.cli import app
from unlearn.config import ModelConfig
from unlearn.models import load_model


def changed_share(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> float:
    """The share of trained weight elements whose value changed."""
    changed = total = 0
    for name, b in before.items():
        a = after[name].float()
        changed += int((a != b.float()).sum())
        total += b.numel()
    return changed / total


def test_one_bf16_step_at_lr_2e_6_moves_the_weights(tmp_path, data_files):
    cfg = tiny_config(tmp_path, data_files, model={"name": "tiny-random-llama", "dtype": "bfloat16"},
                      objective={"ga": 1.0, "kl": 1.0},
                      train={"lr": 2e-6, "max_steps": 2, "save_every": 1, "scheduler": "constant"})
    r = CliRunner().invoke(app, ["run", str(write_config(tmp_path / "c.yaml", cfg))])
    assert r.exit_code == 0, r.output
    out = tmp_path / "run"
    original, _ = load_model(ModelConfig(name="tiny-random-llama", dtype="bfloat16"))
    before = {n: p.detach() for n, p in original.named_parameters()}
    trained = load_file(out / "checkpoints" / "step-0000001" / "trainable.safetensors")
    assert set(trained) == set(before)
    # Adam's first step moves (almost) every weight by about lr: kept in an fp32 trained copy.
    assert changed_share(before, trained) > 0.9
    assert all(t.dtype == torch.float32 for t in trained.values())
    step = (trained["model.layers.0.mlp.up_proj.weight"] - before["model.layers.0.mlp.up_proj.weight"].float()).abs()
    assert step.max() < 1e-5 and step.median() > 1e-6  # the step is lr-sized, not a rounding jump
    # The saved model keeps the dtype it was loaded in (model.dtype).
    saved = load_file(out / "model" / "model.safetensors")
    assert {t.dtype for t in saved.values()} == {torch.bfloat16}
    assert json.loads((out / "run.json").read_text())["status"] == "done"


def test_the_reference_copy_stays_in_the_model_dtype(tmp_path, data_files, monkeypatch):
    """The frozen reference of a bf16 full fine-tune is a bf16 copy (no fp32 copy of the original)."""
    from unlearn.train import setup as setup_module

    seen = {}
    original = setup_module.prepare_policy

    def spy(*args, **kwargs):
        parts, scheduler = original(*args, **kwargs)
        seen["reference"] = {p.dtype for p in parts.reference.copy.parameters()}
        seen["policy"] = {p.dtype for p in parts.params}
        return parts, scheduler

    monkeypatch.setattr(setup_module, "prepare_policy", spy)
    cfg = tiny_config(tmp_path, data_files, model={"name": "tiny-random-llama", "dtype": "bfloat16"},
                      train={"lr": 2e-6, "max_steps": 1})
    r = CliRunner().invoke(app, ["run", str(write_config(tmp_path / "c.yaml", cfg))])
    assert r.exit_code == 0, r.output
    assert seen == {"reference": {torch.bfloat16}, "policy": {torch.float32}}


def test_runs_with_different_autocast_follow_each_other_in_one_process(tmp_path, data_files):
    """A bf16 full fine-tune autocasts to bf16 (accelerate's process-wide state): an fp32 run after it
    in the same process must still start (accelerate refused a second mixed precision)."""
    from unlearn.config import load_config
    from unlearn.train import train

    for name, dtype in (("a", "bfloat16"), ("b", "float32"), ("c", "bfloat16")):
        cfg = tiny_config(tmp_path, data_files, model={"name": "tiny-random-llama", "dtype": dtype},
                          train={"max_steps": 1}, output_dir=str(tmp_path / name))
        assert train(load_config(write_config(tmp_path / f"{name}.yaml", cfg))).steps == 1
