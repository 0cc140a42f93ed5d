"""What `unlearn collect` and `unlearn forget` read: prompts, or (prompt, bad answer) pairs.

    prompts.txt            one prompt per line (blank lines skipped)
    prompts.jsonl / .csv   a prompt field: prompt, Behavior (HarmBench-style CSV), question, goal,
                           instruction, or the one given; a response field (response, answer,
                           bad_answer, output) makes the rows pairs; an optional right answer
                           (right_answer, correct_answer, best_answer) is kept for the
                           hallucination rate
    a dataset adapter      `dataset=NAME` with the file's path (unlearn datasets lists them): the
                           adapter's (prompt, response) pairs

A HarmBench-style row with a ContextString gets it in front of the behaviour, as HarmBench's
contextual behaviours are asked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from unlearn.errors import UnlearnError, text_problem

PROMPT_FIELDS = ("prompt", "Behavior", "behavior", "question", "Question", "goal", "instruction")
RESPONSE_FIELDS = ("response", "bad_answer", "answer", "output")
RIGHT_FIELDS = ("right_answer", "correct_answer", "best_answer", "Best Answer")
CONTEXT_FIELD = "ContextString"


@dataclass
class PromptRow:
    """One prompt; `response`: a given bad answer (pairs), None when the model is to answer it."""

    prompt: str
    response: Optional[str] = None
    right: Optional[str] = None  # a right answer, when the pairs come with one
    where: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


def _pick(rec: dict[str, Any], given: Optional[str], candidates: Sequence[str]) -> Optional[str]:
    if given is not None:
        return given
    return next((c for c in candidates if c in rec), None)


def _string(rec: dict[str, Any], name: str, where: str, required: bool = True) -> Optional[str]:
    from unlearn.data.records import record_string

    return record_string(rec, name, where, required=required)


def read_prompts(
    path: str | Path,
    *,
    prompt_field: Optional[str] = None,
    response_field: Optional[str] = None,
    dataset: Optional[str] = None,
) -> list[PromptRow]:
    """The prompts (or pairs) of a file; duplicates of a prompt without a given answer are kept once.
    UnlearnError naming the file, the line and the field for bad input, and for a file with none."""
    p = Path(path).expanduser()
    if not p.exists():
        raise UnlearnError(f"{p}: prompt file not found")
    if dataset is not None:
        rows = _from_adapter(p, dataset)
    elif p.is_file() and p.suffix.lower() in ("", ".txt", ".text", ".md"):
        rows = _from_text(p)
    else:
        rows = _from_records(p, prompt_field, response_field)
    seen: set[str] = set()
    out = []
    for r in rows:
        if r.response is None:
            if r.prompt in seen:
                continue
            seen.add(r.prompt)
        out.append(r)
    if not out:
        raise UnlearnError(f"{p}: no prompts (the file is empty)")
    return out


def _from_text(p: Path) -> list[PromptRow]:
    from unlearn.data.records import read_text_file

    rows = []
    for n, line in enumerate(read_text_file(p).split("\n"), start=1):
        text = line.strip()
        if not text:
            continue
        problem = text_problem(text)
        if problem:
            raise UnlearnError(f"{p} line {n}: the prompt {problem}")
        rows.append(PromptRow(text, where=f"{p} line {n}"))
    return rows


def _from_records(p: Path, prompt_field: Optional[str], response_field: Optional[str]) -> list[PromptRow]:
    from unlearn.data.records import read_records

    rows = []
    for loc, rec in read_records(p):
        where = f"{p} {loc}"
        pf = _pick(rec, prompt_field, PROMPT_FIELDS)
        if pf is None:
            raise UnlearnError(f"{where}: no prompt field (expected one of {', '.join(PROMPT_FIELDS)}; "
                               "or name it with --prompt-field)")
        prompt = _string(rec, pf, where)
        assert prompt is not None
        context = _string(rec, CONTEXT_FIELD, where, required=False)
        if context and context.strip():
            prompt = f"{context.strip()}\n\n---\n\n{prompt}"
        rf = _pick(rec, response_field, RESPONSE_FIELDS)
        response = _string(rec, rf, where, required=response_field is not None) if rf else None
        if response is not None and not response.strip():
            raise UnlearnError(f"{where}: field '{rf}' is empty (give a bad answer, or leave the field out "
                               "and let the model answer)")
        right_field = _pick(rec, None, RIGHT_FIELDS)
        right = _string(rec, right_field, where, required=False) if right_field else None
        if not prompt.strip():
            raise UnlearnError(f"{where}: field '{pf}' is empty")
        meta = {k: v for k, v in rec.items() if k not in (pf, rf, right_field) and _plain(v)}
        rows.append(PromptRow(prompt, response, right or None, where, meta))
    return rows


def _plain(v: Any) -> bool:
    return isinstance(v, (str, int, float, bool)) or v is None


def _from_adapter(p: Path, dataset: str) -> list[PromptRow]:
    from unlearn.config import SourceConfig
    from unlearn.data.sources import get_source

    examples = get_source(dataset)(SourceConfig(dataset=dataset, path=str(p)), "forget")
    rows = []
    for e in examples:
        right = e.meta.get("right_answer") or e.meta.get("best_answer")
        rows.append(PromptRow(e.prompt, e.response, right if isinstance(right, str) else None,
                              e.meta.get("where", "") or e.where, {}))
    return rows


def kind_of(rows: Sequence[PromptRow]) -> str:
    """'pairs' when every row has a given answer, 'prompts' when none has; mixed files are refused."""
    given = [r.response is not None for r in rows]
    if all(given):
        return "pairs"
    if not any(given):
        return "prompts"
    first = next(r for r in rows if r.response is None)
    raise UnlearnError(f"{first.where}: no answer, while other rows give one; give every row a bad answer "
                       "or none (then the model answers them)")
