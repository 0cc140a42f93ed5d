"""Checks on a run's examples that deserve a warning, not an error: each returns how many."""

from __future__ import annotations

from collections import Counter
from typing import Sequence

from unlearn.data.records import Example


def duplicates(examples: Sequence[Example]) -> int:
    """Examples that repeat an earlier one exactly (same prompt and response)."""
    counts = Counter((e.prompt, e.response) for e in examples)
    return sum(n - 1 for n in counts.values())


def overlap(forget: Sequence[Example], retain: Sequence[Example]) -> tuple[int, int]:
    """(forget examples also in retain with the same prompt and response, forget examples whose
    prompt alone appears in retain). The first trains the model to forget and keep the same thing."""
    pairs = {(e.prompt, e.response) for e in retain}
    prompts = {e.prompt for e in retain}
    same = sum((e.prompt, e.response) in pairs for e in forget)
    prompt_only = sum(e.prompt in prompts and (e.prompt, e.response) not in pairs for e in forget)
    return same, prompt_only


def data_warnings(
    forget: Sequence[Example] | None, retain: Sequence[Example] | None, *, global_batch: int
) -> list[tuple[str, int, str]]:
    """(key, count, message) for each problem found; the key and count go to run.json."""
    out: list[tuple[str, int, str]] = []
    for role, examples in (("forget", forget), ("retain", retain)):
        if not examples:
            continue
        n = duplicates(examples)
        if n:
            out.append((f"{role}_duplicates", n, f"{n} of {len(examples)} {role} examples are exact duplicates of another"))
        if global_batch > len(examples):
            out.append((
                f"{role}_smaller_than_batch", len(examples),
                f"the {role} set has {len(examples)} examples, fewer than one batch ({global_batch} = "
                "train.batch_size x processes): every batch repeats examples",
            ))
    if forget and retain:
        same, prompt_only = overlap(forget, retain)
        if same:
            out.append((
                "forget_retain_overlap", same,
                f"{same} forget examples also appear in retain (same prompt and response): the run "
                "is told to forget and to keep them at once",
            ))
        if prompt_only:
            out.append((
                "forget_retain_same_prompt", prompt_only,
                f"{prompt_only} forget prompts also appear in retain with another response",
            ))
    return out
