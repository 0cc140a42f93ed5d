"""How an `unlearn` step grows with sequence length and batch size: seconds/step, peak memory and
achieved FLOP/s, a plot and a table, and a fit that says whether growth is linear in tokens.

    python benchmarks/scaling.py                       # seq 64..1024 at batch 1; batch 1..16 at seq 64
    python benchmarks/scaling.py --seq-lens 64,128 --batches 1,2 --k 5 --full-ft

Every point runs in a fresh worker process (benchmarks/step.py's), so each has its own peak
memory: warm-up steps, timed steps (median), one FLOP-counted step. Every row of a step fills the
sequence length (data shape `full`), so tokens/step = batch x (2 + k) x seq_len exactly and the
growth measured is the model's, not the data's.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from harness import Setting  # noqa: E402
from step import Worker  # noqa: E402


def measure(setting: Setting, warmup: int, steps: int, flops: bool) -> dict[str, Any]:
    w = Worker(f"{setting.seq_len}x{setting.batch_size}", setting)
    out: dict[str, Any] = {"seq_len": setting.seq_len, "batch": setting.batch_size}
    try:
        ready = w.ask(None)
        if "error" in ready:
            return {**out, "error": ready["error"]}
        secs, tokens, computed = [], [], []
        for i in range(warmup + steps):
            # the first warm-up step counts FLOPs (its time is not used)
            r = w.ask("flops" if i == 0 and flops and warmup else "step")
            if "flops" in r:
                out["flops_per_step"] = r["flops"]
            if "error" in r:
                return {**out, "error": r["error"]}
            if i >= warmup:
                secs.append(r["seconds"])
                tokens.append(r["tokens"])
                computed.append(r["padded_tokens"])
        out.update(seconds=secs, median_s=common.median(secs), tokens=common.median(tokens),
                   computed_tokens=common.median(computed), rows=r["rows"])
        if flops and not warmup:
            out["flops_per_step"] = w.ask("flops").get("flops")
        p = w.ask("peak")
        out["peak_bytes"], out["peak_kind"] = p.get("peak_bytes"), p.get("peak_kind")
    finally:
        w.close()
    return out


def plot(points: list[dict[str, Any]], fits: dict[str, Any], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for sweep, marker in (("seq_len", "o"), ("batch", "s")):
        pts = [p for p in points if p["sweep"] == sweep and p.get("median_s")]
        if not pts:
            continue
        label = "sequence length grows (batch 1)" if sweep == "seq_len" else f"batch grows (seq {pts[0]['seq_len']})"
        xs = [p["tokens"] for p in pts]
        axes[0].plot(xs, [p["median_s"] for p in pts], marker=marker, label=label)
        axes[1].plot(xs, [p["peak_bytes"] / 2**30 for p in pts], marker=marker, label=label)
        for p in pts:
            axes[0].annotate(f"{p['seq_len']}x{p['batch']}", (p["tokens"], p["median_s"]), fontsize=7,
                             textcoords="offset points", xytext=(3, -9))
    fit = fits.get("time_all")
    if fit:
        xs = sorted(p["tokens"] for p in points if p.get("median_s"))
        axes[0].plot(xs, [fit["intercept"] + fit["slope"] * x for x in xs], "k--", lw=0.8,
                     label=f"linear fit (R² {fit['r2']:.3f})")
    axes[0].set_xlabel("tokens per step")
    axes[0].set_ylabel("seconds per step (median)")
    axes[1].set_xlabel("tokens per step")
    axes[1].set_ylabel("peak memory (GiB)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def verdict(fit: dict[str, float] | None) -> str:
    if not fit:
        return "not enough points"
    s = fit["loglog_slope"]
    kind = "sub-linear" if s < 0.9 else "linear" if s <= 1.1 else "super-linear"
    return f"log-log slope {s:.2f} ({kind}), linear fit R² {fit['r2']:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--seq-lens", default="64,128,256,512,1024")
    ap.add_argument("--batches", default="1,2,4,8,16")
    ap.add_argument("--base-seq", type=int, default=64, help="sequence length of the batch sweep")
    ap.add_argument("--k", type=int, default=1, help="mismatch answers per forget example")
    ap.add_argument("--full-ft", action="store_true", help="full fine-tune instead of LoRA")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--no-flops", action="store_true")
    ap.add_argument("--name", default="scaling")
    ap.add_argument("--threads", type=int, default=0, help="torch threads per worker (0: all cores)")
    args = ap.parse_args()

    seq_lens = [int(x) for x in args.seq_lens.split(",") if x]
    batches = [int(x) for x in args.batches.split(",") if x]
    base = Setting(model=args.model, lora=not args.full_ft, k=args.k, shape="full", threads=args.threads)
    grid = [("seq_len", L, 1) for L in seq_lens] + [("batch", args.base_seq, b) for b in batches]
    t0 = time.time()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    peak_before = common.matmul_peak("float32")
    points: list[dict[str, Any]] = []
    done: dict[tuple[int, int], dict[str, Any]] = {}
    for sweep, L, b in grid:
        if (L, b) not in done:
            common.progress(f"[scaling] seq {L} x batch {b} ...")
            s = Setting(**{**asdict(base), "seq_len": L, "batch_size": b})
            done[(L, b)] = measure(s, args.warmup, args.steps, not args.no_flops)
            common.progress(f"[scaling]   {done[(L, b)].get('median_s', done[(L, b)].get('error'))}")
        points.append({**done[(L, b)], "sweep": sweep})
    peak = max(peak_before, common.matmul_peak("float32"))
    for p in points:
        if p.get("flops_per_step") and p.get("median_s"):
            p["flops_per_s"] = p["flops_per_step"] / p["median_s"]
            p["fraction_of_matmul_peak"] = p["flops_per_s"] / peak

    ok = [p for p in done.values() if p.get("median_s")]
    fits: dict[str, Any] = {}
    if len(ok) >= 3:
        fits["time_all"] = common.linear_fit([p["tokens"] for p in ok], [p["median_s"] for p in ok])
        fits["memory_all"] = common.linear_fit([p["tokens"] for p in ok], [p["peak_bytes"] for p in ok])
    for sweep in ("seq_len", "batch"):
        pts = [p for p in points if p["sweep"] == sweep and p.get("median_s")]
        if len(pts) >= 3:
            fits[f"time_{sweep}"] = common.linear_fit([p["tokens"] for p in pts], [p["median_s"] for p in pts])
            fits[f"memory_{sweep}"] = common.linear_fit([p["tokens"] for p in pts], [p["peak_bytes"] for p in pts])

    what = f"`{args.model}`, {'full fine-tune' if args.full_ft else 'LoRA r 8 all-linear'}, objective ga + mismatch + kl, k = {args.k}"
    png = common.RESULTS / f"{args.name}.png"
    plot(points, fits, png, f"unlearn step scaling: {what.replace('`', '')}")
    rows = []
    for p in points:
        if not p.get("median_s"):
            rows.append([p["sweep"], p["seq_len"], p["batch"], f"failed: {p.get('error')}", "", "", "", "", ""])
            continue
        rows.append([
            "seq" if p["sweep"] == "seq_len" else "batch", p["seq_len"], p["batch"], f"{p['tokens']:.0f}",
            f"{p['median_s']:.2f}", f"{1000 * p['median_s'] / p['tokens']:.2f}", f"{p['tokens'] / p['median_s']:.0f}",
            common.gib(p["peak_bytes"]),
            f"{100 * p['fraction_of_matmul_peak']:.0f} %" if p.get("fraction_of_matmul_peak") else "",
        ])
    md = "\n".join([
        f"**{args.name}**: {what}; every row fills the sequence length; {args.warmup} warm-up + {args.steps} timed "
        "steps per point, each point in a fresh process.",
        "",
        common.table(["sweep", "seq len", "batch", "tokens/step", "s/step", "ms/token", "tokens/s",
                      "peak RSS GiB" if common.device() == "cpu" else "peak GPU GiB", "of matmul peak"], rows),
        "",
        f"Growth of s/step with tokens/step: all points {verdict(fits.get('time_all'))}; "
        f"as the batch grows {verdict(fits.get('time_batch'))}; "
        f"as the sequence grows {verdict(fits.get('time_seq_len'))}.",
        f"Growth of peak memory: all points {verdict(fits.get('memory_all'))}.",
        f"Dense fp32 matmul peak in the same run: {peak / 1e9:.1f} GFLOP/s. "
        f"Machine: {common.machine_line(common.machine_info())}.",
        "",
        f"![scaling plot](../benchmarks/results/{png.name})",
    ])
    data = {"setting": asdict(base), "points": points, "fits": fits, "matmul_flops_per_s": peak,
            "wall_s": round(time.time() - t0, 1), "plot": str(png.relative_to(common.ROOT))}
    common.write_results(args.name, data, md)
    print(md)
    print(f"\n({args.name}: {data['wall_s']:.0f} s; plot {png})")


if __name__ == "__main__":
    main()
