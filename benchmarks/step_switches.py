"""Each of the step's recent speed-ups switched off, in one process, step by step: `unlearn`'s step
(benchmarks/harness.py:UnlearnStep) as shipped, with one switch off, and with all off, in turn on
the same micro-batch each round (rotating order), back to back. Not a worker per variant as in
benchmarks/step.py: there each worker waits while the others step, and on this machine memory left
untouched for a second is several times slower to touch again (a 113 MB fill: 11 ms, 70-250 ms after
0.5-2 s untouched), which a training run, stepping back to back, does not see.

    python benchmarks/step_switches.py            # LoRA
    python benchmarks/step_switches.py --full     # full fine-tune

Switches: `attention` (unlearn.models.attention: off = bins laid out by the dense attention's cost and
SDPA over each bin's whole mask), `lora` (unlearn.models.lora: off = peft's forward), `clip`
(unlearn.distributed.clip_gradients: off = accelerate's clip_grad_norm_, which multiplies every
gradient even by 1), `split` (unlearn.objective.context.split_positions: off = a slice of the logits per
segment, whose backward fills a zero tensor of the whole [positions, vocab] shape each).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import common  # noqa: E402
from harness import Setting, UnlearnStep, dense_attention, load, peft_lora_forward, segment_slices  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="full fine-tune instead of LoRA")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--name", default=None, help="results name (default step_switches_lora / _full)")
    args = ap.parse_args()
    from unlearn.memory import keep_freed_memory
    from unlearn.train import step as step_module

    keep_freed_memory()  # as the command line does at start
    s = Setting(impl="unlearn", lora=not args.full)
    torch.manual_seed(s.seed)
    model, tok = load(s)
    runner = UnlearnStep(s, model, tok, common.paper_shaped_data(tok, s.seq_len, shape=s.shape, seed=s.seed))
    shipped_clip = step_module.clip_gradients

    def accelerate_clip(acc, params, max_norm):
        return float(acc.clip_grad_norm_(params, max_norm))

    switches = ["attention", "clip", "split"] + (["lora"] if s.lora else [])
    variants = {"as shipped": set(), **{f"{w} off": {w} for w in switches}, "all off": set(switches)}

    def apply(off: set[str]) -> None:
        dense_attention("attention" in off)
        segment_slices("split" in off)
        if s.lora:
            peft_lora_forward(runner.model, "lora" in off)
        step_module.clip_gradients = accelerate_clip if "clip" in off else shipped_clip

    names = list(variants)
    times: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}  # process CPU time (both cores), not wall
    for r in range(args.warmup + args.rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for n in order:
            apply(variants[n])
            t, c = time.perf_counter(), time.process_time()
            runner.step(r)
            if r >= args.warmup:
                times[n].append(time.perf_counter() - t)
                cpu[n].append(time.process_time() - c)
        if r >= args.warmup:
            common.progress(f"round {r + 1 - args.warmup}/{args.rounds}: "
                            + ", ".join(f"{n} {times[n][-1]:.2f}s" for n in names))
    apply(set())
    base, base_cpu = statistics.median(times["as shipped"]), statistics.median(cpu["as shipped"])
    rows = [[n, f"{statistics.median(v):.2f} ({min(v):.2f}-{max(v):.2f})",
             "baseline" if n == "as shipped" else f"{statistics.median(v) / base:.2f}x the time",
             f"{statistics.median(cpu[n]):.2f}",
             "baseline" if n == "as shipped" else f"{statistics.median(cpu[n]) / base_cpu:.2f}x"]
            for n, v in times.items()]
    name = args.name or f"step_switches_{'lora' if s.lora else 'full'}"
    md = (f"**{name}**: {s.label}, model `{s.model}`, batch {s.batch_size}, k = {s.k}; one process, the "
          f"variants in turn on each round's micro-batch, {args.warmup} warm-up + {args.rounds} timed rounds.\n\n"
          + common.table(["variant", "s/step median (min-max)", "against as shipped", "CPU s/step median",
                          "CPU against as shipped"], rows)
          + f"\n\nMachine: {common.machine_line(common.machine_info())}.")
    common.write_results(name, {"setting": vars(s), "seconds": times, "cpu_seconds": cpu, "switches": switches}, md)
    print(md)


if __name__ == "__main__":
    main()
