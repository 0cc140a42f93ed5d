"""Several processes: two CPU processes (DDP over gloo, launched through the shipped recipe) train
what one process with the same global batch trains; logs and checkpoints are written once; a
signal stops every rank at the same step and --resume continues under DDP. The GPU engines' recipes
are checked for what can be checked without a GPU (they parse; they say how to launch them)."""

from __future__ import annotations

import json
import os
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

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes" / "accelerate"
ACCELERATE = Path(sys.executable).with_name("accelerate")


def log_of(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def initial() -> dict[str, torch.Tensor]:
    from unlearn.config import ModelConfig
    from unlearn.models import load_model

    model, _ = load_model(ModelConfig(name="tiny-random-llama"))
    return {k: v.detach() for k, v in model.state_dict().items()}


def launch(cfg: Path, *args: str) -> subprocess.Popen:
    """`accelerate launch` with the shipped DDP recipe, two processes. On a machine without a GPU
    the processes train on CPU over gloo (unlearn's train.device: auto says cpu there)."""
    cmd = [str(ACCELERATE), "launch", "--config_file", str(RECIPES / "ddp.yaml"), "--num_processes", "2",
           "--main_process_port", str(free_port()), "-m", "unlearn", "run", str(cfg), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)


def test_two_processes_train_what_one_process_trains(tmp_path, data_files):
    steps = 4
    train = {"max_steps": steps, "grad_accum": 2, "save_every": 3, "keep_last": 5}
    # one process, global batch 2 x 1
    one = write_config(tmp_path / "one.yaml", tiny_config(tmp_path, data_files, output_dir=str(tmp_path / "one"),
                                                           train={**train, "batch_size": 2}))
    r = CliRunner().invoke(app, ["run", str(one)])
    assert r.exit_code == 0, r.output

    # two processes, 1 example each: the same global batch; stopped by SIGTERM after a step
    cfg = write_config(tmp_path / "two.yaml", tiny_config(tmp_path, data_files, output_dir=str(tmp_path / "two"),
                                                          train={**train, "batch_size": 1}))
    out = tmp_path / "two"
    proc = launch(cfg)
    deadline = time.time() + 300
    while not ((out / "train_log.jsonl").exists() and (out / "train_log.jsonl").read_text().count("\n") >= 1):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline, "timed out"
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)  # to the launcher, which passes it on to both ranks
    _, stderr = proc.communicate(timeout=300)
    m = json.loads((out / "run.json").read_text())
    assert m["status"] == "interrupted", stderr[-3000:]
    assert m["processes"] == 2 and m["engine"] == "ddp"
    stopped = m["steps"]
    assert 1 <= stopped < steps
    assert stderr.count("interrupted: SIGTERM: stopped after step") == 1  # said once, by rank 0
    assert "accelerate launch <the same options> -m unlearn run" in " ".join(stderr.split())
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert ckpts[-1] == f"step-{stopped:07d}" and len(ckpts) == len(set(ckpts))
    assert [rec["step"] for rec in log_of(out)] == list(range(1, stopped + 1))  # rank 1 logs nothing

    # --resume under DDP
    proc = launch(cfg, "--resume")
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    m = json.loads((out / "run.json").read_text())
    assert m["status"] == "done" and m["resumed_from"] == stopped
    two_log, one_log = log_of(out), log_of(tmp_path / "one")
    assert [rec["step"] for rec in two_log] == list(range(1, steps + 1))
    for a, b in zip(one_log, two_log):
        for key in ("loss", "ga", "mismatch", "kl", "grad_norm"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), (a["step"], key)
        assert a["tokens"] == b["tokens"]  # the same examples, summed over ranks
    w1 = load_file(tmp_path / "one" / "model" / "model.safetensors")
    w2 = load_file(out / "model" / "model.safetensors")
    assert w1.keys() == w2.keys()
    worst = max((w1[k] - w2[k]).abs().max().item() for k in w1)
    assert worst < 1e-4, worst
    moved = max((w2[k] - w0).abs().max().item() for k, w0 in initial().items())
    assert moved > 100 * worst  # the runs trained: agreeing is not the same as doing nothing


def test_recipes_parse_and_open_with_their_launch_command():
    from accelerate.commands.config.config_args import load_config_from_file

    expected = {"ddp.yaml": "MULTI_GPU", "fsdp.yaml": "FSDP", "deepspeed_zero3.yaml": "DEEPSPEED"}
    assert sorted(p.name for p in RECIPES.glob("*.yaml")) == sorted(expected)
    for name, kind in expected.items():
        text = (RECIPES / name).read_text()
        assert text.startswith("# "), name
        assert f"accelerate launch --config_file recipes/accelerate/{name}" in text, name
        cfg = load_config_from_file(str(RECIPES / name))
        assert str(cfg.distributed_type).endswith(kind), (name, cfg.distributed_type)
        assert cfg.mixed_precision == "no"  # the unlearn config's train.mixed_precision decides
    fsdp = load_config_from_file(str(RECIPES / "fsdp.yaml")).fsdp_config
    assert fsdp["fsdp_version"] == 2 and fsdp["fsdp_state_dict_type"] == "FULL_STATE_DICT"
    assert fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP" and not fsdp["fsdp_cpu_ram_efficient_loading"]
    ds = load_config_from_file(str(RECIPES / "deepspeed_zero3.yaml")).deepspeed_config
    assert ds["zero_stage"] == 3 and ds["zero3_save_16bit_model"] and ds["gradient_accumulation_steps"] == 1


def test_sharded_engines_refuse_what_they_do_not_support():
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from unlearn.distributed import check_engine_options
    from unlearn.errors import UnlearnError

    def acc(kind):
        return SimpleNamespace(distributed_type=kind, num_processes=8)

    where = lambda key: f"c.yaml: {key}"  # noqa: E731
    check_engine_options(acc(DistributedType.MULTI_GPU), save_every=10, merge=True, grad_accum=4, where=where)
    with pytest.raises(UnlearnError, match="train.save_every: resumable checkpoints under fsdp"):
        check_engine_options(acc(DistributedType.FSDP), save_every=10, merge=False, grad_accum=1, where=where)
    with pytest.raises(UnlearnError, match="model.merge under deepspeed"):
        check_engine_options(acc(DistributedType.DEEPSPEED), save_every=0, merge=True, grad_accum=1, where=where)
    with pytest.raises(UnlearnError, match="train.grad_accum > 1 under DeepSpeed"):
        check_engine_options(acc(DistributedType.DEEPSPEED), save_every=0, merge=False, grad_accum=2, where=where)


def test_the_frozen_reference_copy_is_prepared_for_sharding(tiny):
    """What FSDP's auto-wrap policy reads from the module it is given (a ResponseLM): the layer
    class to shard one by one and the embeddings, taken from the model inside."""
    import copy

    from unlearn.distributed import make_shardable
    from unlearn.models import ResponseLM

    model, _ = tiny
    lm = make_shardable(ResponseLM(copy.deepcopy(model)))
    assert lm._no_split_modules == ["LlamaDecoderLayer"]
    assert lm.get_input_embeddings() is lm.model.get_input_embeddings()
    assert lm.get_output_embeddings() is lm.model.lm_head


@pytest.mark.slow
def test_fsdp2_shards_policy_and_reference_on_cpu():
    """FSDP2 over gloo on two CPU processes (tests/helpers/fsdp2_cpu.py): the policy and the frozen
    reference are sharded per decoder layer and one fused step matches one unsharded process."""
    torchrun = Path(sys.executable).with_name("torchrun")
    r = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", str(ROOT / "tests" / "helpers" / "fsdp2_cpu.py")],
                       capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "FSDP2 OK" in r.stdout


def test_deepspeed_is_told_the_batch_size_and_the_clipping():
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from unlearn.distributed import configure_engine

    config = {"train_micro_batch_size_per_gpu": "auto", "zero_optimization": {"stage": 3}}
    acc = SimpleNamespace(distributed_type=DistributedType.DEEPSPEED, num_processes=8,
                          state=SimpleNamespace(deepspeed_plugin=SimpleNamespace(deepspeed_config=config)))
    configure_engine(acc, batch_size=4, max_grad_norm=1.0)
    assert config["train_micro_batch_size_per_gpu"] == 4 and config["gradient_clipping"] == 1.0
    config.update(gradient_clipping=0.5)  # a DeepSpeed config file's own value wins
    configure_engine(acc, batch_size=4, max_grad_norm=None)
    assert config["gradient_clipping"] == 0.5


def test_a_successful_run_destroys_the_process_group_and_a_failed_one_leaves_it(tmp_path, data_files):
    """`unlearn run` ends the process group once it succeeded (PyTorch asks every process to, before
    exit; on the H200 the one-process NCCL run warned that it was not), and leaves it after a failure,
    where a rank must not wait in a collective for the others."""
    import torch.distributed as dist

    assert not dist.is_initialized()
    cfg = tiny_config(tmp_path, data_files)
    cfg["train"]["max_steps"] = 1
    good = write_config(tmp_path / "good.yaml", cfg)
    bad = write_config(tmp_path / "bad.yaml", {**cfg, "output_dir": str(tmp_path / "bad-run"),
                                               "objective": {"no_such_term": 1.0}})
    runner = CliRunner()
    try:
        dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
        r = runner.invoke(app, ["run", str(bad)])
        assert r.exit_code == 2, r.output
        assert dist.is_initialized()  # a failed run leaves the group
        r = runner.invoke(app, ["run", str(good)])
        assert r.exit_code == 0, r.output
        assert not dist.is_initialized()  # a successful one ends it
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
