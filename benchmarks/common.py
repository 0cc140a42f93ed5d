"""Shared pieces of the benchmarks: the machine, its matmul peak, FLOP counts, peak memory,
synthetic data of controlled token lengths, and result files.

Benchmarks are scripts, not tests: `make bench` runs them all (benchmarks/run_all.py). Each writes
benchmarks/results/NAME.json (every number, with the command and the machine) and NAME.md (the
table that docs/performance.md shows).
"""

from __future__ import annotations

import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from unlearn.memory import PeakMemory

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
ROOT = HERE.parent

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# --------------------------------------------------------------------------------------------
# The machine


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def machine_info() -> dict[str, Any]:
    import torch

    flags = cpu_flags()
    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": model,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_features": sorted(f for f in flags if f.startswith(("avx512", "amx")) or f in ("avx2", "fma")),
        "cpu_bf16_matmul": bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    try:
        info["load_average"] = list(os.getloadavg())
    except OSError:
        pass
    return info


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def matmul_peak(dtype_name: str = "float32", n: int | None = None, seconds: float = 1.0) -> float:
    """This machine's dense matmul throughput in FLOP/s: the best of repeated n x n matmuls.

    The best (not the median) is the hardware's reachable limit; noise only ever slows it down.
    """
    import torch

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype_name]
    dev = device()
    n = n or (8192 if dev == "cuda" else 1024)
    a = torch.randn(n, n, device=dev).to(dtype)
    b = torch.randn(n, n, device=dev).to(dtype)
    torch.matmul(a, b)
    sync()
    best = float("inf")
    t_end = time.perf_counter() + seconds
    reps = 0
    while time.perf_counter() < t_end or reps < 3:
        t0 = time.perf_counter()
        torch.matmul(a, b)
        sync()
        best = min(best, time.perf_counter() - t0)
        reps += 1
    return 2 * n**3 / best


class Peak(PeakMemory):
    """unlearn's PeakMemory (the measure `unlearn compare` reports) on this machine's device."""

    def __init__(self) -> None:
        super().__init__(device())


def tensor_peak(fn: Callable[[], Any]) -> int | None:
    """Peak bytes of live torch tensors on the CPU while fn() runs (the weights, copies and optimizer
    state it touches included), from torch's profiler memory timeline; None where it cannot tell.

    Unlike the RSS high-water mark it leaves out the libraries and the memory the C allocator keeps
    after tensors are freed: what the step needs, not what this process happened to hold.
    """
    import json
    import tempfile
    import warnings

    import torch
    from torch.profiler import ProfilerActivity, profile

    if torch.cuda.is_available():
        return None  # torch.cuda.max_memory_allocated already counts tensors
    try:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True,
                     with_stack=True) as prof:
            fn()
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # export_memory_timeline is deprecated in favour of a CUDA-only API
            path = Path(tmp) / "timeline.json"
            prof.export_memory_timeline(str(path), device="cpu")
            _times, sizes = json.loads(path.read_text())
        return int(max(sum(row) for row in sizes)) if sizes else None
    except Exception as e:  # a measurement aid: the benchmark goes on without it
        progress(f"tensor peak not measured: {type(e).__name__}: {e}")
        return None


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs that fn() executes (forward and backward), counted by torch's FlopCounterMode.

    torch's table lacks the CPU flash-attention kernels; they are added with the same formulas
    as the GPU ones.
    """
    import torch
    from torch.utils import flop_counter as fc

    aten = torch.ops.aten

    def fwd(query, key, value, *args, out_shape=None, **kwargs):  # shapes (FlopCounterMode converts)
        return fc.sdpa_flop_count(query, key, value)

    def bwd(grad_out, query, key, value, *args, out_shape=None, **kwargs):
        return fc.sdpa_backward_flop_count(grad_out, query, key, value)

    custom = {}
    for name, formula in (("_scaled_dot_product_flash_attention_for_cpu", fwd),
                          ("_scaled_dot_product_flash_attention_for_cpu_backward", bwd)):
        if hasattr(aten, name):
            custom[getattr(aten, name)] = formula
    with fc.FlopCounterMode(display=False, custom_mapping=custom) as counter:
        fn()
    return int(counter.get_total_flops())


# --------------------------------------------------------------------------------------------
# Statistics and tables


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def linear_fit(xs: Sequence[float], ys: Sequence[float]) -> dict[str, float]:
    """Least squares y = a + b x, its R^2, and the log-log slope (1: linear, 2: quadratic)."""
    import math

    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    b = sxy / sxx if sxx else float("nan")
    a = my - b * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - (a + b * x)) ** 2 for x, y in zip(xs, ys))
    r2 = 1 - ss_res / ss_tot if ss_tot else float("nan")
    lx = [math.log(x) for x in xs]
    ly = [math.log(y) for y in ys]
    mlx, mly = sum(lx) / n, sum(ly) / n
    slxx = sum((x - mlx) ** 2 for x in lx)
    slope = sum((x - mlx) * (y - mly) for x, y in zip(lx, ly)) / slxx if slxx else float("nan")
    return {"intercept": a, "slope": b, "r2": r2, "loglog_slope": slope}


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table."""
    def cell(v: Any) -> str:
        return v if isinstance(v, str) else f"{v:g}" if isinstance(v, float) else str(v)

    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(out)


def gib(n: float) -> str:
    return f"{n / 2**30:.2f}"


def write_results(name: str, data: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    """benchmarks/results/NAME.json and NAME.md, written atomically."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = {"benchmark": name, "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "machine": machine_info(), **data}
    paths = []
    for suffix, text in ((".json", json.dumps(data, indent=2) + "\n"), (".md", markdown.rstrip() + "\n")):
        path = RESULTS / f"{name}{suffix}"
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
        paths.append(path)
    return paths[0], paths[1]


def machine_line(info: dict[str, Any]) -> str:
    feats = ", ".join(info.get("cpu_features", [])) or "none"
    gpu = f"; GPU {info['gpu']}" if info.get("gpu") else "; no GPU"
    return (f"{info.get('cpu')} ({info.get('cpu_count')} cores, torch threads {info.get('torch_threads')}, "
            f"features: {feats}; bf16 matmul kernels: {'yes' if info.get('cpu_bf16_matmul') else 'no'}){gpu}; "
            f"torch {info.get('torch')}, transformers {info.get('transformers')}")


# --------------------------------------------------------------------------------------------
# Data of controlled token lengths

WORDS = (
    "the of and to in is that it was for on are as with his they at be this from have or by one had "
    "not but what all were when we there can an your which their said if do will each about how up "
    "out them then she many some so these would other into has more her two like him see time could "
    "no make than first been its who now people my made over did down only way find use may water "
    "long little very after words called just where most know get through back much before go good "
    "new write our used me man too any day same right look think also around another came come work "
    "three word must because does part even place well such here take why things help put years "
    "different away again off went old number great tell men say small every found still between name "
    "should home big give air line set own under read last never us left end along while might next "
    "sound below saw something thought both few those always looked show large often together asked "
    "house world going want school important until form food keep children feet land side without boy "
    "once animals life enough took sometimes four head above kind began almost live page got earth need "
    "far hand high year mother light parts country father let night following picture being study "
    "second eyes soon times story boys since white days ever paper hard near sentence better best across"
).split()


def text_of_tokens(tokenizer: Any, n: int, rng: random.Random) -> str:
    """A text of common English words that tokenizes to about n tokens (without special tokens)."""
    words: list[str] = []
    while True:
        words.extend(rng.choice(WORDS) for _ in range(max(4, n)))
        ids = tokenizer(" ".join(words), add_special_tokens=False)["input_ids"]
        if len(ids) >= n:
            text = tokenizer.decode(ids[:n]).strip()
            return text[0].upper() + text[1:] if text else text


def synthetic_pairs(tokenizer: Any, count: int, prompt_tokens: tuple[int, int], response_tokens: tuple[int, int],
                    seed: int) -> list[tuple[str, str]]:
    """`count` (prompt, response) pairs, token lengths drawn uniformly from the given ranges."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        p = text_of_tokens(tokenizer, rng.randint(*prompt_tokens), rng)
        r = text_of_tokens(tokenizer, rng.randint(*response_tokens), rng)
        out.append((p.rstrip(".") + "?", r + "."))
    return out


# The shapes of the paper's harmful-response task: PKU-SafeRLHF forget pairs (a question of
# ~15-20 tokens, a response of ~70 words that fills the rest of the sequence) and TruthfulQA normal
# pairs and mismatch answers (a question of ~10-15 tokens, an answer of ~8-15 tokens).
TEMPLATE_TOKENS = 10  # "### Question: " ... "\n### Answer:" + EOS, about this many tokens


def paper_shaped_data(tokenizer: Any, seq_len: int, n: int = 64, shape: str = "paper", seed: int = 0
                      ) -> dict[str, list[tuple[str, str]]]:
    """forget / retain / pool examples. shape='paper': forget rows fill seq_len, retain rows and
    mismatch answers are TruthfulQA-short. shape='full': every row fills seq_len (no padding to
    save: the least favourable case for padding-to-the-longest and packing)."""
    fp = (min(16, seq_len // 4), min(20, seq_len // 4))
    fr_len = max(4, seq_len - TEMPLATE_TOKENS - fp[1])
    forget = synthetic_pairs(tokenizer, n, fp, (fr_len, fr_len), seed)
    if shape == "full":
        retain = synthetic_pairs(tokenizer, n, fp, (fr_len, fr_len), seed + 1)
        pool = [r for _, r in synthetic_pairs(tokenizer, n, (1, 1), (fr_len, fr_len), seed + 2)]
    elif shape == "paper":
        short_p = (min(10, seq_len // 4), min(15, seq_len // 4))
        short_r = (min(8, seq_len // 4), min(15, seq_len // 4))
        retain = synthetic_pairs(tokenizer, n, short_p, short_r, seed + 1)
        pool = [r for _, r in synthetic_pairs(tokenizer, 4 * n, (1, 1), short_r, seed + 2)]
    else:
        raise ValueError(f"unknown data shape {shape!r} (paper, full)")
    return {"forget": forget, "retain": retain, "pool": pool}


def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
