"""Seconds per unlearning step, tokens/s, peak memory and achieved FLOP/s: `unlearn` as shipped
against the authors' compute pattern (benchmarks/harness.py), side by side in one run.

    python benchmarks/step.py                                   # the issue's setting, the main table
    python benchmarks/step.py --variants ablation --name step_ablation
    python benchmarks/step.py --variants kernels --name step_kernels --no-flops --no-tensor-peak
    python benchmarks/step.py --model random:llama-2-7b --dtype bfloat16 --variants unlearn-lora  # GPU

Each variant runs in its own worker process (so that each has its own peak memory), all loaded
at once. The parent sends "step" to one worker at a time, round after round, rotating the order
each round, so machine noise hits every variant alike. The median of the timed rounds is
reported, after the warm-up rounds. FLOPs are counted in one extra step per variant (torch's
FlopCounterMode) and divided by the median time; the machine's dense matmul throughput is
measured in the same run, before and after, and the better of the two is the reference.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from harness import Setting  # noqa: E402

# name -> overrides of Setting. The default dtype and data come from the command line.
VARIANTS: dict[str, dict[str, Any]] = {
    "authors-full-longest": dict(impl="authors", lora=False, pad="longest"),
    "authors-lora-longest": dict(impl="authors", lora=True, pad="longest"),
    # Their best case given the allocator setting unlearn's command line makes (keep_freed_memory).
    "authors-full-longest-kept": dict(impl="authors", lora=False, pad="longest", keep_freed_memory=True),
    "authors-lora-longest-kept": dict(impl="authors", lora=True, pad="longest", keep_freed_memory=True),
    "authors-full": dict(impl="authors", lora=False),
    "authors-lora": dict(impl="authors", lora=True),
    "unlearn-full": dict(impl="unlearn", lora=False),
    "unlearn-lora": dict(impl="unlearn", lora=True),
    "unlearn-full-nopack": dict(impl="unlearn", lora=False, pack_rows=False),
    "unlearn-lora-nopack": dict(impl="unlearn", lora=True, pack_rows=False),
    "unlearn-full-bf16": dict(impl="unlearn", lora=False, mixed_precision="bf16"),
    "unlearn-lora-bf16": dict(impl="unlearn", lora=True, mixed_precision="bf16"),
    "unlearn-full-ckpt": dict(impl="unlearn", lora=False, gradient_checkpointing=True),
    "unlearn-lora-ckpt": dict(impl="unlearn", lora=True, gradient_checkpointing=True),
    "unlearn-lora-compile": dict(impl="unlearn", lora=True, compile=True),
    "unlearn-full-foreach": dict(impl="unlearn", lora=False, fused_adamw=False),
    "unlearn-lora-nochunk": dict(impl="unlearn", lora=True, chunk_vocab=False),
    "unlearn-full-default-malloc": dict(impl="unlearn", lora=False, keep_freed_memory=False),
    "unlearn-full-dense-attention": dict(impl="unlearn", lora=False, unit_attention=False),
    "unlearn-lora-dense-attention": dict(impl="unlearn", lora=True, unit_attention=False),
    "unlearn-lora-unfused": dict(impl="unlearn", lora=True, fuse_lora=False),
    "unlearn-lora-before-kernels": dict(impl="unlearn", lora=True, unit_attention=False, fuse_lora=False),
    "unlearn-lora-default-malloc": dict(impl="unlearn", lora=True, keep_freed_memory=False),
}
GROUPS = {
    # The authors' best case, and their padding to 128 in a run of its own: with unlearn's workers
    # keeping freed memory (unlearn.memory.keep_freed_memory) six workers at once no longer fit 24 GB
    # (the kernel killed the authors' full fine-tune padded to 128, twice).
    "main": ["authors-full-longest", "authors-lora-longest", "unlearn-full", "unlearn-lora"],
    "fixed": ["authors-full", "authors-lora", "unlearn-full", "unlearn-lora"],
    "ablation": ["unlearn-lora", "unlearn-lora-nopack", "unlearn-lora-bf16", "unlearn-lora-ckpt",
                 "unlearn-full", "unlearn-full-foreach"],
    # The allocator setting (unlearn.memory.keep_freed_memory), each side with and without it. Eight
    # workers at once do not fit 24 GB (the kernel killed one), so each kind has its own run.
    "allocator-full": ["authors-full-longest", "authors-full-longest-kept", "unlearn-full",
                       "unlearn-full-default-malloc"],
    "allocator-lora": ["authors-lora-longest", "authors-lora-longest-kept", "unlearn-lora",
                       "unlearn-lora-default-malloc"],
    "chunk": ["unlearn-lora", "unlearn-lora-nochunk"],
    # Attention unit by unit over packed rows (unlearn.models.attention) and LoRA's update inside its
    # matmul (unlearn.models.lora), each switched off, and both.
    "kernels": ["unlearn-lora", "unlearn-lora-dense-attention", "unlearn-lora-unfused", "unlearn-lora-before-kernels",
                "unlearn-full", "unlearn-full-dense-attention"],
}
MARK = "@@bench "


# --------------------------------------------------------------------------------------------
# Worker: one variant, driven over stdin/stdout


def worker(setting_json: str) -> None:
    import torch

    from harness import AuthorsStep, UnlearnStep, load

    setting = Setting(**json.loads(setting_json))
    if setting.keeps_freed_memory:
        from unlearn.memory import keep_freed_memory

        keep_freed_memory()
    reply = sys.stdout
    sys.stdout = sys.stderr  # anything libraries print must not mix with the replies

    def send(obj: dict[str, Any]) -> None:
        reply.write(MARK + json.dumps(obj) + "\n")
        reply.flush()

    t0 = time.perf_counter()
    if setting.threads:
        torch.set_num_threads(setting.threads)
    peak = common.Peak()
    torch.manual_seed(setting.seed)
    model, tok = load(setting)
    data = common.paper_shaped_data(tok, setting.seq_len, shape=setting.shape, seed=setting.seed)
    cls = AuthorsStep if setting.impl == "authors" else UnlearnStep
    try:
        runner = cls(setting, model, tok, data)
    except torch.OutOfMemoryError as e:
        send({"error": f"out of memory while setting up: {str(e).splitlines()[0]}"})
        return
    del model
    peak.reset()  # the peak from here on: weights, copies, optimizer state and the steps
    send({"ready": True, "setup_s": time.perf_counter() - t0, "info": runner.info()})
    index = 0
    for line in sys.stdin:
        cmd = line.strip()
        try:
            if cmd == "step":
                common.sync()
                t, c = time.perf_counter(), time.process_time()
                out = runner.step(index)
                common.sync()
                out["seconds"] = time.perf_counter() - t
                out["cpu_seconds"] = time.process_time() - c  # all threads; less sensitive to other load
                index += 1
                send(out)
            elif cmd == "flops":  # a step (a warm-up one) with its FLOPs counted; its time is not used
                box: dict[str, Any] = {}
                flops = common.count_flops(lambda: box.update(runner.step(index)))
                index += 1
                send({"flops": flops, "seconds": None, **box})
            elif cmd == "tensors":  # a step with live tensor bytes tracked (CPU); its time is not used
                box = {}
                tensors = common.tensor_peak(lambda: box.update(runner.step(index)))
                index += 1
                send({"tensor_peak_bytes": tensors, **box})
            elif cmd == "peak":
                send({"peak_bytes": peak.read(), "peak_kind": peak.kind})
            elif cmd == "quit":
                send({"bye": True})
                return
        except torch.OutOfMemoryError as e:
            send({"error": f"out of memory: {str(e).splitlines()[0]}"})
            return


class Worker:
    def __init__(self, name: str, setting: Setting):
        self.name, self.setting = name, setting
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", json.dumps(asdict(setting))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        )
        self.error: str | None = None

    def ask(self, cmd: str | None) -> dict[str, Any]:
        if self.error:
            return {"error": self.error}
        if cmd is not None:
            self.proc.stdin.write(cmd + "\n")
            self.proc.stdin.flush()
        for line in self.proc.stdout:
            if line.startswith(MARK):
                out = json.loads(line[len(MARK):])
                if "error" in out:
                    self.error = out["error"]
                return out
        self.error = f"worker exited with code {self.proc.wait()}"
        return {"error": self.error}

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.ask("quit")
            except (BrokenPipeError, ValueError):
                pass
            self.proc.wait(timeout=60)


# --------------------------------------------------------------------------------------------
# The run


def run(names: list[str], base: Setting, warmup: int, rounds: int, flops: bool, slow_bf16: bool = False,
        tensors: bool = True, turn: int = 1) -> dict[str, Any]:
    """`turn`: steps each worker runs back to back when its turn comes, the last one timed (1: one
    step a turn, as before). A worker waits while the others step, and on a machine that slows
    memory left untouched for a second (docs/performance.md), one step a turn starts every step
    cold; a training run steps back to back, which a turn of 2 or more measures."""
    settings = {n: Setting(**{**asdict(base), **VARIANTS[n]}) for n in names}
    if base.threads:  # the matmul peak with the workers' thread count
        import torch

        torch.set_num_threads(base.threads)
    for n, s in settings.items():
        if s.impl == "authors":
            s.dtype = "float32"  # their script loads fp32 whatever the model
    peaks = {"float32": [common.matmul_peak("float32")]}
    if any(s.mixed_precision == "bf16" or s.dtype == "bfloat16" for s in settings.values()):
        peaks["bfloat16"] = [common.matmul_peak("bfloat16", n=None if common.device() == "cuda" else 512)]
    results: dict[str, dict[str, Any]] = {n: {"label": s.label, "setting": asdict(s), "seconds": []}
                                          for n, s in settings.items()}
    info = common.machine_info()
    if not (info["gpu"] or info["cpu_bf16_matmul"] or slow_bf16):
        for n, s in settings.items():
            if s.mixed_precision == "bf16" or s.dtype == "bfloat16":
                results[n]["skipped"] = (
                    f"this CPU has no bf16 matmul kernels (bf16 matmul {peaks['bfloat16'][0] / 1e9:.1f} GFLOP/s "
                    f"against {peaks['float32'][0] / 1e9:.1f} for fp32); --slow-bf16 runs it anyway")
        names = [n for n in names if "skipped" not in results[n]]
        settings = {n: settings[n] for n in names}
    workers: dict[str, Worker] = {}
    try:
        for n, s in settings.items():  # one at a time: loading in parallel would only contend
            common.progress(f"[step] loading {n} ...")
            workers[n] = Worker(n, s)
            ready = workers[n].ask(None)
            results[n].update(setup_s=ready.get("setup_s"), info=ready.get("info"), error=ready.get("error"))
        order = [n for n in names if not workers[n].error]
        for r in range(warmup + rounds):
            rot = r % max(1, len(order))
            for n in order[rot:] + order[:rot]:
                for j in range(turn):  # only the turn's last step is recorded
                    # The first warm-up step counts FLOPs (the counter slows it; warm-up times are unused).
                    out = workers[n].ask("flops" if r == 0 and j == 0 and flops and warmup else "step")
                    if "flops" in out:
                        results[n]["flops_per_step"] = out["flops"]
                    if "error" in out:
                        break
                if "error" in out:
                    results[n]["error"] = out["error"]
                    continue
                if r >= warmup:
                    results[n]["seconds"].append(out["seconds"])
                    for key in ("cpu_seconds", "tokens", "padded_tokens", "rows"):
                        results[n].setdefault(key, []).append(out[key])
                    results[n].setdefault("loss", []).append(out["loss"])
            common.progress(f"[step] round {r + 1}/{warmup + rounds}"
                            + ("" if r >= warmup else " (warm-up)") + ": "
                            + ", ".join(f"{n} {results[n]['seconds'][-1]:.2f}s" for n in order
                                        if results[n]["seconds"] and r >= warmup))
            order = [n for n in order if not workers[n].error]
        if flops and not warmup:
            for n in order:
                out = workers[n].ask("flops")
                results[n]["flops_per_step"] = out.get("flops")
        for n in names:
            out = workers[n].ask("peak")
            results[n]["peak_bytes"] = out.get("peak_bytes")
            results[n]["peak_kind"] = out.get("peak_kind")
        if tensors and common.device() == "cpu":  # after the RSS peak was read: profiling has its own cost
            for n in order:
                common.progress(f"[step] live-tensor peak of {n} ...")
                results[n]["tensor_peak_bytes"] = workers[n].ask("tensors").get("tensor_peak_bytes")
    finally:
        for w in workers.values():
            w.close()
    peaks["float32"].append(common.matmul_peak("float32"))
    if "bfloat16" in peaks:
        peaks["bfloat16"].append(common.matmul_peak("bfloat16"))
    matmul = {k: max(v) for k, v in peaks.items()}
    for n, res in results.items():
        secs = res["seconds"]
        if not secs:
            continue
        s = settings[n]
        med = common.median(secs)
        res["median_s"] = med
        res["median_cpu_s"] = common.median(res["cpu_seconds"])
        res["min_s"], res["max_s"] = min(secs), max(secs)
        res["tokens_per_step"] = common.median(res["tokens"])
        res["padded_tokens_per_step"] = common.median(res["padded_tokens"])
        res["tokens_per_s"] = res["tokens_per_step"] / med
        peak_dtype = "bfloat16" if (s.mixed_precision == "bf16" or s.dtype == "bfloat16") else "float32"
        if res.get("flops_per_step"):
            res["flops_per_s"] = res["flops_per_step"] / med
            res["fraction_of_matmul_peak"] = res["flops_per_s"] / matmul[peak_dtype]
            res["matmul_peak_dtype"] = peak_dtype
    # Ratios: against the authors' code training the same parameters (full or LoRA) in its best
    # case (padded to each batch's longest row) when it ran, else padded to seq_len, else against
    # unlearn as shipped with the same parameters. The second ratio is against the fixed-length case.
    for n, res in results.items():
        if n not in settings:
            continue
        kind = "lora" if settings[n].lora else "full"
        fixed = results.get(f"authors-{kind}")
        if n.startswith("unlearn") and fixed and fixed.get("median_s") and res.get("median_s"):
            res["speedup_vs_fixed_length"] = fixed["median_s"] / res["median_s"]
        kept = results.get(f"authors-{kind}-longest-kept")
        if n.startswith("unlearn") and kept and kept.get("median_s") and res.get("median_s"):
            res["speedup_vs_same_allocator"] = kept["median_s"] / res["median_s"]
        for ref in (f"authors-{kind}-longest", f"authors-{kind}", f"unlearn-{kind}"):
            if ref in results and results[ref].get("median_s") and res.get("median_s"):
                res["baseline"] = ref
                res["speedup"] = results[ref]["median_s"] / res["median_s"]
                if results[ref].get("peak_bytes") and res.get("peak_bytes"):
                    res["memory_ratio"] = res["peak_bytes"] / results[ref]["peak_bytes"]
                if results[ref].get("tensor_peak_bytes") and res.get("tensor_peak_bytes"):
                    res["tensor_memory_ratio"] = res["tensor_peak_bytes"] / results[ref]["tensor_peak_bytes"]
                break
    return {"variants": results, "matmul_flops_per_s": matmul, "matmul_measurements": peaks}


def markdown(name: str, data: dict[str, Any]) -> str:
    s = data["setting"]
    res = data["variants"]
    rows = []
    for n, r in res.items():
        if r.get("skipped"):
            rows.append([r["label"], f"not run: {r['skipped']}"] + [""] * 9)
            continue
        if r.get("error") and not r.get("median_s"):
            rows.append([r["label"], f"failed: {r['error']}"] + [""] * 9)
            continue
        rows.append([
            r["label"],
            f"{r['median_s']:.2f} ({r['min_s']:.2f}-{r['max_s']:.2f})",
            f"{r['tokens_per_step']:.0f} / {r['padded_tokens_per_step']:.0f}",
            f"{r['tokens_per_s']:.0f}",
            (f"{r['speedup']:.2f}x vs {r['baseline']}" if r.get("speedup") and r["baseline"] != n else "baseline")
            + (f"; {r['speedup_vs_same_allocator']:.2f}x vs their best case with the same allocator setting"
               if r.get("speedup_vs_same_allocator") else "")
            + (f"; {r['speedup_vs_fixed_length']:.2f}x vs padded to {s['seq_len']}"
               if r.get("speedup_vs_fixed_length") and r.get("baseline", "").endswith("-longest") else ""),
            common.gib(r["peak_bytes"]) if r.get("peak_bytes") else "?",
            f"{r['memory_ratio']:.2f}x" if r.get("memory_ratio") and r["baseline"] != n else "",
            (common.gib(r["tensor_peak_bytes"]) + (f" ({r['tensor_memory_ratio']:.2f}x)"
             if r.get("tensor_memory_ratio") and r["baseline"] != n else "")) if r.get("tensor_peak_bytes") else "",
            f"{r['flops_per_step'] / 1e12:.2f}" if r.get("flops_per_step") else "",
            f"{r['flops_per_s'] / 1e9:.1f}" if r.get("flops_per_s") else "",
            f"{100 * r['fraction_of_matmul_peak']:.0f} %" if r.get("fraction_of_matmul_peak") else "",
        ])
    kinds = [r.get("peak_kind") for r in res.values() if r.get("peak_kind")]
    mem = "peak GPU GiB" if kinds and kinds[0] == "cuda_max_allocated" else "peak RSS GiB"
    head = ["variant", "s/step median (min-max)", "tokens/step real / computed", "tokens/s", "speed-up",
            mem, "memory ratio", "live tensors GiB (ratio)", "TFLOP/step", "GFLOP/s", "of matmul peak"]
    peak = ", ".join(f"{k} {v / 1e9:.1f} GFLOP/s" for k, v in data["matmul_flops_per_s"].items())
    lines = [
        f"**{name}**: model `{s['model']}` ({s['dtype']}), batch {s['batch_size']}, sequence length {s['seq_len']}, "
        f"k = {s['k']}, data shape `{s['shape']}`, objective {s['objective']}; "
        f"{data['warmup']} warm-up + {data['rounds']} timed rounds, variants interleaved"
        + (f", {data['turn']} steps back to back per turn, the last one timed; " if data.get("turn", 1) > 1 else "; ")
        + f"{s.get('threads') or 'all'} torch thread(s) per worker.",
        "",
        common.table(head, rows),
        "",
        f"Dense matmul peak measured in the same run: {peak}. Machine: {common.machine_line(data['machine'])}.",
        "`tokens/step`: real (non-padding) tokens of the rows the objective trains on / token positions "
        "the policy forward computes (padding included). Speed-up and memory ratio: against the variant named.",
        "`live tensors`: the peak of live torch tensors during one profiled step (weights, copies, optimizer "
        "state and activations; no libraries, no memory the C allocator kept), where measured (CPU).",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--variants", default="main",
                    help=f"comma-separated names, or a group ({', '.join(GROUPS)}); names: {', '.join(VARIANTS)}")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--shape", default="paper", choices=["paper", "full"])
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no-flops", action="store_true", help="skip the FLOP-counting step")
    ap.add_argument("--no-tensor-peak", action="store_true",
                    help="skip the profiled step that measures the live-tensor peak (CPU)")
    ap.add_argument("--slow-bf16", action="store_true",
                    help="run bf16 variants even on a CPU without bf16 matmul kernels (minutes per step)")
    ap.add_argument("--name", default="step", help="results file name (benchmarks/results/NAME.json/.md)")
    ap.add_argument("--steps-per-turn", type=int, default=1,
                    help="steps each worker runs back to back in its turn, the last one timed (1: every step "
                    "starts after the others' steps; 2 or more: a step right after another, as in training)")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads per worker (0: all cores). 1 is steadier on a machine shared with other work")
    args = ap.parse_args()
    if args.worker:
        worker(args.worker)
        return
    names = GROUPS.get(args.variants) or [v.strip() for v in args.variants.split(",") if v.strip()]
    if args.steps_per_turn < 1:
        sys.exit(f"--steps-per-turn must be at least 1, got {args.steps_per_turn}")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        sys.exit(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}; groups: {', '.join(GROUPS)}")
    base = Setting(model=args.model, dtype=args.dtype, batch_size=args.batch, seq_len=args.seq_len, k=args.k,
                   shape=args.shape, threads=args.threads)
    t0 = time.time()
    data = run(names, base, args.warmup, args.rounds, not args.no_flops, args.slow_bf16,
               tensors=not args.no_tensor_peak, turn=args.steps_per_turn)
    data.update(setting={f.name: getattr(base, f.name) for f in fields(base)}, warmup=args.warmup,
                rounds=args.rounds, turn=args.steps_per_turn, wall_s=round(time.time() - t0, 1))
    data["machine"] = common.machine_info()
    md = markdown(args.name, data)
    common.write_results(args.name, data, md)
    print(md)
    print(f"\n({args.name}: {data['wall_s']:.0f} s; results in {common.RESULTS / args.name}.json)")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
