"""KV cache for decoding: transformers' DynamicCache (every step concatenates each layer's keys and
values with the new token's, a copy of the whole cache) against its StaticCache (room reserved,
the new token written in place, attention over the reserved length with the rest masked) and
against unlearn's reserved layers (unlearn.evaluate.kvcache: room reserved after the prefill, the
new token written in place, attention over the filled part only, a view). One prefill, then greedy
decoding of --new-tokens tokens for --rows rows of --length random tokens, alternated runs, the
same model; the decode time only (the prefill is the same for all).

    python benchmarks/kv_cache.py --model runs/demo-teach/model --length 150
    python benchmarks/kv_cache.py --model runs/demo-teach/model --length 40 --rounds 3
    python benchmarks/kv_cache.py --model runs/demo-teach/model --length 100 --rounds 2 --compile

unlearn.evaluate.decode decodes with the reserved layers (docs/performance.md says what each
measured). It keeps the eager forward: under torch.compile, decoding was slower and the compile
took minutes (--compile measures it).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402


def decode_once(model, kind: str, ids, new_tokens: int):
    """(decode seconds, the new tokens [rows, new_tokens]) with a `kind` cache."""
    import torch
    from transformers.cache_utils import DynamicCache, StaticCache

    from unlearn.evaluate.kvcache import reserve

    rows, length = ids.shape
    cache = StaticCache(config=model.config, max_cache_len=length + new_tokens) if kind == "static" else DynamicCache()
    mask = torch.ones_like(ids)
    position = torch.arange(length)[None].expand(rows, -1)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, position_ids=position, past_key_values=cache,
                    use_cache=True, logits_to_keep=1)
        token = out.logits[:, -1].argmax(-1)[:, None]
        tokens = [token]
        position = position[:, -1:]
        t = time.perf_counter()  # the reserved cache's one copy into its buffers is timed with its decode
        if kind == "reserved" and not reserve(cache, new_tokens - 1):
            raise SystemExit("this model's cache has layers that cannot be reserved")
        for _ in range(new_tokens - 1):
            mask = torch.cat([mask, mask.new_ones((rows, 1))], 1)
            position = position + 1
            out = model(input_ids=token, attention_mask=mask, position_ids=position, past_key_values=cache,
                        use_cache=True, logits_to_keep=1)
            token = out.logits[:, -1].argmax(-1)[:, None]
            tokens.append(token)
        return time.perf_counter() - t, torch.cat(tokens, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a causal LM folder (the demo's taught model, say)")
    ap.add_argument("--rows", type=int, default=128)
    ap.add_argument("--length", type=int, default=150, help="prompt tokens per row")
    ap.add_argument("--new-tokens", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--name", default="kv_cache")
    ap.add_argument("--compile", action="store_true",
                    help="then each cache again with the model's forward under torch.compile (dynamic shapes for "
                         "DynamicCache): the first call's whole time (it compiles), then --rounds timed decodes")
    args = ap.parse_args()
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    torch.manual_seed(0)
    ids = torch.randint(100, min(5000, model.config.vocab_size), (args.rows, args.length))
    kinds = ("dynamic", "static", "reserved")
    secs: dict[str, list[float]] = {k: [] for k in kinds}
    outputs = {}
    for r in range(args.rounds):
        for kind in kinds[r % 3:] + kinds[: r % 3]:
            s, outputs[kind] = decode_once(model, kind, ids, args.new_tokens)
            secs[kind].append(s)
            common.progress(f"round {r + 1}: {kind} {s:.2f} s")
    first: dict[str, float] = {}
    if args.compile:
        eager = model.forward
        for kind in ("dynamic", "static"):
            name = f"{kind}, compiled"
            model.forward = torch.compile(eager, dynamic=kind == "dynamic")
            t = time.perf_counter()
            _, outputs[name] = decode_once(model, kind, ids, args.new_tokens)
            first[name] = time.perf_counter() - t
            common.progress(f"{name}: first call (prefill, decode and compiling) {first[name]:.1f} s")
            secs[name] = []
            for r in range(args.rounds):
                s, outputs[name] = decode_once(model, kind, ids, args.new_tokens)
                secs[name].append(s)
                common.progress(f"round {r + 1}: {name} {s:.2f} s")
            model.forward = eager
            torch._dynamo.reset()
    med = {k: statistics.median(v) for k, v in secs.items()}
    same = all(torch.equal(outputs["dynamic"], o) for o in outputs.values())
    data = {"settings": vars(args), "seconds": secs, "median_s": med, "ratio_static_to_dynamic": med["static"] / med["dynamic"],
            "ratio_reserved_to_dynamic": med["reserved"] / med["dynamic"],
            "same_tokens": same, "first_call_s": first, "machine": common.machine_info()}
    md = "\n".join([
        f"**{args.name}**: {args.rows} rows x {args.length} prompt tokens, {args.new_tokens} new tokens, greedy, "
        f"{args.rounds} rounds, the order rotated each round, decode time only" + (" (the compiled ones after the eager ones)" if first else "") + ".",
        "",
        common.table(["cache", "decode s (median)", "ms/step", "vs dynamic", "first call s (compiling)"],
                     [[k, f"{med[k]:.2f}", f"{1000 * med[k] / (args.new_tokens - 1):.0f}",
                       f"{med[k] / med['dynamic']:.2f}x", f"{first[k]:.1f}" if k in first else ""] for k in med]),
        "",
        f"Same greedy tokens: {'yes' if same else 'NO'}. Machine: {common.machine_line(data['machine'])}.",
    ])
    common.write_results(args.name, data, md)
    print(md)


if __name__ == "__main__":
    main()
