"""`unlearn collect`: from prompts to the data files a run needs, in the model's own words.

1. The model answers each prompt `samples` times (sample 0 greedy, the others sampled; batched),
   in the template training will use; with (prompt, bad answer) pairs the answers are given.
2. The judge scores each answer; the bad ones are the forget data.
3. The model answers prompts of the built-in retain bank (those too close to a forget prompt are
   dropped first) in the same template: the retain data and the mismatch pool are its own answers,
   so KL constrains what it actually says, and no format difference teaches a shortcut (the paper
   warns about that). A held-out part of the bank, with the model's answers, is the normal set.

The folder (written whole or not at all):

    forget.jsonl      the bad answers: prompt, response, judge, harmful, sample
    answers.jsonl     every answer with its judgement (bad or not)
    retain.jsonl      bank prompts and the model's answers (also the mismatch pool)
    normal.jsonl      held-out bank prompts and the model's answers (the original's, for later)
    test.jsonl        --test-prompts, when given: unseen prompts, judged in the evaluation
    clean_prompts.txt the prompts that never got a bad answer (nothing to unlearn there)
    collect.json      counts, the judge, the decoding settings, what the bank filter dropped
"""

from __future__ import annotations

import json
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from unlearn.errors import UnlearnError
from unlearn.forgetting.prompts import PromptRow, kind_of

NOTHING_TO_UNLEARN = "nothing to unlearn"


@dataclass
class CollectSettings:
    """How answers are collected and judged (the CLI's options; defaults documented in docs/forget.md)."""

    judge: Optional[str] = "topic"  # eval.judge; None with pairs
    samples: int = 1  # answers per prompt; sample 0 is greedy
    temperature: float = 0.8  # the other samples
    top_p: float = 0.95
    max_new_tokens: int = 48
    batch_size: int = 32
    template: Optional[str] = None  # None: chat when the tokenizer has a chat template, else qa
    retain: int = 200  # bank prompts answered for retain data and the mismatch pool
    normal: int = 40  # held-out bank prompts (the normal set)
    bank: Optional[str] = None  # a user's bank file; None: the built-in one
    bank_threshold: Optional[float] = None  # None: bank.DEFAULT_THRESHOLD
    seed: int = 0
    eval: dict[str, Any] = field(default_factory=dict)  # further eval keys for the judge (judge_strings, ...)
    # Pairs with right answers: forget the model's OWN answers that miss the right answer (WRONG_JUDGE)
    # instead of the given bad ones, which still score the evaluation (its hallucination rate).
    own_answers: bool = False


# The judgement of own_answers: an answer is bad when it says something (not empty, not a refusal)
# and does not contain the right answer (the evaluation's `contains` rule).
WRONG_JUDGE = "wrong: not a refusal and without the right answer"


@dataclass
class Collected:
    """What collect wrote (folder) and what it counted (summary: collect.json's content)."""

    folder: Path
    summary: dict[str, Any]

    @property
    def bad(self) -> int:
        return int(self.summary["forget"]["answers"])


def eval_config(settings: CollectSettings, judge: Optional[str]) -> Any:
    """The EvalConfig the judge reads its settings from (refusal phrases, thresholds, strings);
    a bad value is one line naming the key."""
    from unlearn.config.evaluation import EvalConfig
    from unlearn.config.load import build

    return build(EvalConfig, {**settings.eval, "judge": judge}, "eval", {"": "judge settings"})


def pick_template(tokenizer: Any, template: Optional[str]) -> str:
    """The template training will use: the chat template when the tokenizer has one."""
    if template:
        return template
    return "chat" if getattr(tokenizer, "chat_template", None) else "qa"


def answer(model: Any, encoder: Any, prompts: Sequence[str], settings: CollectSettings,
           sample: int = 0) -> list[str]:
    """The model's answers: greedy for sample 0, else sampled with the sample's own seed."""
    from unlearn.evaluate.generate import GenerationSettings, generate

    g = GenerationSettings(max_new_tokens=settings.max_new_tokens, batch_size=settings.batch_size,
                           do_sample=sample > 0, temperature=settings.temperature, top_p=settings.top_p,
                           seed=settings.seed + sample)
    return generate(model, encoder, prompts, g)


def decoding(settings: CollectSettings) -> dict[str, Any]:
    return {"samples": settings.samples, "sample_0": "greedy", "temperature": settings.temperature,
            "top_p": settings.top_p, "max_new_tokens": settings.max_new_tokens, "seed": settings.seed}


def collect(
    model_name: str,
    rows: Sequence[PromptRow],
    out: Path,
    settings: CollectSettings,
    *,
    test_rows: Sequence[PromptRow] = (),
    examples: Sequence[str] = (),
    overwrite: bool = False,
    console: Any = None,
    loaded: Any = None,
) -> Optional[Collected]:
    """Collect into `out` (see the module docstring). Returns None, writing nothing, when no answer
    is judged bad. `examples`: known bad answers the judge may compare with. `loaded`: a
    (model, tokenizer) already in memory."""
    from unlearn.evaluate.embed import Embedder
    from unlearn.evaluate.judges.registry import load_error, load_judge
    from unlearn.forgetting import bank as bank_

    t0 = time.time()
    out = Path(out).expanduser().resolve()
    if out.exists() and not overwrite:
        raise UnlearnError(f"{out} exists; pass --overwrite to replace it")
    kind = kind_of(rows)
    own = kind == "pairs" and settings.own_answers
    if settings.own_answers and kind != "pairs":
        raise UnlearnError("--own-answers takes (prompt, bad answer) pairs with right answers; these are bare prompts")
    missing = next((r for r in rows if own and not (r.right or "").strip()), None)
    if missing is not None:
        raise UnlearnError(f"{missing.where or 'a pair'}: --own-answers needs every pair's right answer "
                           "(field right_answer): it is how a wrong answer is told")
    if settings.samples < 1:
        raise UnlearnError(f"--samples must be >= 1, got {settings.samples}")
    judge_spec = settings.judge if kind == "prompts" else None
    if kind == "prompts" and not judge_spec:
        raise UnlearnError("collecting answers needs a judge (--judge) to tell the bad ones")
    ecfg = eval_config(settings, judge_spec)
    bank = bank_.load_bank(Path(settings.bank) if settings.bank else None)

    say = console.print if console is not None else (lambda *a, **k: None)
    model, tokenizer = loaded if loaded is not None else load_for_collect(model_name)
    device = str(next(model.parameters()).device)
    embedder = Embedder(ecfg.embedding_model, device)
    judge = None
    if judge_spec:
        try:
            judge = load_judge(judge_spec, ecfg, device, embedder=embedder)
        except UnlearnError:
            raise
        except Exception as e:  # a judge model that cannot load: one line, before anything generates
            raise load_error(judge_spec, e) from None

    from unlearn.data.encode import Encoder

    template = pick_template(tokenizer, settings.template)
    encoder = Encoder(tokenizer, template, 1024)

    # ---- 1-2. answers and judgements -------------------------------------------------------
    answers: list[dict[str, Any]] = []
    if own:
        from unlearn.evaluate.judges.refusal import is_refusal
        from unlearn.evaluate.metrics.text import contains_answer

        for s in range(settings.samples):
            say(f"[dim]collect: answering {len(rows)} questions (sample {s + 1}/{settings.samples})[/dim]")
            outs = answer(model, encoder, [r.prompt for r in rows], settings, s)
            for r, o in zip(rows, outs):
                wrong = bool(o.strip()) and not is_refusal(o) and not contains_answer(o, r.right or "")
                answers.append({"prompt": r.prompt, "response": o, "sample": s, "harmful": wrong, "judge": WRONG_JUDGE,
                                "right_answer": r.right, "hallucinated_answer": r.response})
    elif kind == "pairs":
        for r in rows:
            answers.append({"prompt": r.prompt, "response": r.response, "sample": 0, "harmful": True,
                            "judge": "given", **({"right_answer": r.right} if r.right else {})})
    else:
        prompts = [r.prompt for r in rows]
        for s in range(settings.samples):
            say(f"[dim]collect: answering {len(prompts)} prompts (sample {s + 1}/{settings.samples})[/dim]")
            outs = answer(model, encoder, prompts, settings, s)
            assert judge is not None
            verdicts = judge(prompts, outs, list(examples))
            for p, o, v in zip(prompts, outs, verdicts):
                answers.append({"prompt": p, "response": o, "sample": s, "harmful": v, "judge": judge_spec})
    bad = [a for a in answers if a["harmful"] is True and a["response"].strip()]
    per_prompt = {r.prompt: 0 for r in rows}
    for a in bad:
        per_prompt[a["prompt"]] += 1
    if not bad:
        return None

    # ---- 3. the retain bank ----------------------------------------------------------------
    threshold = settings.bank_threshold if settings.bank_threshold is not None else bank_.DEFAULT_THRESHOLD
    forget_prompts = list(per_prompt) + [r.prompt for r in test_rows]
    kept, dropped = bank_.filter_bank(bank, forget_prompts, embedder, threshold)
    retain_p, normal_p = bank_.split_bank(kept, settings.retain, settings.normal, settings.seed)
    say(f"[dim]collect: answering {len(retain_p) + len(normal_p)} bank prompts "
        f"({len(dropped)} dropped as too close to the forget prompts)[/dim]")
    bank_out = answer(model, encoder, [b.prompt for b in retain_p + normal_p], settings, 0)
    retain_rows = [{"prompt": b.prompt, "response": o, "category": b.category}
                   for b, o in zip(retain_p, bank_out[: len(retain_p)]) if o.strip()]
    normal_rows = [{"prompt": b.prompt, "response": o, "category": b.category}
                   for b, o in zip(normal_p, bank_out[len(retain_p):]) if o.strip()]
    empty = len(retain_p) + len(normal_p) - len(retain_rows) - len(normal_rows)
    if not retain_rows:
        raise UnlearnError("collect: the model gave no answer to any retain bank prompt (all empty); "
                           "check the template (--template)")

    summary = {
        "model": model_name,
        "kind": kind,
        "template": template,
        "judge": WRONG_JUDGE if own else judge_spec or "given",
        "own_answers": own,
        "decoding": decoding(settings) if kind == "prompts" or own else None,
        "prompts": len(rows),
        "answers": len(answers),
        "forget": {"answers": len(bad), "prompts": sum(1 for n in per_prompt.values() if n)},
        "bad_per_prompt": [{"prompt": p, "bad": n, "of": settings.samples if kind == "prompts" or own else 1}
                           for p, n in per_prompt.items()],
        "unreadable": sum(1 for a in answers if a["harmful"] is None),
        "clean_prompts": [p for p, n in per_prompt.items() if n == 0],
        "test_prompts": len(test_rows),
        "bank": {
            "size": len(bank), "threshold": threshold, "retain": len(retain_rows), "normal": len(normal_rows),
            "empty_answers": empty,
            "dropped": [{"prompt": b.prompt, "cosine": round(float(c), 4), "nearest": near}
                        for b, c, near in dropped],
        },
        "seconds": None,
    }
    summary["seconds"] = round(time.time() - t0, 1)
    files = {
        "forget.jsonl": bad,
        "answers.jsonl": answers,
        "retain.jsonl": retain_rows,
        "normal.jsonl": normal_rows,
    }
    if test_rows:
        files["test.jsonl"] = [{"prompt": r.prompt} for r in test_rows]
    _write_folder(out, files, summary, overwrite)
    return Collected(out, summary)


def load_for_collect(model_name: str) -> tuple[Any, Any]:
    import torch

    from unlearn.config.sections import ModelConfig
    from unlearn.models import load_model

    model, tokenizer = load_model(ModelConfig(name=model_name))
    if torch.cuda.is_available():
        model = model.to("cuda")
    return model, tokenizer


def _write_folder(out: Path, files: dict[str, list[dict[str, Any]]], summary: dict[str, Any], overwrite: bool) -> None:
    """Every file into a temporary sibling, then one rename: the folder appears whole or not at all."""
    from unlearn.files import replace_dir, write_text_atomic

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{random.randrange(1 << 30):08x}"
    tmp.mkdir()
    try:
        for name, rows in files.items():
            write_text_atomic(tmp / name, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        write_text_atomic(tmp / "clean_prompts.txt", "".join(p + "\n" for p in summary["clean_prompts"]))
        write_text_atomic(tmp / "collect.json", json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
        if out.exists() and overwrite:
            replace_dir(tmp, out)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


__all__ = ["CollectSettings", "Collected", "NOTHING_TO_UNLEARN", "collect", "asdict"]
