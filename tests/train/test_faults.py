"""Faults: SIGKILL at a random step and --resume, SIGINT/SIGTERM, non-finite terms, full and
read-only disks. Each ends in a state that loses nothing: the resumed weights equal an
uninterrupted run's bit for bit (CPU), train_log.jsonl holds every step once, run.json says how
the run ended, and no half-written file is left where a reader would take it for a whole one.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from conftest import tiny_config, write_config
from unlearn.cli import app
from unlearn.objective import registry
from unlearn.objective.registry import register_term

runner = CliRunner()
STEPS = 6


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def log_of(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def manifest(out: Path) -> dict:
    return json.loads((out / "run.json").read_text())


def weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "model" / "model.safetensors")


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:3]}"


def config(tmp_path: Path, files, name: str, **train) -> Path:
    cfg = tiny_config(tmp_path, files, output_dir=str(tmp_path / name),
                      train={"max_steps": STEPS, "save_every": 2, "keep_last": 2, "batch_size": 1, **train})
    return write_config(tmp_path / f"{name}.yaml", cfg)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run: its weights and log are what every interrupted run must reach."""
    from conftest import FORGET, RETAIN, write_jsonl

    tmp = tmp_path_factory.mktemp("reference")
    files = {"forget": write_jsonl(tmp / "forget.jsonl", FORGET), "retain": write_jsonl(tmp / "retain.jsonl", RETAIN)}
    r = cli("run", config(tmp, files, "run"))
    assert r.exit_code == 0, r.output
    return files, weights(tmp / "run"), log_of(tmp / "run")


def start(cfg: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "unlearn", "run", str(cfg)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ))


def wait_for_lines(out: Path, n: int, proc: subprocess.Popen, timeout: float = 240) -> int:
    """Poll train_log.jsonl until it has n lines; return the count seen."""
    deadline = time.time() + timeout
    path = out / "train_log.jsonl"
    while time.time() < deadline:
        if path.exists():
            lines = path.read_text().count("\n")
            if lines >= n:
                return lines
        if proc.poll() is not None:
            pytest.fail(f"the run ended before step {n}: {proc.stderr.read()[-2000:]}")
        time.sleep(0.005)
    proc.kill()
    pytest.fail("timed out waiting for the run")


def check_resumed(tmp_path: Path, cfg: Path, out: Path, reference) -> None:
    _, ref_weights, ref_log = reference
    r = cli("run", cfg, "--resume")
    assert r.exit_code == 0, r.output
    log = log_of(out)
    assert [rec["step"] for rec in log] == list(range(1, STEPS + 1))  # every step exactly once
    assert [rec["loss"] for rec in log] == [rec["loss"] for rec in ref_log]
    assert_same_weights(weights(out), ref_weights)
    assert manifest(out)["status"] == "done"
    assert not list(out.glob(".*tmp*")) and not list((out / "checkpoints").glob(".tmp*"))


# ---- SIGKILL ----------------------------------------------------------------------------------


def test_sigkill_at_a_random_step_then_resume_is_bitwise_equal(tmp_path, reference):
    files = reference[0]
    seed = int(os.environ.get("UNLEARN_KILL_SEED", random.SystemRandom().randrange(10**6)))
    kill_after = random.Random(seed).randint(1, STEPS - 3)
    cfg, out = config(tmp_path, files, "killed"), tmp_path / "killed"
    proc = start(cfg)
    seen = wait_for_lines(out, kill_after, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(60)
    where = f"(UNLEARN_KILL_SEED={seed}: killed after {seen} logged steps)"
    assert proc.returncode == -signal.SIGKILL, where
    assert manifest(out)["status"] == "running", where  # a kill leaves no chance to say otherwise
    for ckpt in (out / "checkpoints").glob("step-*"):  # every checkpoint that looks whole is whole
        state = json.loads((ckpt / "state.json").read_text())
        assert int(ckpt.name[5:]) == state["step"], where
        for f in ("trainable", "optimizer", "rng"):
            load_file(ckpt / f"{f}.safetensors")
    check_resumed(tmp_path, cfg, out, reference)


# ---- SIGTERM / SIGINT ------------------------------------------------------------------------------


def test_sigterm_finishes_the_step_checkpoints_and_says_how_to_resume(tmp_path, reference):
    files = reference[0]
    cfg, out = config(tmp_path, files, "term", save_every=0), tmp_path / "term"
    proc = start(cfg)
    wait_for_lines(out, 2, proc)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    message = [line for line in stderr.splitlines() if line.startswith("interrupted:")]
    assert len(message) == 1, stderr
    assert f"resume with: unlearn run {out / 'config.yaml'} --resume" in " ".join(stderr.split())
    m = manifest(out)
    steps = len(log_of(out))
    assert m["status"] == "interrupted" and m["signal"] == "SIGTERM" and m["steps"] == steps
    # save_every: 0 writes no checkpoints, but an interrupted run still gets one, at its last step
    assert m["last_checkpoint"] == str(out / "checkpoints" / f"step-{steps:07d}")
    assert [p.name for p in (out / "checkpoints").iterdir()] == [f"step-{steps:07d}"]
    assert not (out / "model").exists()
    # the resumed run (save_every differs from the reference run's, which changes no weights)
    r = cli("run", cfg, "--resume")
    assert r.exit_code == 0, r.output
    assert [rec["step"] for rec in log_of(out)] == list(range(1, STEPS + 1))
    assert_same_weights(weights(out), reference[1])


def test_sigint_in_process_then_a_second_one_stops_at_once(tmp_path, reference, monkeypatch):
    """SIGINT raised inside step 5 (deterministic): that step finishes, a checkpoint is written,
    the exit status is 130. A second SIGINT (after the debounce) interrupts at once."""
    from unlearn.data.batch import StepBatcher
    from unlearn.runstate import GracefulStop

    files = reference[0]
    cfg, out = config(tmp_path, files, "int"), tmp_path / "int"
    original = StepBatcher.batch
    send_at = {4}

    def batch(self, index):
        # Only while the run's own handler is installed: set-up reads batch 0 too (the fast-path
        # checks), where the signal would meet whatever handler the test process inherited (a
        # KeyboardInterrupt in a terminal, nothing at all under nohup or a CI runner's background
        # job), and the second-signal path below would never be reached.
        ours = isinstance(getattr(signal.getsignal(signal.SIGINT), "__self__", None), GracefulStop)
        if index in send_at and ours:
            send_at.discard(index)
            signal.raise_signal(signal.SIGINT)
        return original(self, index)

    monkeypatch.setattr(StepBatcher, "batch", batch)
    before = signal.getsignal(signal.SIGINT)
    r = cli("run", cfg)
    assert r.exit_code == 130, r.output
    assert "interrupted: SIGINT: stopped after step 5 of 6" in r.output
    assert [rec["step"] for rec in log_of(out)] == [1, 2, 3, 4, 5]
    assert manifest(out)["last_checkpoint"].endswith("step-0000005")
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored

    check_resumed(tmp_path, cfg, out, reference)

    # twice within one step (two micro-batches), the second after the debounce: out at once
    orig_init = GracefulStop.__init__
    monkeypatch.setattr(GracefulStop, "__init__", lambda self, debounce=2.0, notice=None: orig_init(self, 0.0, notice))
    send_at.update({0, 1})
    cfg2, out2 = config(tmp_path, files, "int2", grad_accum=2), tmp_path / "int2"
    r = cli("run", cfg2)
    assert r.exit_code == 130 and "interrupted" in r.output, r.output
    m = manifest(out2)
    assert m["status"] == "interrupted" and "KeyboardInterrupt" in m["reason"] and m["steps"] == 0
    assert not (out2 / "model").exists() and not (out2 / "checkpoints").exists()
    assert signal.getsignal(signal.SIGINT) is before


# ---- non-finite terms -------------------------------------------------------------------------------


@pytest.fixture
def faulty_terms():
    """Two terms that exist only in this test module: one whose value turns NaN on chosen
    calls, one whose value is finite but whose gradient is not (sqrt at 0)."""
    state = {"calls": 0, "bad": set()}

    def nan_on_calls(ctx):
        """Test only: the forget NLL, NaN on chosen calls."""
        state["calls"] += 1
        v = ctx.seq_nll("forget").mean()
        return v * float("nan") if state["calls"] in state["bad"] else v

    def bad_gradient(ctx):
        """Test only: finite value, infinite gradient."""
        v = ctx.seq_nll("forget").mean()
        return torch.sqrt((v - v.detach()).clamp(min=0.0))

    register_term("test_nan", segments=("forget",))(nan_on_calls)
    register_term("test_bad_gradient", segments=("forget",))(bad_gradient)
    yield state
    registry._TERMS.entries().pop("test_nan")
    registry._TERMS.entries().pop("test_bad_gradient")


def test_a_nan_term_skips_the_step_and_the_run_recovers(tmp_path, data_files, faulty_terms):
    faulty_terms["bad"] = {2}
    cfg = tiny_config(tmp_path, data_files, objective={"test_nan": 1.0, "kl": 1.0}, train={"max_steps": 3})
    r = cli("run", write_config(tmp_path / "c.yaml", cfg))
    assert r.exit_code == 0, r.output
    assert "step 2: non-finite test_nan; step skipped (1/3 in a row)" in " ".join(r.output.split())
    log = log_of(tmp_path / "run")
    assert [rec["step"] for rec in log] == [1, 2, 3]
    assert log[1] == {"step": 2, "skipped": True, "nonfinite": ["test_nan"]}
    assert manifest(tmp_path / "run")["status"] == "done"
    assert all(torch.isfinite(t).all() for t in weights(tmp_path / "run").values())


def test_nonfinite_in_a_row_stops_keeps_the_last_good_checkpoint_and_names_the_term(tmp_path, data_files, faulty_terms):
    faulty_terms["bad"] = {3, 4}
    cfg = tiny_config(tmp_path, data_files, objective={"test_nan": 1.0},
                      train={"max_steps": 6, "save_every": 1, "keep_last": 1, "max_nonfinite": 2})
    r = cli("run", write_config(tmp_path / "c.yaml", cfg))
    out = tmp_path / "run"
    assert r.exit_code == 2, r.output
    line = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert len(line) == 1, r.output
    assert "stopped: non-finite test_nan at step 4 (2 steps in a row, none applied)" in line[0]
    good = out / "checkpoints" / "step-0000002"
    assert f"last good checkpoint: {good}" in line[0]
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-0000002"]  # not rotated away
    m = manifest(out)
    assert m["status"] == "failed" and "non-finite test_nan at step 4" in m["reason"]
    assert m["last_checkpoint"] == str(good) and m["steps"] == 3
    assert not (out / "model").exists()
    assert [rec.get("skipped", False) for rec in log_of(out)] == [False, False, True]


def test_a_nonfinite_gradient_is_traced_to_its_term(tmp_path, data_files, faulty_terms):
    cfg = tiny_config(tmp_path, data_files, objective={"ga": 1.0, "test_bad_gradient": 1.0},
                      train={"max_steps": 3, "max_nonfinite": 1})
    r = cli("run", write_config(tmp_path / "c.yaml", cfg))
    assert r.exit_code == 2, r.output
    assert "stopped: non-finite test_bad_gradient gradient at step 1" in " ".join(r.output.split())
    assert manifest(tmp_path / "run")["reason"].startswith("stopped: non-finite test_bad_gradient gradient")


def test_a_nonfinite_gradient_next_to_a_bound_term_is_traced_not_raised(tmp_path, data_files, faulty_terms):
    """rmu with layer: null resolves its layer from the model (Objective.bind): the culprit check
    must call the terms with those resolved values, as the step does, and name the bad term."""
    cfg = tiny_config(tmp_path, data_files, objective={"rmu": {"weight": 1.0, "layer": None}, "test_bad_gradient": 1.0},
                      train={"max_steps": 3, "max_nonfinite": 1})
    r = cli("run", write_config(tmp_path / "c.yaml", cfg))
    assert r.exit_code == 2, r.output
    said = " ".join(r.output.split())
    assert "stopped: non-finite test_bad_gradient gradient at step 1" in said, said
    assert "rmu gradient" not in said  # its own gradient is finite
    assert manifest(tmp_path / "run")["reason"].startswith("stopped: non-finite test_bad_gradient gradient")


# ---- disks --------------------------------------------------------------------------------------------


def enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(args[1]) if len(args) > 1 else None)


def test_disk_full_while_writing_a_checkpoint(tmp_path, data_files, monkeypatch):
    """The second checkpoint hits a full disk half way: a one-line error, run.json `failed`, the
    first checkpoint intact, no temp folder, no model; after space is freed --resume finishes."""
    import safetensors.torch

    real_save = safetensors.torch.save_file
    calls = {"n": 0}

    def save_file(tensors, filename, *a, **k):
        calls["n"] += 1
        if calls["n"] == 5:  # checkpoint 2 of 2 writes 3 files each: fail inside the second
            Path(filename).write_bytes(b"\x00" * 10)  # a torn file, as a full disk leaves
            enospc(tensors, filename)
        return real_save(tensors, filename, *a, **k)

    monkeypatch.setattr(safetensors.torch, "save_file", save_file)
    cfg = write_config(tmp_path / "c.yaml", tiny_config(tmp_path, data_files, objective={"ga": 1.0},
                                                         train={"max_steps": 5, "save_every": 2}))
    r = cli("run", cfg)
    out = tmp_path / "run"
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert lines[-1].startswith("error: cannot write checkpoint step-0000004: no space left on device"), r.output
    assert "Traceback" not in r.output
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-0000002"]
    assert not (out / "model").exists() and not list(out.glob(".*tmp*"))
    m = manifest(out)
    assert m["status"] == "failed" and "no space left on device" in m["reason"]
    assert m["last_checkpoint"].endswith("step-0000002")

    monkeypatch.setattr(safetensors.torch, "save_file", real_save)  # space freed
    r = cli("run", cfg, "--resume")
    assert r.exit_code == 0, r.output
    assert [rec["step"] for rec in log_of(out)] == list(range(1, 6))
    assert manifest(out)["status"] == "done"


def test_disk_full_while_writing_the_model(tmp_path, data_files, monkeypatch):
    from transformers import PreTrainedTokenizerBase

    monkeypatch.setattr(PreTrainedTokenizerBase, "save_pretrained", enospc)
    cfg = write_config(tmp_path / "c.yaml", tiny_config(tmp_path, data_files, objective={"ga": 1.0}, train={"max_steps": 1}))
    r = cli("run", cfg)
    out = tmp_path / "run"
    assert r.exit_code == 2, r.output
    assert "error: cannot write the model to" in r.output and "no space left on device" in r.output
    assert not (out / "model").exists() and not list(out.glob(".*"))  # the half-written folder is gone
    assert manifest(out)["status"] == "failed"


def test_not_enough_free_space_is_an_error_before_anything_is_written(tmp_path, data_files, monkeypatch):
    import unlearn.files as rel

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(rel.shutil, "disk_usage", lambda p: usage._replace(free=1_000_000))
    cfg = write_config(tmp_path / "c.yaml", tiny_config(tmp_path, data_files, train={"save_every": 1}))
    r = cli("run", cfg)
    assert r.exit_code == 2, r.output
    assert "free on its disk, but the run writes about" in r.output and "checkpoints" in r.output
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through file permissions")
def test_read_only_output_dir(tmp_path, data_files):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        cfg = write_config(tmp_path / "c.yaml", tiny_config(tmp_path, data_files, output_dir=str(parent / "run")))
        r = cli("run", cfg)
        assert r.exit_code == 2 and "cannot write in" in r.output and "permission denied" in r.output, r.output
        assert list(parent.iterdir()) == []
    finally:
        parent.chmod(0o755)


def test_read_only_file_system(tmp_path, data_files, monkeypatch):
    """A read-only mount (simulated: the probe file cannot be created, EROFS), where file
    permissions would not stop root: refused before training, nothing written."""
    import unlearn.files as rel

    def mkstemp(*a, **k):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(rel.tempfile, "mkstemp", mkstemp)
    cfg = write_config(tmp_path / "c.yaml", tiny_config(tmp_path, data_files))
    r = cli("run", cfg)
    assert r.exit_code == 2, r.output
    assert f"output_dir '{tmp_path / 'run'}': cannot write in '{tmp_path}' (read-only file system)" in r.output
    assert not (tmp_path / "run").exists()


def test_resume_of_a_finished_run_without_checkpoints_is_refused(tmp_path, data_files):
    cfg = write_config(tmp_path / "c.yaml", tiny_config(tmp_path, data_files, objective={"ga": 1.0}, train={"max_steps": 1}))
    assert cli("run", cfg).exit_code == 0
    r = cli("run", cfg, "--resume")
    assert r.exit_code == 2 and "finished and left no checkpoint to continue from" in r.output, r.output
    assert manifest(tmp_path / "run")["status"] == "done"  # refused before anything was touched
