"""forgetium's one-call `unlearn()` on a local model folder, for a side-by-side with `unlearn forget`.

Run it with the python of a venv that holds forgetium (never the project's .venv):

    python3 -m venv /work/venv-forgetium
    /work/venv-forgetium/bin/pip install torch==2.13.0 && /work/venv-forgetium/bin/pip install forgetium==0.2.1
    /work/venv-forgetium/bin/python benchmarks/forgetium_side.py \\
        --model ~/.cache/unlearn/models/smollm2-135m-instruct --prompts prompts.txt --out /tmp/fg

--prompts: a text file (one prompt a line) or JSONL ({"prompt": ...} or {"prompt": ..., "response":
bad answer}). Writes OUT/model (safetensors, tokenizer, forgetium's own forgetium_*.json) and
OUT/forgetium.json (wall time, forgetium's config, method, training history, before/after answers).

What forgetium 0.2.1's `unlearn(model, forget, mode="auto", n_retain=60, ...)` does: loads the folder
with AutoModelForCausalLM (to CUDA when there is one); asks the model for its own answer to each
question; builds a retain set by asking the model its ~180-question bank (minus questions sharing a
content word with the forget text), keeping non-empty answers (none kept: RuntimeError); picks
hyper-parameters from the model size (< 0.5B params: lr 2e-5, full fine-tuning, batch 2, epochs 8/5/3/2
for <= 3/10/50/more forget prompts); "auto" = "surface" = preference optimisation: cross-entropy
towards a refusal ("I don't know.", ...) on the forget prompts plus retain_weight (4 when the retain
set is >= 4x the forget set) x cross-entropy on the retain answers.

Every prompt it tokenizes (the model's answers, the retain bank, training, before/after) is plain
text with no chat template. An instruct model such as SmolLM2 answers most bare questions with
nothing, so the retain set comes back empty and `unlearn()` stops with a RuntimeError. The only
changes made here, all for prompt formatting (--no-format turns them off):
  1. forget prompts are passed rendered with the tokenizer's chat template (generation prompt
     added); they are then what forgetium trains on and asks before/after, as the model is used;
  2. its retain bank is asked rendered the same way (its topic filter still compares the bank's bare
     questions with the forget text without the template, so the template's own words, shared by
     every rendered prompt, do not filter out the whole bank);
  3. a bare prompt is always taken as a question to answer (forgetium's own question branch: the
     model's greedy answer, 64 tokens, is the response to forget), kept unstripped: forgetium would
     take a rendered prompt (or any request not phrased as a question) for a *fact* and have the
     model invent a question for it, and strips the template's final newline.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def read_prompts(path: Path) -> list:
    """Bare prompts (str) or (prompt, bad answer) pairs (dict) from a text or JSONL file."""
    items: list = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        if path.suffix == ".jsonl":
            rec = json.loads(line)
            if not isinstance(rec, dict) or not isinstance(rec.get("prompt"), str):
                raise SystemExit(f"{path} line {n}: needs a string field 'prompt'")
            if isinstance(rec.get("response"), str) and rec["response"].strip():
                items.append({"prompt": rec["prompt"], "response": rec["response"]})
            else:
                items.append(rec["prompt"])
        else:
            items.append(line.strip())
    if not items:
        raise SystemExit(f"{path}: no prompts")
    return items


def value(text: str):
    """A --set value: JSON when it parses (numbers, true/false), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def install_format_workaround(tokenizer) -> tuple:
    """Patch forgetium so every prompt it asks or trains on is chat-formatted; returns (fmt, counts)."""
    import forgetium.auto as fauto
    import forgetium.auto.generate as fgen
    from forgetium.auto.retain_data import QUESTION_BANK, filter_questions

    def fmt(prompt: str) -> str:
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )

    marker = "\u2063prompt\u2063"
    head, tail = fmt(marker).split(marker)
    counts: dict = {}
    original_retain = fauto.generate_retain_data

    def retain(model, tok, forget_text, *, n_questions=60, **kw):
        bare_forget = forget_text.replace(head, " ").replace(tail, " ")
        kept = filter_questions(bare_forget, QUESTION_BANK)
        asked = (kept or list(QUESTION_BANK))[:n_questions]  # forgetium's own fallback when none is left
        records = original_retain(model, tok, "", n_questions=n_questions, questions=[fmt(q) for q in asked], **kw)
        counts.update(retain_asked=len(asked), retain_kept=len(records))
        return records

    def question(s, model, tok):
        # forgetium's question branch (_normalize_string) without its s.strip(), which would cut the
        # template's newline after "assistant" and train on a prompt the model is never given.
        answer = fgen._self_answer(model, tok, s, max_new_tokens=64)
        return {"prompt": s, "response": answer or "[the model would normally answer this question]"}

    fauto.generate_retain_data = retain
    fgen._normalize_string = question
    return fmt, counts


def main() -> None:
    ap = argparse.ArgumentParser(description="forgetium.unlearn on a local model folder")
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--prompts", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--mode", default="auto", choices=["auto", "surface", "knowledge"])
    ap.add_argument("--n-retain", type=int, default=60, help="forgetium's default: 60")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="forgetium config_overrides (smoke runs: --set num_epochs=1)")
    ap.add_argument("--evaluate", action="store_true", help="forgetium's own Evaluator (default off)")
    ap.add_argument("--no-format", action="store_true", help="run forgetium exactly as shipped")
    a = ap.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import forgetium
    import torch
    from transformers import AutoTokenizer

    model_dir = a.model.expanduser()
    if not (model_dir / "config.json").exists():
        raise SystemExit(f"{model_dir}: not a model folder (no config.json)")
    items = read_prompts(a.prompts)
    overrides = {}
    for kv in a.set:
        key, sep, val = kv.partition("=")
        if not sep:
            raise SystemExit(f"--set {kv}: expected KEY=VALUE")
        overrides[key] = value(val)

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))  # the one forgetium loads itself
    counts: dict = {}
    fmt = None
    if not a.no_format:
        if not getattr(tokenizer, "chat_template", None):
            raise SystemExit(f"{model_dir}: the tokenizer has no chat template; run with --no-format")
        fmt, counts = install_format_workaround(tokenizer)
    bare: dict = {}  # rendered prompt -> the prompt as given, for the report
    forget: list = []
    for x in items:
        prompt = x if isinstance(x, str) else x["prompt"]
        shown = fmt(prompt) if fmt else prompt
        bare[shown] = prompt
        forget.append(shown if isinstance(x, str) else {**x, "prompt": shown})

    t0 = time.perf_counter()
    result = forgetium.unlearn(
        str(model_dir), forget, mode=a.mode, n_retain=a.n_retain, evaluate=a.evaluate,
        config_overrides=overrides or None,
    )
    wall = time.perf_counter() - t0
    a.out.mkdir(parents=True, exist_ok=True)
    saved = result.save(a.out / "model")  # save_pretrained: model.safetensors, tokenizer, forgetium_*.json
    if not list(Path(saved).glob("*.safetensors")):
        raise SystemExit(f"{saved}: no safetensors file written")

    report = {
        "tool": "forgetium", "version": forgetium.__version__, "torch": torch.__version__,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "model": str(model_dir), "prompts": str(a.prompts), "n_forget": len(items),
        "format_workaround": not a.no_format,
        "call": {"mode": a.mode, "n_retain": a.n_retain, "evaluate": a.evaluate, "config_overrides": overrides},
        "wall_s": round(wall, 2),
        "train_s": round(result.history.total_time_seconds, 2),
        "method": result.method, "used_lora": result.used_lora,
        "config": json.loads(result.config.model_dump_json()),
        "n_retain_records": len(result.retain_records), **counts,
        "steps": result.history.steps,
        "final_loss": result.history.steps[-1]["loss"] if result.history.steps else None,
        "metrics": result.metrics,
        "answers": [
            {"prompt": bare.get(p, p), "before": b, "after": result.after.get(p, "")}
            for p, b in result.before.items()
        ],
        "forget_records": [
            {"prompt": bare.get(r["prompt"], r["prompt"]), "response": r["response"]} for r in result.forget_records
        ],
        "saved": str(saved),
    }
    (a.out / "forgetium.json").write_text(json.dumps(report, indent=1, ensure_ascii=False, default=str))
    print(f"forgetium {forgetium.__version__}: {result.method}, {len(result.history.steps)} logged steps, "
          f"wall {wall:.1f} s; model in {saved}; report in {a.out / 'forgetium.json'}", file=sys.stderr)


if __name__ == "__main__":
    main()
