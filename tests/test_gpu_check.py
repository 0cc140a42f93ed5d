"""benchmarks/gpu_check.py, the prepared GPU check: its CPU dry run goes through every phase (tiny
models, the same code paths) and records numbers or a reason for each; its pieces compute what
they claim; a phase past its timeout is killed with its children and the next one still runs."""

from __future__ import annotations

import json
import re
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check  # noqa: E402


def test_dry_run_records_every_phase_with_numbers_or_a_reason(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHON": sys.executable}
    t = time.time()
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run", "--out", str(tmp_path)],
                       capture_output=True, text=True, env=env, timeout=400)
    wall = time.time() - t
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    data = json.loads((tmp_path / "gpu_check_dry_run.json").read_text())
    phases = data["phases"]
    assert list(phases) == [p.name for p in gpu_check.PHASES]
    for name, rec in phases.items():
        assert rec["status"] in ("ok", "skipped"), (name, rec)
        assert rec["seconds"] >= 0 and rec["timeout_s"] > 0
        if rec["status"] == "skipped":
            assert rec["reason"], name
    # skipped on a CPU, each with its reason; FSDP's command was still built from the shipped recipe
    assert phases["eval-vllm"]["status"] == "skipped" and "GPU" in phases["eval-vllm"]["reason"]
    assert phases["fsdp"]["status"] == "skipped" and "GPU" in phases["fsdp"]["reason"]
    assert "recipes/accelerate/fsdp.yaml" in phases["fsdp"]["command"]
    assert " -m unlearn run " in phases["fsdp"]["command"]
    # everything else ran and measured something
    assert phases["env"]["matmul_peak"]["flops_per_s"] > 0
    assert phases["env"]["versions"]["vllm"]  # a version or "not installed"
    for name, variants in (("step-opt-1.3b", ["unlearn-full", "unlearn-lora"]),
                           ("step-llama-2-7b-lora", ["unlearn-lora"]), ("step-llama-2-7b-full", ["unlearn-full"])):
        rec = phases[name]
        assert list(rec["variants"]) == variants
        for v in rec["variants"].values():
            assert 0 < v["min_s"] <= v["median_s"] <= v["max_s"]
            assert v["tokens_per_s"] == pytest.approx(v["tokens_per_step"] / v["median_s"])
            assert v["flops_per_step"] > 0 and 0 < v["fraction_of_matmul_peak"] and v["peak_bytes"] > 0
    lora, full = (phases["step-opt-1.3b"]["variants"][n]["info"]["trainable_parameters"]
                  for n in ("unlearn-lora", "unlearn-full"))
    assert 0 < lora < full
    ddp = phases["ddp"]
    assert ddp["run_status"] == "done" and ddp["steps"] == 2 and ddp["saved_model"]
    assert ddp["median_step_s"] > 0 and ddp["tokens_per_s"] > 0
    assert "recipes/accelerate/ddp.yaml" in ddp["command"] and "--num_processes 1" in ddp["command"]
    hf = phases["eval-hf"]
    assert hf["prompts"] == 8 == len(hf["outputs"]) == len(hf["output_ids"])
    # every row: at most max_new_tokens, counted with its EOS when it stopped there
    assert hf["new_tokens"] == sum(len(x) for x in hf["output_ids"]) + hf["finished_at_eos"]
    assert all(len(x) <= hf["max_new_tokens"] for x in hf["output_ids"]) and hf["tokens_per_s"] > 0
    assert len(hf["run_seconds"]) == 3 and hf["median_s"] == sorted(hf["run_seconds"])[1]
    one = hf["one_batch"]  # the same prompts in one batch, beside the configured batches of 4
    assert hf["batch_size"] == 4 and one["batch_size"] == 8 and one["tokens_per_s"] > 0
    assert 0 < one["new_tokens"] <= 8 * hf["max_new_tokens"]
    md = (tmp_path / "gpu_check_dry_run.md").read_text()
    for p in gpu_check.PHASES:
        assert f"| {p.name} |" in md
    log = (tmp_path / "gpu_check_dry_run.log").read_text()
    assert all(f"[gpu_check] {p.name}:" in log for p in gpu_check.PHASES)
    # a phase's own lines carry the seconds since it started
    assert re.search(r"^  ddp +\d+\.\ds \| ", log, re.M), log[:2000]
    assert data["wall_s"] < wall + 1
    work = log.split("work folder ", 1)[1].split()[0]
    assert not Path(work).exists()  # the scratch folder (model, runs) is removed


def test_a_phase_past_its_timeout_is_killed_with_its_children(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    script = ("import subprocess, sys, time\n"
              "p = subprocess.Popen(['sleep', '60'])\n"
              f"open({str(pid_file)!r}, 'w').write(str(p.pid))\n"
              "print('started', flush=True)\n"
              "time.sleep(60)\n")
    lines: list[str] = []
    t = time.time()
    rc, timed_out, tail = gpu_check.run_process([sys.executable, "-c", script], 2.0, lines.append)
    assert timed_out and rc is None and time.time() - t < 15
    assert lines == ["started"] and tail == ["started"]
    pid = int(pid_file.read_text())
    deadline = time.time() + 5
    while time.time() < deadline:  # gone, or a zombie waiting for init to reap it
        status = Path(f"/proc/{pid}/status")
        if not status.exists() or "\nState:\tZ" in status.read_text():
            break
        time.sleep(0.05)
    else:
        pytest.fail("the phase's grandchild outlived the timeout")
    # a phase that ends by itself: its exit code and output
    rc, timed_out, tail = gpu_check.run_process([sys.executable, "-c", "print('a'); print('b'); raise SystemExit(3)"],
                                                30, lambda _: None)
    assert (rc, timed_out, tail) == (3, False, ["a", "b"])


def test_phase_timeouts_fit_the_eight_minute_budget():
    assert sum(p.timeout for p in gpu_check.PHASES) + gpu_check.DRIVER_RESERVE_S <= gpu_check.GPU_BUDGET_S == 480
    phase = gpu_check.Phase("x", "x", timeout=50, dry_timeout=10)
    assert gpu_check.phase_budget(phase, False, 400) == 50
    assert gpu_check.phase_budget(phase, False, 30) == 30 - gpu_check.DRIVER_RESERVE_S  # cut to what is left
    assert gpu_check.phase_budget(phase, True, 400) == 10
    assert gpu_check.phase_budget(phase, False, 2) == 0
    # phases that need the saved model come after it
    order = [p.name for p in gpu_check.PHASES]
    assert all(order.index(n) < order.index(p.name) for p in gpu_check.PHASES for n in p.needs)


def test_until_eos_and_agreement_by_hand():
    assert gpu_check.until_eos([5, 6, 2, 2, 2], {2}) == ([5, 6], True)  # EOS, then padding
    assert gpu_check.until_eos([5, 6], {2}) == ([5, 6], False)
    assert gpu_check.until_eos([2], {2, 9}) == ([], True)
    ag = gpu_check.agreement([[1, 2, 3], [4, 5], []], [[1, 2, 9], [4, 5], []], ["a", "b", ""], ["a", "x", ""])
    # prefixes: 2 of 3, 2 of 2, empty = 1
    assert ag["identical_token_sequences"] == 2 and ag["identical_texts"] == 2 and ag["prompts"] == 3
    assert ag["mean_common_prefix_fraction"] == pytest.approx((2 / 3 + 1 + 1) / 3)
    assert gpu_check.agreement([[1]], [[1, 7, 7, 7]], ["a"], ["a"])["mean_common_prefix_fraction"] == 0.25
    with pytest.raises(ValueError):
        gpu_check.agreement([[1]], [], ["a"], [])


def test_step_status_tells_ok_oom_and_failure_apart():
    assert gpu_check.step_status({"a": {"median_s": 1.0}}) == ("ok", None)
    status, reason = gpu_check.step_status({"f": {"error": "out of memory while setting up: CUDA out of memory"}})
    assert status == "oom" and reason.startswith("f: out of memory")
    assert gpu_check.step_status({"a": {"median_s": 1.0}, "b": {"error": "boom"}}) == ("ok", "b: boom")
    assert gpu_check.step_status({"a": {"error": "worker exited with code 1"}})[0] == "failed"


def test_run_log_rates_leave_out_the_first_step():
    lines = [{"step": 1, "seconds": 3.0, "tokens": 100}, {"step": 2, "seconds": 1.0, "tokens": 200},
             {"step": 4, "seconds": 2.0, "tokens": 300, "steps": 2}]
    got = gpu_check.median_step_seconds(lines)
    assert got == {"steps": 4, "median_step_s": 1.0, "tokens_per_s": 500 / 3.0, "first_step_s": 3.0}
    assert gpu_check.median_step_seconds([])["median_step_s"] is None


def test_the_hf_phase_counts_the_ids_generate_decodes(tiny):
    """The HF phase counts and compares the token ids of generate_ids: each prompt's ids, decoded
    as generate decodes them, are the text generate returns; a row that ended at EOS ends there."""
    from unlearn.data import Encoder
    from unlearn.evaluate.generate import GenerationSettings, cut_at_stop, generate, generate_ids, prompt_ids, stop_strings

    model, tok = tiny
    encoder = Encoder(tok, "qa", 256)
    prompts = gpu_check.eval_prompts(30)
    assert len(set(prompts)) == 30
    settings = GenerationSettings(max_new_tokens=6, batch_size=4)
    ids, new = generate_ids(model, encoder, prompts[:9], settings)
    texts = generate(model, encoder, prompts[:9], settings)
    assert ids == prompt_ids(encoder, prompts[:9], settings.max_prompt_tokens)
    for row, text in zip(new, texts):
        kept, at_eos = gpu_check.until_eos(row, {tok.eos_token_id})
        assert len(row) <= 6 and (not at_eos or row[-1] == tok.eos_token_id)
        assert cut_at_stop(tok.decode(kept, skip_special_tokens=True), stop_strings(encoder)).strip() == text


def test_launch_command_is_the_documented_one(tmp_path):
    cmd = gpu_check.launch_command("fsdp", tmp_path / "c.yaml", ["train.save_every=0"], 1234)
    assert cmd[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert cmd[cmd.index("--config_file") + 1] == str(gpu_check.RECIPES / "fsdp.yaml")
    assert (gpu_check.RECIPES / "fsdp.yaml").exists() and (gpu_check.RECIPES / "ddp.yaml").exists()
    assert cmd[cmd.index("--num_processes") + 1] == "1"
    assert cmd[-5:] == ["-m", "unlearn", "run", str(tmp_path / "c.yaml"), "train.save_every=0"]
    docs = (ROOT / "docs" / "distributed.md").read_text()
    assert "accelerate launch --config_file recipes/accelerate/fsdp.yaml --num_processes 8 \\\n    -m unlearn run" in docs


def test_summary_names_every_phase_and_why_it_has_no_numbers():
    data = {"benchmark": "gpu_check", "when": "now", "dry_run": False, "wall_s": 100.0, "budget_s": 480.0,
            "phases": {"env": {"status": "timeout", "reason": "no result within 20 s", "seconds": 20.0},
                       "step-llama-2-7b-full": {
                           "status": "oom", "reason": "unlearn-full: out of memory", "seconds": 30.0,
                           "setting": {"batch_size": 2, "seq_len": 128, "k": 5, "dtype": "bfloat16"},
                           "warmup": 2, "rounds": 4, "model": "random:llama-2-7b",
                           "variants": {"unlearn-full": {"label": "unlearn, full FT", "error": "out of memory"}}}}}
    md = gpu_check.markdown(data)
    for p in gpu_check.PHASES:
        assert f"| {p.name} |" in md
    assert "| env | timeout | 20 | no result within 20 s |" in md
    assert "| ddp | not run |" in md
    assert "not timed: out of memory" in md


def test_vllm_phase_decodes_and_counts_as_the_hf_phase_does(tmp_path, tiny, monkeypatch):
    """The vLLM phase against a stand-in for vllm that answers what the HF phase generated (ids
    only, EOS included where a row stopped, as vLLM returns them): both phases then report the same
    texts and token counts, and the summary full agreement. What the stand-in is asked for is the
    greedy, token-ids-in, token-ids-out use of vLLM's API."""
    import types

    model, tok = tiny
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    a = gpu_check.parse_args(["--prompts", "6", "--max-new-tokens", "5", "--eval-batch", "4"])
    hf = gpu_check.phase_eval_hf(a, tmp_path)
    _, _, _, ids, eos = gpu_check.eval_setup(a, tmp_path, tok)
    answers = {tuple(p): (out, done) for p, out, done in
               zip(ids, hf["output_ids"], [len(x) < 5 for x in hf["output_ids"]])}
    asked: dict = {}

    class SamplingParams:
        def __init__(self, **kw):
            self.kw = kw

    class LLM:
        def __init__(self, model, **kw):
            asked["llm"] = {"model": model, **kw}

        def generate(self, prompts, params, use_tqdm=True):
            asked["params"] = params.kw
            outs = []
            for p in prompts:
                out, done = answers[tuple(p["prompt_token_ids"])]
                out = (out + sorted(eos) if done else out)[: params.kw["max_tokens"]]
                reason = "stop" if done and len(out) <= params.kw["max_tokens"] else "length"
                outs.append(types.SimpleNamespace(outputs=[types.SimpleNamespace(token_ids=out, finish_reason=reason)]))
            return outs

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=LLM, SamplingParams=SamplingParams))
    vl = gpu_check.phase_eval_vllm(a, tmp_path)
    assert vl["status"] == "ok"
    assert asked["llm"]["model"] == str(tmp_path / "model") and asked["llm"]["skip_tokenizer_init"] is True
    assert asked["params"]["temperature"] == 0.0 and asked["params"]["detokenize"] is False
    assert asked["params"]["max_tokens"] == 5 and asked["params"]["stop_token_ids"] == sorted(eos)
    assert vl["outputs"] == hf["outputs"] and vl["output_ids"] == hf["output_ids"]
    assert vl["new_tokens"] == hf["new_tokens"] and vl["finished_at_eos"] == hf["finished_at_eos"]
    ag = gpu_check.agreement(hf["output_ids"], vl["output_ids"], hf["outputs"], vl["outputs"])
    assert ag["identical_token_sequences"] == ag["identical_texts"] == 6
    data = {"benchmark": "gpu_check", "when": "now", "dry_run": False, "wall_s": 1.0, "budget_s": 480.0,
            "phases": {"eval-hf": {**hf, "seconds": 1.0}, "eval-vllm": {**vl, "seconds": 2.0}}, "eval_agreement": ag}
    md = gpu_check.markdown(data)
    assert "identical token sequences 6/6, identical texts 6/6, mean common prefix 100 %" in md
    assert "| eval-vllm | ok | 6 |" in md


def test_a_phase_that_times_out_or_fails_is_recorded_and_the_next_ones_run(tmp_path, monkeypatch):
    """The driver's bookkeeping, with the phase processes stood in for: a timeout and a crash are
    recorded with their reasons, a phase that needs a failed one is skipped, the others run, and the
    summary holds every phase."""
    ran = []

    def fake_run_process(cmd, timeout, log, env=None):
        name, work = cmd[cmd.index("--phase") + 1], Path(cmd[cmd.index("--work") + 1])
        ran.append((name, timeout))
        if name == "env":
            return None, True, ["still measuring"]
        if name == "model":
            return 1, False, ["Traceback (most recent call last):", "OSError: No space left on device", ""]
        (work / "phases" / f"{name}.json").write_text(json.dumps({"status": "ok", "x": 1}))
        return 0, False, []

    monkeypatch.setattr(gpu_check, "run_process", fake_run_process)
    out = tmp_path / "out"
    a = gpu_check.parse_args(["--dry-run", "--out", str(out), "--only", "ddp,step-opt-1.3b,env"])
    assert gpu_check.Driver(a).run() == 0
    assert [n for n, _ in ran] == ["env", "step-opt-1.3b", "model"]  # ddp needs model, which failed
    assert ran[0][1] == 60  # env's dry-run timeout, the budget being ample
    phases = json.loads((out / "gpu_check_dry_run.json").read_text())["phases"]
    assert list(phases) == ["env", "step-opt-1.3b", "model", "ddp"]
    assert phases["env"]["status"] == "timeout" and phases["env"]["reason"] == "no result within 60 s"
    assert phases["step-opt-1.3b"]["status"] == "ok" and phases["step-opt-1.3b"]["x"] == 1
    assert phases["model"] == {**phases["model"], "status": "failed",
                               "reason": "exit code 1: OSError: No space left on device"}
    assert phases["ddp"]["status"] == "skipped" and phases["ddp"]["reason"] == "needs phase model, which did not succeed"
    md = (out / "gpu_check_dry_run.md").read_text()
    assert "| env | timeout |" in md and "| eval-hf | not run |" in md


def test_the_line_that_says_why_a_run_failed():
    torchrun = ["Traceback (most recent call last):", '  File "x.py", line 3, in <module>',
                "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", "E1130 elastic ...",
                "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: ", "  unlearn FAILED", ""]
    assert gpu_check.telling_line(torchrun).startswith("torch.OutOfMemoryError: CUDA out of memory")
    assert gpu_check.telling_line(["plan ...", "error: train.save_every: must be 0 under FSDP", "x"]) == \
        "error: train.save_every: must be 0 under FSDP"
    assert gpu_check.telling_line(["a", "killed", ""]) == "killed"
    assert gpu_check.telling_line([]) == ""
