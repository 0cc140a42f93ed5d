"""The prepared GPU check: what `unlearn` does on one H100/H200, measured in at most 8 minutes,
with no hub access (randomly initialised models of the real shapes, built on the GPU).

    bash benchmarks/gpu_check.sh                  # on a GPU: benchmarks/results/gpu_check.{json,md,log}
    bash benchmarks/gpu_check.sh --out DIR        # the results in DIR instead
    bash benchmarks/gpu_check.sh --dry-run        # CPU, tiny shapes, about a minute: the same phases and code
    bash benchmarks/gpu_check.sh --only eval-vllm # rerun some phases, keeping the others' earlier records

Phases, in this order (each in its own process group, with its own timeout; a phase that fails,
runs out of memory or out of time is recorded as such and the next one runs):

    env                    GPU, driver, library versions; the dense bf16 matmul peak (8192^3, best over 2 s)
    step-opt-1.3b          one unlearning step, OPT-1.3B-shaped, bf16: full fine-tune and LoRA
    step-llama-2-7b-lora   the same, Llama-2-7B-shaped, LoRA
    model                  a random-init OPT-1.3B-shaped model saved as a folder (for the phases below)
    ddp, fsdp              `unlearn run` under recipes/accelerate/{ddp,fsdp}.yaml, one process
    eval-hf                greedy generation with unlearn.evaluate.generate (the evaluation's own decoding loop)
    eval-vllm              the same prompt ids through vllm.LLM; the two backends' agreement
    step-llama-2-7b-full   Llama-2-7B-shaped full fine-tune: about 126 GB of weights, fp32 master
                           weights, gradients and AdamW state before activations; last, because it may
                           not fit (an out-of-memory is recorded as the result)

The step phases use benchmarks/step.py's machinery (one worker process per variant; FLOPs counted
with torch's FlopCounterMode on one warm-up step; the median of the timed rounds; peak memory by
torch.cuda.max_memory_allocated; the matmul peak measured in the same run), so MFU = FLOPs per step
/ median seconds / that peak. After every phase the summary (OUT/gpu_check.json, gpu_check.md,
gpu_check.log) is written again, so whatever finished is kept if the whole run is stopped.

--dry-run runs the same phases on the CPU with tiny models (tiny-random-opt / tiny-random-llama,
float32); FSDP (accelerate selects it only on GPUs: on a CPU it would silently run DDP) and vLLM
are recorded as skipped, with the command that would have run.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RECIPES = ROOT / "recipes" / "accelerate"
sys.path.insert(0, str(HERE))

STATUSES = ("ok", "skipped", "failed", "timeout", "oom", "interrupted")
LIBRARIES = ("torch", "transformers", "peft", "accelerate", "tokenizers", "safetensors", "vllm")


@dataclass(frozen=True)
class Phase:
    name: str
    title: str
    timeout: float  # seconds on a GPU; the sum stays under the 8-minute budget with room for the driver
    dry_timeout: float
    needs: tuple[str, ...] = ()


PHASES = [
    # The timeouts follow the first run on an H200 (2026-11-30: env 7 s, step-opt-1.3b 48, the 7B LoRA
    # step 31, model 14, ddp 40, eval-hf 33 with fewer runs, the 7B full step 31; FSDP ran past 50 s
    # after its last step), with room for the extra timed runs added since.
    Phase("env", "environment and bf16 matmul peak", 20, 60),
    Phase("step-opt-1.3b", "unlearning step, OPT-1.3B shape: full FT and LoRA", 70, 120),
    Phase("step-llama-2-7b-lora", "unlearning step, Llama-2-7B shape: LoRA", 45, 90),
    Phase("model", "random-init OPT-1.3B-shaped model folder", 22, 60),
    Phase("ddp", "unlearn run, DDP recipe, 1 process", 55, 120, needs=("model",)),
    Phase("fsdp", "unlearn run, FSDP2 recipe, 1 process", 80, 60, needs=("model",)),
    Phase("eval-hf", "evaluation generation: HF model, unlearn.evaluate.generate's loop", 55, 90, needs=("model",)),
    Phase("eval-vllm", "evaluation generation: vLLM", 75, 60, needs=("model",)),
    Phase("step-llama-2-7b-full", "unlearning step, Llama-2-7B shape: full FT (may not fit)", 50, 90),
]
BY_NAME = {p.name: p for p in PHASES}
GPU_BUDGET_S = 480.0
DRY_BUDGET_S = 300.0
DRIVER_RESERVE_S = 8.0  # kept back from the budget for the driver's own start and summaries
MIN_PHASE_S = 8.0  # a phase given less than this is skipped: it could not even import torch

# Models of the step phases and the saved folder: (GPU shape, dry-run alias).
STEP_MODELS = {
    "step-opt-1.3b": ("random:opt-1.3b", "tiny-random-opt", ["unlearn-full", "unlearn-lora"]),
    "step-llama-2-7b-lora": ("random:llama-2-7b", "tiny-random-llama", ["unlearn-lora"]),
    "step-llama-2-7b-full": ("random:llama-2-7b", "tiny-random-llama", ["unlearn-full"]),
}
FOLDER_MODEL = ("random:opt-1.3b", "tiny-random-opt")


# --------------------------------------------------------------------------------------------
# Small pieces (tested on their own)


def phase_budget(phase: Phase, dry_run: bool, seconds_left: float) -> float:
    """The timeout a phase runs under: its own, cut to what is left of the whole run's budget."""
    own = phase.dry_timeout if dry_run else phase.timeout
    return max(0.0, min(own, seconds_left - DRIVER_RESERVE_S))


def until_eos(ids: Sequence[int], eos: set[int]) -> tuple[list[int], bool]:
    """(the tokens before the first end-of-turn token, whether there was one). Rows of a batch that
    finished early are padded after their EOS (here the pad token is the EOS token)."""
    out: list[int] = []
    for t in ids:
        if t in eos:
            return out, True
        out.append(int(t))
    return out, False


def agreement(a: Sequence[Sequence[int]], b: Sequence[Sequence[int]], a_text: Sequence[str],
              b_text: Sequence[str]) -> dict[str, Any]:
    """How far two backends' greedy outputs for the same prompts agree: identical token sequences,
    identical texts, and the mean over prompts of (common prefix length / longer output's length)."""
    if len(a) != len(b) or len(a_text) != len(b_text) or len(a) != len(a_text):
        raise ValueError("agreement: the two backends answered different numbers of prompts")
    fractions = []
    for x, y in zip(a, b):
        n = 0
        while n < min(len(x), len(y)) and x[n] == y[n]:
            n += 1
        longest = max(len(x), len(y))
        fractions.append(n / longest if longest else 1.0)
    return {
        "prompts": len(a),
        "identical_token_sequences": sum(list(x) == list(y) for x, y in zip(a, b)),
        "identical_texts": sum(x == y for x, y in zip(a_text, b_text)),
        "mean_common_prefix_fraction": sum(fractions) / len(fractions) if fractions else float("nan"),
    }


def step_status(variants: dict[str, dict[str, Any]]) -> tuple[str, Optional[str]]:
    """A step phase's status from its variants: ok when every variant has timings; oom when one ran
    out of memory and none was timed; failed otherwise."""
    timed = [v for v in variants.values() if v.get("median_s")]
    errors = [f"{n}: {v.get('error') or v.get('skipped') or 'no timed step'}"
              for n, v in variants.items() if not v.get("median_s")]
    if not errors:
        return "ok", None
    if timed:
        return "ok", "; ".join(errors)  # some numbers; the others' reasons are kept
    if any("out of memory" in e for e in errors):
        return "oom", "; ".join(errors)
    return "failed", "; ".join(errors)


def median_step_seconds(log_lines: list[dict[str, Any]]) -> dict[str, Any]:
    """Steps, median seconds per step and tokens/s from a run's train_log.jsonl (lines may merge
    several steps: `steps`, with seconds and tokens summed). The first line is the warm-up and is
    left out of the rates when there is more than one."""
    lines = [x for x in log_lines if "seconds" in x]
    timed = lines[1:] if len(lines) > 1 else lines
    per_step = [x["seconds"] / x.get("steps", 1) for x in timed]
    secs = sum(x["seconds"] for x in timed)
    toks = sum(x.get("tokens", 0) for x in timed)
    return {"steps": sum(x.get("steps", 1) for x in lines),
            "median_step_s": statistics.median(per_step) if per_step else None,
            "tokens_per_s": toks / secs if secs else None,
            "first_step_s": lines[0]["seconds"] / lines[0].get("steps", 1) if lines else None}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(recipe: str, config: Path, overrides: Sequence[str], port: int) -> list[str]:
    """docs/distributed.md's command for RECIPE (`accelerate launch --config_file
    recipes/accelerate/RECIPE.yaml --num_processes N -m unlearn run CONFIG ...`), with one process,
    through this interpreter (`python -m accelerate.commands.launch` is `accelerate launch`)."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(RECIPES / f"{recipe}.yaml"),
            "--num_processes", "1", "--main_process_port", str(port), "-m", "unlearn", "run", str(config),
            *overrides]


def child_env(dry_run: bool) -> dict[str, str]:
    """The environment of every process the check starts: this checkout's sources first, no hub."""
    env = dict(os.environ)
    src = str(ROOT / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1", PYTHONUNBUFFERED="1")
    if dry_run:
        env["OMP_NUM_THREADS"] = "1"
    return env


# --------------------------------------------------------------------------------------------
# Running one phase in its own process group


def run_process(cmd: list[str], timeout: float, log: Callable[[str], None], env: Optional[dict[str, str]] = None,
                ) -> tuple[Optional[int], bool, list[str]]:
    """Run cmd in a new process group, its output passed line by line to log(). After timeout
    seconds the whole group is killed (step.py's workers, torchrun's ranks, vLLM's engine core).
    Returns (exit code or None when killed, timed out?, the last 40 lines of output)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                            start_new_session=True, env=env, errors="replace")
    tail: deque[str] = deque(maxlen=40)

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            tail.append(line.rstrip("\n"))
            log(line.rstrip("\n"))

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    timed_out = False
    try:
        rc: Optional[int] = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out, rc = True, None
    finally:
        # The group goes in every case: a finished phase may leave a grandchild holding the pipe.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()
        reader.join(timeout=5)
    return (None if timed_out else rc), timed_out, list(tail)


class Driver:
    """Runs the phases in order and rewrites the summary after each."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.out = Path(args.out).resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        self.stem = "gpu_check_dry_run" if args.dry_run else "gpu_check"
        self.work = Path(args.work).resolve() if args.work else Path(tempfile.mkdtemp(prefix="unlearn-gpu-check-"))
        (self.work / "phases").mkdir(parents=True, exist_ok=True)
        self.records: dict[str, dict[str, Any]] = {}
        self.logf = open(self.out / f"{self.stem}.log", "a" if args.only else "w")
        self.t0 = time.time()
        self.budget = args.budget or (DRY_BUDGET_S if args.dry_run else GPU_BUDGET_S)

    def say(self, msg: str, console: bool = True) -> None:
        if console:
            print(msg, flush=True)
        self.logf.write(msg + "\n")
        self.logf.flush()

    def selected(self) -> list[Phase]:
        if not self.args.only:
            return list(PHASES)
        names = [n.strip() for n in self.args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in BY_NAME]
        if unknown:
            raise SystemExit(f"gpu_check: unknown phase(s) {unknown}; phases: {', '.join(BY_NAME)}")
        wanted = set(names)
        for n in names:  # a phase's prerequisites run again too (the work folder is new)
            wanted.update(BY_NAME[n].needs)
        return [p for p in PHASES if p.name in wanted]

    def run(self) -> int:
        previous = self.out / f"{self.stem}.json"
        if self.args.only and previous.exists():
            self.records.update(json.loads(previous.read_text()).get("phases", {}))
        phases = self.selected()
        self.say(f"[gpu_check] {'dry run, ' if self.args.dry_run else ''}budget {self.budget:.0f} s, "
                 f"phases: {', '.join(p.name for p in phases)}; work folder {self.work}")
        interrupted: list[int] = []

        def on_signal(signum: int, _frame: Any) -> None:
            interrupted.append(signum)
            raise KeyboardInterrupt

        old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            for phase in phases:
                self.records[phase.name] = self.run_phase(phase)
                self.write_summary()
        except KeyboardInterrupt:
            self.say("[gpu_check] interrupted: the records so far are kept")
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            self.write_summary()
            self.logf.close()
            if not self.args.keep_work and not self.args.work:
                shutil.rmtree(self.work, ignore_errors=True)
        wall = time.time() - self.t0
        md = self.out / f"{self.stem}.md"
        if md.exists():
            print("\n" + md.read_text(), flush=True)
        print(f"[gpu_check] {wall:.0f} s in all (budget {self.budget:.0f} s). Results: "
              f"{self.out / (self.stem + '.json')}, {self.out / (self.stem + '.md')} "
              f"(paste into docs/performance.md), log {self.out / (self.stem + '.log')}", flush=True)
        return 128 + interrupted[0] if interrupted else 0

    def run_phase(self, phase: Phase) -> dict[str, Any]:
        missing = [n for n in phase.needs if self.records.get(n, {}).get("status") != "ok"]
        left = self.budget - (time.time() - self.t0)
        timeout = phase_budget(phase, self.args.dry_run, left)
        if missing:
            rec = {"status": "skipped", "reason": f"needs phase {', '.join(missing)}, which did not succeed"}
        elif timeout < MIN_PHASE_S:
            rec = {"status": "skipped", "reason": f"time budget spent ({left:.0f} s left of {self.budget:.0f} s)"}
        else:
            self.say(f"[gpu_check] {phase.name}: {phase.title} (timeout {timeout:.0f} s) ...")
            rec = self.spawn(phase, timeout)
        rec.setdefault("title", phase.title)
        self.say(f"[gpu_check] {phase.name}: {rec['status']} in {rec.get('seconds', 0):.1f} s"
                 + (f" ({rec['reason']})" if rec.get("reason") else ""))
        return rec

    def spawn(self, phase: Phase, timeout: float) -> dict[str, Any]:
        record_path = self.work / "phases" / f"{phase.name}.json"
        record_path.unlink(missing_ok=True)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--phase", phase.name, "--work", str(self.work),
               *self.passthrough()]
        t = time.time()
        # Each line of a phase's output is logged with the seconds since the phase started, so that a
        # timeout shows where the time went (a slow save, or a hang at exit).
        rc, timed_out, tail = run_process(
            cmd, timeout,
            lambda line: self.say(f"  {phase.name} {time.time() - t:6.1f}s | {line}", console=self.args.verbose),
            env=child_env(self.args.dry_run))
        seconds = time.time() - t
        if record_path.exists():
            rec = json.loads(record_path.read_text())
        elif timed_out:
            rec = {"status": "timeout", "reason": f"no result within {timeout:.0f} s"}
        else:
            rec = {"status": "failed", "reason": f"exit code {rc}: {telling_line(tail)[-300:]}",
                   "output_tail": tail[-30:]}
        if timed_out and rec.get("status") == "ok":  # wrote its record, then hung while exiting
            rec["note"] = f"the process had to be killed after its {timeout:.0f} s"
        rec["seconds"] = round(seconds, 1)
        rec["timeout_s"] = round(timeout)
        return rec

    def passthrough(self) -> list[str]:
        a = self.args
        out = ["--batch", str(a.batch), "--seq-len", str(a.seq_len), "--k", str(a.k), "--warmup", str(a.warmup),
               "--rounds", str(a.rounds), "--prompts", str(a.prompts), "--max-new-tokens", str(a.max_new_tokens),
               "--eval-batch", str(a.eval_batch), "--run-steps", str(a.run_steps),
               "--vllm-memory", str(a.vllm_memory), "--layers", str(a.layers)]
        if a.dry_run:
            out.append("--dry-run")
        if a.vllm_eager:
            out.append("--vllm-eager")
        return out

    def write_summary(self) -> None:
        data = {
            "benchmark": self.stem,
            "dry_run": self.args.dry_run,
            "command": " ".join(shlex.quote(x) for x in [Path(sys.executable).name, *sys.argv]),
            "budget_s": self.budget,
            "wall_s": round(time.time() - self.t0, 1),
            "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "settings": {k: v for k, v in vars(self.args).items() if k not in ("phase", "work", "out")},
            "phases": {p.name: self.records[p.name] for p in PHASES if p.name in self.records},
        }
        hf, vl = self.records.get("eval-hf", {}), self.records.get("eval-vllm", {})
        if hf.get("status") == "ok" and vl.get("status") == "ok":
            data["eval_agreement"] = agreement(hf["output_ids"], vl["output_ids"], hf["outputs"], vl["outputs"])
        atomic_write(self.out / f"{self.stem}.json", json.dumps(data, indent=2) + "\n")
        atomic_write(self.out / f"{self.stem}.md", markdown(data) + "\n")


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# The phases (each runs in its own process: `gpu_check.py --phase NAME`)


def is_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def dtype_name(dry_run: bool) -> str:
    return "float32" if dry_run else "bfloat16"


def versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    from unlearn.version import __version__

    out["unlearn"] = __version__
    out["python"] = sys.version.split()[0]
    return out


def nvidia_smi() -> Optional[dict[str, str]]:
    """The first GPU's name, driver and limits as nvidia-smi reports them (None without it)."""
    for keys in (["name", "driver_version", "memory.total", "clocks.max.sm", "power.limit"],
                 ["name", "driver_version"]):  # the short query where a field is unknown to this driver
        try:
            r = subprocess.run(["nvidia-smi", f"--query-gpu={','.join(keys)}", "--format=csv,noheader"],
                               capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if r.returncode == 0 and r.stdout.strip():
            return dict(zip(keys, (v.strip() for v in r.stdout.splitlines()[0].split(","))))
    return None


def phase_env(a: argparse.Namespace, work: Path) -> dict[str, Any]:
    import torch

    import common

    cuda = is_cuda()
    rec: dict[str, Any] = {"status": "ok", "versions": versions(), "machine": common.machine_info(),
                           "torch_cuda": torch.version.cuda, "nvidia_smi": nvidia_smi()}
    if cuda:
        p = torch.cuda.get_device_properties(0)
        rec["gpu"] = {"name": p.name, "memory_bytes": p.total_memory, "multiprocessors": p.multi_processor_count,
                      "compute_capability": f"{p.major}.{p.minor}"}
    dtype = "bfloat16" if cuda or rec["machine"]["cpu_bf16_matmul"] else "float32"
    n, seconds = (8192, 2.0) if cuda else (256, 0.3)
    rec["matmul_peak"] = {"dtype": dtype, "n": n, "seconds": seconds,
                          "flops_per_s": common.matmul_peak(dtype, n=n, seconds=seconds)}
    return rec


def phase_step(a: argparse.Namespace, work: Path, name: str) -> dict[str, Any]:
    from dataclasses import asdict

    import step
    from harness import Setting

    gpu_model, dry_model, variants = STEP_MODELS[name]
    # On the GPU as docs/distributed.md runs it: bf16 weights, train.mixed_precision bf16 (a full
    # fine-tune trains fp32 master weights under it; LoRA's adapters run under it too).
    base = Setting(model=dry_model if a.dry_run else shaped(gpu_model, a), dtype=dtype_name(a.dry_run), batch_size=a.batch,
                   seq_len=a.seq_len, k=a.k, shape="paper", threads=1 if a.dry_run else 0,
                   mixed_precision="no" if a.dry_run else "bf16")
    data = step.run(variants, base, a.warmup, a.rounds, flops=True, tensors=False)
    keep = ("label", "median_s", "min_s", "max_s", "seconds", "tokens_per_step", "padded_tokens_per_step",
            "tokens_per_s", "flops_per_step", "flops_per_s", "fraction_of_matmul_peak", "matmul_peak_dtype",
            "peak_bytes", "peak_kind", "setup_s", "info", "error", "skipped")
    out = {n: {k: v[k] for k in keep if v.get(k) is not None} for n, v in data["variants"].items()}
    status, reason = step_status(out)
    rec = {"status": status, "model": base.model, "setting": asdict(base), "warmup": a.warmup, "rounds": a.rounds,
           "variants": out, "matmul_flops_per_s": data["matmul_flops_per_s"]}
    if reason:
        rec["reason" if status != "ok" else "note"] = reason
    return rec


def shaped(model: str, a: argparse.Namespace) -> str:
    """`random:SHAPE`, or `random:SHAPE:LAYERS` with --layers (the real widths, fewer layers)."""
    return f"{model}:{a.layers}" if a.layers else model


def model_folder(work: Path) -> Path:
    return work / "model"


def phase_model(a: argparse.Namespace, work: Path) -> dict[str, Any]:
    from harness import Setting, load

    name = FOLDER_MODEL[1] if a.dry_run else shaped(FOLDER_MODEL[0], a)
    t = time.perf_counter()
    model, tok = load(Setting(model=name, dtype=dtype_name(a.dry_run)))
    built = time.perf_counter() - t
    folder = model_folder(work)
    shutil.rmtree(folder, ignore_errors=True)
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return {"status": "ok", "model": name, "dtype": dtype_name(a.dry_run), "folder": str(folder),
            "parameters": sum(p.numel() for p in model.parameters()), "build_s": round(built, 2),
            "save_s": round(time.perf_counter() - t - built, 2),
            "bytes": sum(f.stat().st_size for f in folder.iterdir() if f.is_file())}


def write_run_config(a: argparse.Namespace, work: Path, recipe: str) -> Path:
    """A small but real `unlearn run` config on the saved model: the paper's objective and k, the
    benchmark's batch and lengths, paper-shaped synthetic data."""
    import yaml

    import common
    from unlearn.config import ModelConfig
    from unlearn.models import load_tokenizer

    folder = model_folder(work)
    tok = load_tokenizer(ModelConfig(name=str(folder)))
    data = common.paper_shaped_data(tok, a.seq_len, n=64, seed=0)
    files = {}
    for role in ("forget", "retain"):
        files[role] = work / f"{role}.jsonl"
        files[role].write_text("".join(json.dumps({"prompt": p, "response": r}) + "\n" for p, r in data[role]))
    cfg = {
        "model": {"name": str(folder), "dtype": dtype_name(a.dry_run)},
        "data": {"forget": {"path": str(files["forget"])}, "retain": {"path": str(files["retain"])},
                 "mismatch": {"k": a.k}, "max_length": a.seq_len + 64},
        "objective": {"ga": 0.5, "mismatch": 1.0, "kl": 1.0},
        "train": {"lr": 1e-5, "batch_size": a.batch, "max_steps": a.run_steps, "scheduler": "constant",
                  "log_every": 1},
        "output_dir": str(work / f"run-{recipe}"),
        "seed": 0,
    }
    path = work / f"run-{recipe}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def phase_launch(a: argparse.Namespace, work: Path, recipe: str) -> dict[str, Any]:
    config = write_run_config(a, work, recipe)
    # As docs/distributed.md launches them: precision from the unlearn config, no checkpoints.
    overrides = ([] if a.dry_run else ["train.mixed_precision=bf16"]) + ["train.save_every=0"]
    cmd = launch_command(recipe, config, overrides, free_port())
    rec: dict[str, Any] = {"recipe": f"recipes/accelerate/{recipe}.yaml", "command": shlex.join(cmd),
                           "steps_asked": a.run_steps}
    if a.dry_run and recipe != "ddp":
        return {**rec, "status": "skipped",
                "reason": "needs a GPU: accelerate selects FSDP only on GPUs (on a CPU it would silently run DDP)"}
    out = work / f"run-{recipe}"
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    # In this phase's process group (no session of its own): the driver's timeout ends it too.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                            env=child_env(a.dry_run), cwd=ROOT)
    tail: deque[str] = deque(maxlen=60)
    assert proc.stdout is not None
    for line in proc.stdout:  # passed on as it comes, so that a timed-out run's log shows how far it got
        sys.stdout.write(line)
        sys.stdout.flush()
        tail.append(line.rstrip("\n"))
    rc = proc.wait()
    rec["wall_s"] = round(time.perf_counter() - t, 2)
    rec["exit_code"] = rc
    manifest = json.loads((out / "run.json").read_text()) if (out / "run.json").exists() else {}
    rec["run_status"] = manifest.get("status")
    rec["engine"] = manifest.get("engine")
    rec["processes"] = manifest.get("processes")
    rec["trainable_parameters"] = manifest.get("trainable_parameters")
    log = out / "train_log.jsonl"
    if log.exists():
        rec.update(median_step_seconds([json.loads(x) for x in log.read_text().splitlines() if x.strip()]))
    rec["saved_model"] = (out / "model").is_dir()
    shutil.rmtree(out / "model", ignore_errors=True)  # gigabytes on a GPU; the check needs only that it was written
    if rc == 0 and rec["run_status"] == "done":
        rec["status"] = "ok"
        if recipe == "fsdp" and rec["engine"] != "fsdp":  # accelerate fell back to DDP: nothing was sharded
            why = f"run.json says engine {rec['engine']!r}: accelerate did not select FSDP"
            if is_cuda():
                rec["status"], rec["reason"] = "failed", why
            else:
                rec["note"] = why + " (it selects FSDP only on GPUs)"
    else:
        rec["status"] = "oom" if any("out of memory" in x.lower() for x in tail) else "failed"
        rec["reason"] = f"exit code {rc}, run.json status {rec['run_status']}: {telling_line(tail)[-300:]}"
        rec["output_tail"] = list(tail)[-30:]
    return rec


def telling_line(lines: Sequence[str]) -> str:
    """The line of a failed run's output that says why: unlearn's own `error: ...` line, else the
    last exception line (torchrun's summary of a failed rank comes after the rank's own), else the
    last line."""
    text = [x.strip() for x in lines if x.strip()]
    for pick in (lambda x: x.startswith("error:"),
                 lambda x: ("Error:" in x or "Error(" in x) and "ChildFailedError" not in x and "elastic" not in x):
        found = [x for x in text if pick(x)]
        if found:
            return found[-1]
    return text[-1] if text else ""


def eval_prompts(n: int) -> list[str]:
    """n distinct questions (benchmarks/generate.py's, numbered after the first round)."""
    from generate import QUESTIONS

    return [QUESTIONS[i % len(QUESTIONS)] + (f" (Question {i // len(QUESTIONS) + 1}.)" if i >= len(QUESTIONS) else "")
            for i in range(n)]


def eval_setup(a: argparse.Namespace, work: Path, tok: Any) -> tuple[Any, list[str], Any, list[list[int]], set[int]]:
    from unlearn.data import Encoder
    from unlearn.evaluate.generate import GenerationSettings, end_of_turn_ids, prompt_ids

    encoder = Encoder(tok, "qa", 1024)
    prompts = eval_prompts(a.prompts)
    settings = GenerationSettings(max_new_tokens=a.max_new_tokens, batch_size=a.eval_batch)
    ids = prompt_ids(encoder, prompts, settings.max_prompt_tokens)
    return encoder, prompts, settings, ids, set(end_of_turn_ids(encoder))


def phase_eval_hf(a: argparse.Namespace, work: Path) -> dict[str, Any]:
    from dataclasses import replace

    import common
    from unlearn.config import ModelConfig
    from unlearn.evaluate.generate import decode_output, generate_ids, stop_strings
    from unlearn.models import load_model

    t = time.perf_counter()
    model, tok = load_model(ModelConfig(name=str(model_folder(work)), dtype=dtype_name(a.dry_run)))
    model.to(common.device())
    load_s = time.perf_counter() - t
    encoder, prompts, settings, ids, eos = eval_setup(a, work, tok)
    stops = stop_strings(encoder)
    generate_ids(model, encoder, prompts[: settings.batch_size], replace(settings, max_new_tokens=4))  # warm-up

    def timed(s: Any) -> tuple[list[float], list[str], list[list[int]]]:
        # Three runs, median: on the H200 the first of two full runs took 15.4 s and the second 5.7 s.
        seconds, texts, new = [], [], []
        for _ in range(3):
            common.sync()
            t = time.perf_counter()
            got, new = generate_ids(model, encoder, prompts, s)  # what generate() decodes, decoded alike
            texts = [decode_output(tok, p, n, False, stops) for p, n in zip(got, new)]
            common.sync()
            seconds.append(time.perf_counter() - t)
        return seconds, texts, new

    seconds, texts, new = timed(settings)
    rows = [until_eos(n, eos) for n in new]
    new_tokens = sum(len(r) + done for r, done in rows)
    med = statistics.median(seconds)
    rec = {"status": "ok", "backend": "hf", "function": "unlearn.evaluate.generate.generate_ids",
           "dtype": dtype_name(a.dry_run), "prompts": len(prompts), "max_new_tokens": settings.max_new_tokens,
           "batch_size": settings.batch_size, "load_s": round(load_s, 2), "run_seconds": seconds, "median_s": med,
           "new_tokens": new_tokens, "tokens_per_s": new_tokens / med, "finished_at_eos": sum(d for _, d in rows),
           "outputs": texts, "output_ids": [r for r, _ in rows]}
    if len(prompts) > settings.batch_size:  # the same prompts in one batch, as vLLM schedules them
        one = replace(settings, batch_size=len(prompts))
        s1, _, new1 = timed(one)
        tokens1 = sum(len(r) + done for r, done in (until_eos(n, eos) for n in new1))
        rec["one_batch"] = {"batch_size": len(prompts), "run_seconds": s1, "median_s": statistics.median(s1),
                            "new_tokens": tokens1, "tokens_per_s": tokens1 / statistics.median(s1)}
    return rec


def phase_eval_vllm(a: argparse.Namespace, work: Path) -> dict[str, Any]:
    if a.dry_run:
        return {"status": "skipped", "reason": "needs a GPU (vLLM runs on GPUs only)"}
    try:
        from vllm import LLM, SamplingParams
    except Exception as e:  # not installed, or installed for another torch: either way not run
        return {"status": "skipped", "reason": f"vllm not installed or not importable ({type(e).__name__}: "
                                               f"{str(e).splitlines()[0] if str(e) else ''})"}
    from unlearn.config import ModelConfig
    from unlearn.evaluate.generate import cut_at_stop, stop_strings
    from unlearn.models import load_tokenizer

    tok = load_tokenizer(ModelConfig(name=str(model_folder(work))))
    encoder, prompts, settings, ids, eos = eval_setup(a, work, tok)
    t = time.perf_counter()
    # skip_tokenizer_init: prompts go in as the evaluation's own token ids and come back as ids,
    # decoded below exactly as unlearn.evaluate.generate decodes; vLLM's tokenizer plays no part.
    llm = LLM(model=str(model_folder(work)), dtype="bfloat16", seed=0, gpu_memory_utilization=a.vllm_memory,
              max_model_len=1024, max_num_seqs=max(len(ids), 1), enforce_eager=a.vllm_eager,
              skip_tokenizer_init=True)
    init_s = time.perf_counter() - t
    params = SamplingParams(temperature=0.0, max_tokens=settings.max_new_tokens, stop_token_ids=sorted(eos),
                            detokenize=False)
    warm = SamplingParams(temperature=0.0, max_tokens=4, stop_token_ids=sorted(eos), detokenize=False)
    llm.generate([{"prompt_token_ids": x} for x in ids[: settings.batch_size]], warm, use_tqdm=False)
    seconds, outs = [], []
    for _ in range(2):
        t = time.perf_counter()
        outs = llm.generate([{"prompt_token_ids": x} for x in ids], params, use_tqdm=False)
        seconds.append(time.perf_counter() - t)
    rows = [until_eos(list(o.outputs[0].token_ids), eos) for o in outs]
    rows = [(r, done or o.outputs[0].finish_reason == "stop") for (r, done), o in zip(rows, outs)]
    stops = stop_strings(encoder)
    texts = [cut_at_stop(tok.decode(r, skip_special_tokens=True), stops).strip() for r, _ in rows]
    new_tokens = sum(len(r) + done for r, done in rows)
    med = statistics.median(seconds)
    return {"status": "ok", "backend": "vllm", "dtype": "bfloat16", "enforce_eager": a.vllm_eager,
            "prompts": len(ids), "max_new_tokens": settings.max_new_tokens, "init_s": round(init_s, 2),
            "run_seconds": seconds, "median_s": med, "new_tokens": new_tokens, "tokens_per_s": new_tokens / med,
            "finished_at_eos": sum(d for _, d in rows), "outputs": texts, "output_ids": [r for r, _ in rows]}


def run_phase(name: str, a: argparse.Namespace, work: Path) -> dict[str, Any]:
    if name in STEP_MODELS:
        return phase_step(a, work, name)
    if name in ("ddp", "fsdp"):
        return phase_launch(a, work, name)
    return {"env": phase_env, "model": phase_model, "eval-hf": phase_eval_hf, "eval-vllm": phase_eval_vllm}[name](a, work)


def phase_main(a: argparse.Namespace) -> None:
    """One phase, in its own process: its record goes to WORK/phases/NAME.json."""
    import traceback

    work = Path(a.work)
    try:
        rec = run_phase(a.phase, a, work)
    except Exception as e:
        oom = type(e).__name__ == "OutOfMemoryError" or "out of memory" in str(e).lower()
        rec = {"status": "oom" if oom else "failed",
               "reason": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:500],
               "traceback": traceback.format_exc()[-3000:]}
        traceback.print_exc()
    atomic_write(work / "phases" / f"{a.phase}.json", json.dumps(rec, indent=2, default=str) + "\n")


# --------------------------------------------------------------------------------------------
# The Markdown summary


def fmt(v: Any, spec: str = ".2f", scale: float = 1.0, unit: str = "") -> str:
    if v is None or (isinstance(v, float) and v != v):
        return ""
    return f"{v / scale:{spec}}{unit}"


def markdown(data: dict[str, Any]) -> str:
    ph = data["phases"]
    env = ph.get("env", {})
    gpu = ((env.get("gpu") or {}).get("name") or "no GPU") if env.get("status") == "ok" else "machine not read"
    where = "dry run on the CPU, tiny models" if data["dry_run"] else gpu
    layers = (data.get("settings") or {}).get("layers")
    lines = [f"**{data['benchmark']}** ({data['when']}; {where}"
             + (f"; random models cut to {layers} decoder layer(s)" if layers else "")
             + f"; {data['wall_s']:.0f} s of a {data['budget_s']:.0f} s budget)."]
    if env.get("status") == "ok":
        v, smi, mp = env["versions"], env.get("nvidia_smi") or {}, env["matmul_peak"]
        lines.append(
            f"Machine: {gpu}" + (f", driver {smi['driver_version']}" if smi.get("driver_version") else "")
            + (f", CUDA {env['torch_cuda']}" if env.get("torch_cuda") else "")
            + f"; CPU {env['machine'].get('cpu')}; " + ", ".join(f"{k} {v[k]}" for k in (*LIBRARIES, "unlearn"))
            + f". Dense {mp['dtype']} matmul peak measured here: {mp['flops_per_s'] / 1e12:.1f} TFLOP/s "
            f"({mp['n']}^3, best over {mp['seconds']} s).")
    rows = []
    for p in PHASES:
        r = ph.get(p.name)
        if r is None:
            rows.append([p.name, "not run", "", p.title])
            continue
        rows.append([p.name, r["status"], fmt(r.get("seconds"), ".0f"),
                     r.get("reason") or r.get("note") or p.title])
    lines += ["", common_table(["phase", "status", "s", "what / why not"], rows)]

    steps = [(p.name, ph[p.name]) for p in PHASES if p.name in STEP_MODELS and ph.get(p.name, {}).get("variants")]
    if steps:
        s0 = steps[0][1]["setting"]
        lines += ["", f"Unlearning step (benchmarks/step.py's workers, `unlearn.train.train_step`): batch "
                      f"{s0['batch_size']}, sequence length {s0['seq_len']}, k = {s0['k']}, paper-shaped data, the "
                      f"paper's objective; weights {s0['dtype']}, train.mixed_precision {s0.get('mixed_precision', 'no')}"
                      + (" (a full fine-tune trains fp32 master weights under bf16 autocast, as `unlearn run` does)"
                         if s0["dtype"] == "bfloat16" else "")
                      + f"; {steps[0][1]['warmup']} warm-up + "
                      f"{steps[0][1]['rounds']} timed steps, median. MFU: FLOPs counted by torch's FlopCounterMode "
                      "on one step / median seconds / the dense matmul peak measured in the same process.", ""]
        rows = []
        for name, r in steps:
            for vn, v in r["variants"].items():
                if not v.get("median_s"):
                    rows.append([r["model"], v.get("label", vn), f"not timed: {v.get('error') or v.get('skipped')}",
                                 "", "", "", "", ""])
                    continue
                rows.append([r["model"], v.get("label", vn),
                             f"{v['median_s']:.3f} ({v['min_s']:.3f}-{v['max_s']:.3f})",
                             fmt(v.get("tokens_per_step"), ".0f"), fmt(v.get("tokens_per_s"), ".0f"),
                             fmt(v.get("flops_per_step"), ".3g", 1e12),
                             fmt(v.get("fraction_of_matmul_peak"), ".1f", 0.01, " %"),
                             fmt(v.get("peak_bytes"), ".1f", 2**30)])
        lines.append(common_table(["model", "variant", "s/step median (min-max)", "tokens/step", "tokens/s",
                                   "TFLOP/step", "MFU", "peak GiB"], rows))
        for name, r in steps:
            if r["status"] == "oom":
                lines += ["", f"`{name}`: out of memory ({r.get('reason', '')})."]

    runs = [(n, ph[n]) for n in ("ddp", "fsdp") if n in ph]
    if runs:
        rows = [[n, r["status"], fmt(r.get("wall_s"), ".1f"), r.get("engine") or "",
                 str(r.get("steps") or ""), fmt(r.get("median_step_s"), ".3f"), fmt(r.get("tokens_per_s"), ".0f"),
                 "yes" if r.get("saved_model") else ("" if r["status"] == "skipped" else "no")] for n, r in runs]
        lines += ["", "`unlearn run` through the accelerate recipes, one process (full fine-tune of the saved "
                      "random-init model; wall time includes the launcher, loading and the final save; run.json "
                      "calls a one-process DDP run `single`, though accelerate still wraps the model in DDP):", "",
                  common_table(["recipe", "status", "wall s", "engine (run.json)", "steps", "median s/step",
                                "tokens/s", "model saved"], rows)]
        for n, r in runs:
            if r.get("command"):
                lines += ["", f"{n}: `{r['command']}`"]

    evals = [(n, ph[n]) for n in ("eval-hf", "eval-vllm") if n in ph]
    if evals:
        rows = []
        for n, r in evals:
            if r.get("status") != "ok":
                rows.append([n, r.get("status", ""), "", "", "", "", r.get("reason", "")])
                continue
            rows.append([n, "ok", str(r["prompts"]), str(r["new_tokens"]), fmt(r["median_s"], ".2f"),
                         fmt(r["tokens_per_s"], ".0f"),
                         f"engine start {r['init_s']:.0f} s" if "init_s" in r else
                         f"batches of {r.get('batch_size')}; model load {r['load_s']:.1f} s"])
            one = r.get("one_batch")
            if one:
                rows.append([n, "ok", str(r["prompts"]), str(one["new_tokens"]), fmt(one["median_s"], ".2f"),
                             fmt(one["tokens_per_s"], ".0f"), f"one batch of {one['batch_size']}"])
        lines += ["", "Evaluation generation, greedy, the saved random-init model, the same prompt token ids "
                      "(qa template); HF is the evaluation's own decoding loop, `unlearn.evaluate.generate` (batches of "
                      f"{evals[0][1].get('batch_size', '?')}, and all prompts in one batch; left-padded, sorted, ended rows "
                      "dropped); median of 3 runs after a warm-up:",
                  "", common_table(["backend", "status", "prompts", "new tokens", "s", "tokens/s", "note"], rows)]
        ag = data.get("eval_agreement")
        if ag:
            lines += ["", f"Greedy agreement HF vs vLLM: identical token sequences {ag['identical_token_sequences']}"
                          f"/{ag['prompts']}, identical texts {ag['identical_texts']}/{ag['prompts']}, mean common "
                          f"prefix {100 * ag['mean_common_prefix_fraction']:.0f} % (random weights make near-ties "
                          "common, so bf16 kernel differences flip tokens more often than with a trained model)."]
    return "\n".join(lines)


def common_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    import common

    return common.table(headers, [[str(c).replace("|", "/").replace("\n", " ") for c in r] for r in rows])


# --------------------------------------------------------------------------------------------


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny models: the same phases and code paths")
    ap.add_argument("--out", default=str(HERE / "results"), help="where gpu_check.{json,md,log} go")
    ap.add_argument("--budget", type=float, default=0.0,
                    help=f"seconds for the whole check (default {GPU_BUDGET_S:.0f}; dry run {DRY_BUDGET_S:.0f})")
    ap.add_argument("--only", default="", help=f"comma-separated phases to (re)run: {', '.join(BY_NAME)}")
    ap.add_argument("--work", default="", help="scratch folder (default: a new temporary one, removed at the end)")
    ap.add_argument("--keep-work", action="store_true", help="keep the temporary scratch folder")
    ap.add_argument("--verbose", action="store_true", help="print the phases' own output too (it is always in the log)")
    ap.add_argument("--batch", type=int, default=0, help="train.batch_size of the step and run phases (default 2)")
    ap.add_argument("--seq-len", type=int, default=0, help="sequence length (default 128; dry run 64)")
    ap.add_argument("--k", type=int, default=0, help="mismatch responses per forget example (default 5; dry run 2)")
    ap.add_argument("--warmup", type=int, default=-1, help="warm-up steps per variant (default 3; dry run 1)")
    ap.add_argument("--rounds", type=int, default=0, help="timed steps per variant (default 8; dry run 2)")
    ap.add_argument("--run-steps", type=int, default=0, help="train.max_steps of the ddp/fsdp runs (default 10; dry 2)")
    ap.add_argument("--prompts", type=int, default=0, help="evaluation prompts (default 64; dry run 8)")
    ap.add_argument("--max-new-tokens", type=int, default=0, help="eval.max_new_tokens (default 64; dry run 8)")
    ap.add_argument("--eval-batch", type=int, default=0, help="eval.batch_size of the HF backend (default 8)")
    ap.add_argument("--layers", type=int, default=0,
                    help="decoder layers of the random models (default: the real count); fewer for a smaller GPU")
    ap.add_argument("--vllm-memory", type=float, default=0.5, help="vLLM's gpu_memory_utilization")
    ap.add_argument("--vllm-eager", action="store_true", help="vLLM without CUDA graphs or compilation (faster start)")
    ap.add_argument("--phase", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    dry = a.dry_run
    # 8 timed steps on a GPU: of 4 (H200, 2026-11-30), one was often 3-6x the others.
    for key, gpu, cpu in (("batch", 2, 2), ("seq_len", 128, 64), ("k", 5, 2), ("rounds", 8, 2), ("run_steps", 10, 2),
                          ("prompts", 64, 8), ("max_new_tokens", 64, 8), ("eval_batch", 8, 4)):
        if not getattr(a, key):
            setattr(a, key, cpu if dry else gpu)
    if a.warmup < 0:
        a.warmup = 1 if dry else 3
    return a


def main(argv: Optional[Sequence[str]] = None) -> int:
    a = parse_args(argv)
    if a.phase:
        phase_main(a)
        # The record is written: leave without the libraries' teardown, which can hang (vLLM's engine
        # process, NCCL); the driver ends whatever this process started.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return Driver(a).run()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
