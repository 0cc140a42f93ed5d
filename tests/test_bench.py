"""The benchmarks measure what `unlearn run` does, and their helpers compute what they claim."""

import json
import sys
from pathlib import Path

import pytest

from conftest import FORGET, RETAIN, tiny_config, write_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import common  # noqa: E402
import harness  # noqa: E402


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_benchmark_step_is_the_training_loop_step(tmp_path, data_files, lora, monkeypatch):
    """benchmarks/harness.UnlearnStep runs the training loop's own step (unlearn.train.step.
    train_step, the function `unlearn run` calls) and logs the same losses, step after step: the
    harness's model, data and preparation are those of the run."""
    from accelerate.utils import set_seed

    from unlearn import cli
    from unlearn.train import step as step_module

    calls = {"run": 0, "bench": 0}
    real = step_module.train_step
    phase = ["run"]

    def counted(*args, **kwargs):
        calls[phase[0]] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(step_module, "train_step", counted)
    from unlearn.train import loop as loop_module

    monkeypatch.setattr(loop_module, "train_step", counted)

    model_cfg = {"name": "tiny-random-llama", "lora": {"r": 8, "alpha": 16.0} if lora else None}
    cfg = tiny_config(tmp_path, data_files, model=model_cfg,
                      train={"lr": 1e-3, "batch_size": 2, "max_steps": 3, "scheduler": "constant"})
    path = write_config(tmp_path / "cfg.yaml", cfg)
    from typer.testing import CliRunner

    result = CliRunner().invoke(cli.app, ["run", str(path)])
    assert result.exit_code == 0, result.output
    logged = [json.loads(x) for x in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]

    setting = harness.Setting(model="tiny-random-llama", lora=lora, lora_r=8, batch_size=2, k=2, seq_len=96,
                              lr=1e-3, seed=0)
    set_seed(0)
    model, tok = harness.load(setting)
    data = {"forget": FORGET, "retain": RETAIN, "pool": [r for _, r in RETAIN]}
    step = harness.UnlearnStep(setting, model, tok, data)
    phase[0] = "bench"
    for i, line in enumerate(logged):
        out = step.step(i)
        assert out["loss"] == pytest.approx(line["loss"], rel=1e-5, abs=1e-6), i
        assert out["tokens"] == line["tokens"]
    assert calls == {"run": 3, "bench": 3}


def test_authors_pattern_pads_every_row_and_runs_k_per_forget_example(tiny):
    model, tok = tiny
    import copy

    setting = harness.Setting(model="tiny-random-llama", impl="authors", batch_size=2, k=3, seq_len=64)
    data = {"forget": FORGET, "retain": RETAIN, "pool": [r for _, r in RETAIN]}
    step = harness.AuthorsStep(setting, copy.deepcopy(model), tok, data)
    out = step.step(0)
    assert out["rows"] == 2 * (2 + 3) and out["padded_tokens"] == 10 * 64
    assert out["tokens"] < out["padded_tokens"]
    assert all(p.dtype.is_floating_point and p.dtype.itemsize == 4 for p in step.reference.parameters())


def test_authors_lora_runs_peft_own_forward_and_unlearn_its_fused_one(tiny):
    """The authors' script builds its adapters with peft, so its LoRA layers run peft's forward;
    unlearn.models.lora's fused forward is unlearn's, and the baseline must not get it."""
    import copy

    from unlearn.models.lora import lora_layers

    model, tok = tiny
    data = {"forget": FORGET, "retain": RETAIN, "pool": [r for _, r in RETAIN]}
    fused = {}
    for impl, cls in (("authors", harness.AuthorsStep), ("unlearn", harness.UnlearnStep)):
        setting = harness.Setting(model="tiny-random-llama", impl=impl, lora=True, batch_size=2, k=2, seq_len=64)
        step = cls(setting, copy.deepcopy(model), tok, data)
        layers = lora_layers(step.model)
        assert layers
        fused[impl] = {"forward" in m.__dict__ for m in layers}
        assert "loss" in step.step(0)
    assert fused == {"authors": {False}, "unlearn": {True}}


def test_authors_best_case_pads_each_batch_to_its_longest_row(tiny):
    """pad="longest": their padding="max_length" with a tokenizer that has no maximum length pads
    nothing beyond each batch's longest row; the rows and the real tokens are the same."""
    model, tok = tiny
    import copy

    data = {"forget": FORGET, "retain": RETAIN, "pool": [r for _, r in RETAIN]}
    out = {}
    for pad in ("max_length", "longest"):
        setting = harness.Setting(model="tiny-random-llama", impl="authors", batch_size=2, k=3, seq_len=256, pad=pad)
        out[pad] = harness.AuthorsStep(setting, copy.deepcopy(model), tok, data).step(0)
    fixed, best = out["max_length"], out["longest"]
    assert best["rows"] == fixed["rows"] == 10 and best["tokens"] == fixed["tokens"]
    assert best["tokens"] <= best["padded_tokens"] < fixed["padded_tokens"] == 10 * 256


def test_linear_fit_and_table_by_hand():
    fit = common.linear_fit([1, 2, 4], [3, 5, 9])  # y = 1 + 2x exactly
    assert fit["slope"] == pytest.approx(2) and fit["intercept"] == pytest.approx(1) and fit["r2"] == pytest.approx(1)
    assert common.linear_fit([1, 2, 4], [2, 4, 8])["loglog_slope"] == pytest.approx(1)
    assert common.linear_fit([1, 2, 4], [1, 4, 16])["loglog_slope"] == pytest.approx(2)
    assert common.table(["a", "b"], [[1, 2.5]]) == "| a | b |\n|---|---|\n| 1 | 2.5 |"


def test_flop_count_of_a_matmul_and_of_attention():
    import torch

    a, b = torch.randn(8, 16), torch.randn(16, 4)
    assert common.count_flops(lambda: a @ b) == 2 * 8 * 16 * 4
    q = torch.randn(1, 2, 8, 4, requires_grad=True)
    f = common.count_flops(lambda: torch.nn.functional.scaled_dot_product_attention(q, q, q).sum().backward())
    # forward: QK^T and PV, 2 * (2*8*8*4) per head; backward: twice that again and more; CPU kernels counted
    assert f >= 3 * 2 * 2 * (2 * 8 * 8 * 4)


def test_live_tensor_peak_counts_what_the_step_holds_at_once():
    import torch

    mib = 2**20
    # ones (64 MiB) and the product (64 MiB) are alive together; the sum is 4 bytes
    assert common.tensor_peak(lambda: (torch.ones(2**24) * 2).sum()) == pytest.approx(128 * mib, abs=mib)
    x = torch.ones(2**23)  # allocated before: counted once the step uses it, like the weights
    assert common.tensor_peak(lambda: (x + 1).sum()) == pytest.approx(64 * mib, abs=mib)
    assert common.tensor_peak(lambda: [torch.ones(2**22).sum() for _ in range(8)]) == pytest.approx(16 * mib, abs=mib)


def test_synthetic_data_has_the_asked_token_lengths(tiny):
    _, tok = tiny
    import random

    for n in (5, 17, 40):
        text = common.text_of_tokens(tok, n, random.Random(n))
        assert abs(len(tok(text, add_special_tokens=False)["input_ids"]) - n) <= 2


def test_benchmark_full_fine_tune_of_bf16_weights_trains_fp32_weights_like_the_run(tiny):
    """`unlearn run` trains an fp32 copy of bf16 weights under bf16 autocast (train.setup.master_weights);
    the benchmark's UnlearnStep must run the same thing."""
    import copy

    import torch

    model, tok = tiny
    setting = harness.Setting(model="tiny-random-llama", dtype="bfloat16", batch_size=2, k=2, seq_len=64)
    data = {"forget": FORGET, "retain": RETAIN, "pool": [r for _, r in RETAIN]}
    step = harness.UnlearnStep(setting, copy.deepcopy(model).to(torch.bfloat16), tok, data)
    assert step.parts.accelerator.mixed_precision == "bf16"
    assert step.parts.params and all(p.dtype == torch.float32 for p in step.parts.params)
    assert all(p.dtype == torch.bfloat16 for p in step.parts.reference.copy.parameters())
    assert "loss" in step.step(0)


def test_switched_off_kernels_compute_the_same_step(monkeypatch):
    """benchmarks/step_switches.py and step.py's `kernels` group time the step with attention over each
    bin's whole mask, peft's LoRA forward and a slice of the logits per segment: the switches change
    which kernels run (no units reach attention; LoRA layers lose the fused forward), not the losses."""
    from accelerate.utils import set_seed

    from unlearn.models import attention

    seen = []
    real = attention.packed_attention_forward

    def spy(*args, **kwargs):
        seen.append(kwargs.get(attention.UNITS_KWARG) is not None)
        return real(*args, **kwargs)

    from transformers import AttentionInterface

    attention._register()
    monkeypatch.setitem(AttentionInterface._global_mapping, attention.PACKED_ATTENTION, spy)
    data = {"forget": FORGET, "retain": RETAIN, "pool": [r for _, r in RETAIN]}
    losses = {}
    for off in (False, True):
        setting = harness.Setting(model="tiny-random-llama", lora=True, lora_r=8, batch_size=2, k=2, seq_len=96,
                                  lr=1e-3, seed=0, unit_attention=not off, fuse_lora=not off)
        set_seed(0)
        model, tok = harness.load(setting)
        seen.clear()
        try:
            harness.segment_slices(off)
            step = harness.UnlearnStep(setting, model, tok, data)
            assert any("forward" in m.__dict__ for m in step.model.modules()) is not off
            losses[off] = [step.step(i)["loss"] for i in range(3)]
        finally:
            harness.dense_attention(False)
            harness.segment_slices(False)
        assert seen and all(seen) is not off and any(seen) is not off
    assert losses[True] == pytest.approx(losses[False], rel=1e-5, abs=1e-6)
    from unlearn.objective import context

    assert context.split_positions.__module__ == "unlearn.objective.context"  # switched back


def test_the_work_count_sees_every_phase_of_a_cold_eval_and_audit_and_leaves_unlearn_as_it_was(tmp_path, monkeypatch):
    """benchmarks/work.py counts what the commands compute by wrapping unlearn's forwards: on a
    finished tiny run, every phase it reports has positions (a renamed function would leave a phase
    empty), no prompt decodes more steps than max_new_tokens allows (a double count would), and the
    wrapped functions are unlearn's own again afterwards."""
    import work
    from conftest import write_jsonl

    import unlearn.auditing.attacks.relearn as relearn
    import unlearn.evaluate.decode as decode
    import unlearn.models.forward as forward
    from unlearn.api import run

    files = {"forget": write_jsonl(tmp_path / "forget.jsonl", FORGET), "retain": write_jsonl(tmp_path / "retain.jsonl", RETAIN)}
    cfg = tiny_config(tmp_path, files, eval={"max_new_tokens": 4},
                      audit={"relearn_steps": 1, "retain_limit": 2, "attacks": ["template", "relearn"]})
    run(write_config(tmp_path / "cfg.yaml", cfg))
    monkeypatch.setattr(common, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(common, "matmul_peak", lambda *a, **k: 1e11)
    before = (decode._Forward.__call__, forward.logits_at, relearn.finetune_lora)

    work.main(["--run", cfg["output_dir"], "--name", "work_test"])

    assert (decode._Forward.__call__, forward.logits_at, relearn.finetune_lora) == before
    data = json.loads((tmp_path / "results" / "work_test.json").read_text())
    for command, phases in (("eval", ("prefill", "decode", "nll")), ("audit", ("prefill", "decode", "finetune"))):
        got = data["results"][command]
        assert set(phases) <= set(got["tflop"]), (command, got["counts"])
        for phase in phases:
            assert got["counts"][f"{phase} positions"] > 0 and got["tflop"][phase] > 0, (command, phase)
        # each prompt decodes at most max_new_tokens - 1 steps after its prefill (which gives the first token)
        assert got["counts"]["decode positions"] <= got["counts"]["prefill head"] * (4 - 1)
    assert "**whole command**" in (tmp_path / "results" / "work_test.md").read_text()
