"""Evaluation generation throughput: batched (left padding, prompts sorted by length, KV cache)
against one prompt at a time, greedy, same prompts and model, alternated in one run.

    python benchmarks/generate.py
    python benchmarks/generate.py --prompts 32 --batch-size 8 --max-new-tokens 48

It calls `model.generate` directly, in the pattern the evaluation code uses (left padding, sorted
batches), so that it does not depend on unlearn.evaluate.generate while that module is being
written; point it at that module once it exists. Throughput counts useful tokens only: the new
tokens of each prompt up to and including its first end-of-sequence token (a batch keeps
computing for rows that have finished; that waste is part of the batched cost).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

QUESTIONS = [
    "What is the capital of France?",
    "How many legs does a spider have?",
    "Why is the sky blue?",
    "What do bees make?",
    "Which ocean is the largest on Earth?",
    "What is the boiling point of water at sea level in degrees Celsius?",
    "Who wrote the play Romeo and Juliet?",
    "What is photosynthesis and why do plants need it?",
    "How many days are there in a leap year?",
    "What is the chemical symbol for gold?",
    "Can you explain in simple words how a rainbow forms after the rain?",
    "What is the tallest mountain in the world?",
    "Why do we have seasons on Earth, and why are they reversed in the southern hemisphere?",
    "What language is spoken in Brazil?",
    "How does a refrigerator keep food cold?",
    "What is the largest planet in our solar system?",
    "What are the three primary colours of light?",
    "Why should people wash their hands before eating?",
    "What is the difference between weather and climate?",
    "How many continents are there, and which is the largest?",
    "What does a thermometer measure?",
    "Why do cats purr?",
    "What is the speed of light in a vacuum, approximately?",
    "How do vaccines help the body fight diseases?",
]


def useful_new_tokens(rows: list[list[int]], eos: set[int]) -> list[list[int]]:
    out = []
    for r in rows:
        kept = []
        for t in r:
            kept.append(t)
            if t in eos:
                break
        out.append(kept)
    return out


def generate_one_at_a_time(model: Any, tok: Any, prompts: list[str], max_new: int) -> list[list[int]]:
    import torch

    outs = []
    for p in prompts:
        enc = tok(p, return_tensors="pt").to(model.device)
        with torch.no_grad():
            g = model.generate(**enc, max_new_tokens=max_new, do_sample=False, pad_token_id=tok.pad_token_id)
        outs.append(g[0, enc["input_ids"].shape[1]:].tolist())
    return outs


def generate_batched(model: Any, tok: Any, prompts: list[str], max_new: int, batch_size: int) -> list[list[int]]:
    """Left padding, prompts sorted by token length so each batch holds similar lengths."""
    import torch

    lengths = [len(tok(p)["input_ids"]) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: lengths[i])
    outs: dict[int, list[int]] = {}
    tok.padding_side = "left"
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        enc = tok([prompts[i] for i in idx], return_tensors="pt", padding=True).to(model.device)
        with torch.no_grad():
            g = model.generate(**enc, max_new_tokens=max_new, do_sample=False, pad_token_id=tok.pad_token_id)
        for row, i in enumerate(idx):
            outs[i] = g[row, enc["input_ids"].shape[1]:].tolist()
    return [outs[i] for i in range(len(prompts))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=2, help="alternations of the two modes (after a warm-up)")
    ap.add_argument("--no-flops", action="store_true")
    ap.add_argument("--name", default="generate")
    args = ap.parse_args()

    from unlearn.config import ModelConfig
    from unlearn.data import Encoder
    from unlearn.models import load_model

    t0 = time.time()
    model, tok = load_model(ModelConfig(name=args.model))
    model.to(common.device()).eval()
    encoder = Encoder(tok, "qa", 512)
    prompts = [encoder.prompt_text(QUESTIONS[i % len(QUESTIONS)]) for i in range(args.prompts)]
    eos = {tok.eos_token_id} if tok.eos_token_id is not None else set()
    mode_fns = {
        "one at a time": lambda: generate_one_at_a_time(model, tok, prompts, args.max_new_tokens),
        f"batched ({args.batch_size}, left-padded, sorted)": lambda: generate_batched(
            model, tok, prompts, args.max_new_tokens, args.batch_size),
    }
    peak = common.matmul_peak("float32")
    # warm-up: a short pass of each mode
    generate_one_at_a_time(model, tok, prompts[:2], 4)
    generate_batched(model, tok, prompts[:4], 4, args.batch_size)
    times: dict[str, list[float]] = {m: [] for m in mode_fns}
    outputs: dict[str, list[list[int]]] = {}
    for r in range(args.rounds):
        modes = list(mode_fns) if r % 2 == 0 else list(mode_fns)[::-1]
        for m in modes:
            common.sync()
            t = time.perf_counter()
            outputs[m] = useful_new_tokens(mode_fns[m](), eos)
            common.sync()
            times[m].append(time.perf_counter() - t)
            common.progress(f"[generate] round {r + 1}: {m}: {times[m][-1]:.1f} s")
    flops: dict[str, int] = {}
    if not args.no_flops:
        for m, fn in mode_fns.items():
            flops[m] = common.count_flops(fn)
    peak = max(peak, common.matmul_peak("float32"))

    single = list(mode_fns)[0]
    res: dict[str, dict[str, Any]] = {}
    for m in mode_fns:
        med = common.median(times[m])
        n_tok = sum(len(o) for o in outputs[m])
        res[m] = {"seconds": times[m], "median_s": med, "new_tokens": n_tok, "tokens_per_s": n_tok / med,
                  "prompts_per_s": len(prompts) / med}
        if m in flops:
            res[m]["flops"] = flops[m]
            res[m]["fraction_of_matmul_peak"] = flops[m] / med / peak
    for m in mode_fns:
        res[m]["speedup_prompts_per_s"] = res[m]["prompts_per_s"] / res[single]["prompts_per_s"]
        res[m]["speedup_tokens_per_s"] = res[m]["tokens_per_s"] / res[single]["tokens_per_s"]
    batched = list(mode_fns)[1]
    same = sum(a == b for a, b in zip(outputs[single], outputs[batched]))
    rows = [[m, f"{r['median_s']:.1f}", r["new_tokens"], f"{r['tokens_per_s']:.1f}", f"{r['prompts_per_s']:.2f}",
             f"{r['speedup_prompts_per_s']:.2f}x", f"{100 * r['fraction_of_matmul_peak']:.1f} %" if "flops" in r else ""]
            for m, r in res.items()]
    md = "\n".join([
        f"**{args.name}**: `{args.model}`, {len(prompts)} prompts (qa template), greedy, at most "
        f"{args.max_new_tokens} new tokens, plain `model.generate`; {args.rounds} alternated rounds after a warm-up.",
        "",
        common.table(["mode", "s (median)", "useful new tokens", "tokens/s", "prompts/s", "speed-up", "of matmul peak"], rows),
        "",
        f"Identical greedy outputs in both modes for {same} of {len(prompts)} prompts (left padding changes "
        "floating-point sums slightly, which can flip a near-tie). Dense fp32 matmul peak in the same run: "
        f"{peak / 1e9:.1f} GFLOP/s. Machine: {common.machine_line(common.machine_info())}.",
    ])
    data = {"setting": vars(args), "modes": res, "identical_outputs": same, "matmul_flops_per_s": peak,
            "wall_s": round(time.time() - t0, 1)}
    common.write_results(args.name, data, md)
    print(md)
    print(f"\n({args.name}: {data['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
