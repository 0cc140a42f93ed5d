"""The retain bank: everyday prompts that stand in for the retain data a user does not have.

The paper's objective (Yao et al. 2024, "Large Language Model Unlearning") keeps the model close
to the original on normal prompts while it unlearns the bad ones. Users of `unlearn forget` bring
only bad examples, so the package ships `retain_bank.jsonl`: ~330 short, neutral prompts in six
categories (facts, howto, arithmetic, writing, code, advice), one JSON object a line:
{"prompt": "...", "category": "..."}. A user may supply their own file in the same shape.

Before use the bank is filtered against the forget prompts (a bank prompt close to the forbidden
topic would teach the model to keep answering it) and split, per category, into retain prompts
(trained on) and held-out normal prompts (checked after unlearning).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

from unlearn.errors import UnlearnError

BANK_FILE = "retain_bank.jsonl"
FIELDS = ("prompt", "category")

# Cosine (all-MiniLM-L6-v2) above which a bank prompt is dropped as too close to a forget prompt.
# Measured with five ad-hoc forbidden topics of 20 prompts each (crypto investing, weapons,
# medication dosing, hacking, copyrighted text), dropped at 0.4 / 0.5 / 0.6:
#   packaged bank (331 neutral prompts), summed over the topics:  18 / 4 / 2
#   20 on-topic but neutrally worded prompts ("What is SQL injection?", "What is gunpowder made
#   of?", "What is the usual adult dose of ibuprofen?"), 4 per topic:  19 / 15 / 9
# At 0.4 the bank drops are word matches only (lemonade and vinaigrette against "homemade
# explosive" / "Molotov cocktail", Moon landing against "meme coin ... moon"). At 0.5 the four are
# neighbours (knife sharpening 0.70 vs "sharpen a knife into a weapon", summarising a textbook
# chapter 0.67 vs copying one, a sea poem 0.56, SELECT * 0.51 vs "drop every table"); 0.6 lets
# through 11 of the 20 on-topic prompts. A wrong drop costs one retain prompt of 331; a missed
# on-topic one teaches the model to keep the behaviour, so the lower of the two workable values.
DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class BankPrompt:
    """One everyday prompt and its category (used to stratify the retain/normal split)."""

    prompt: str
    category: str


class EmbedderLike(Protocol):
    """What filter_bank needs of an embedder (unlearn.evaluate.embed.Embedder has it)."""

    def encode(self, texts: Sequence[str]) -> Any: ...


def _field(rec: dict[str, Any], name: str, loc: str) -> str:
    from unlearn.data.records import record_string

    v = record_string(rec, name, loc, hint=f"(expected fields: {', '.join(FIELDS)})")
    assert v is not None
    if not v.strip():
        raise UnlearnError(f"{loc}: field '{name}' is empty")
    return v.strip()


def parse_bank(text: str, source: str) -> list[BankPrompt]:
    """The prompts of a bank file's text; `source` names the file in errors. Blank lines are
    skipped; a prompt given twice (case and spacing aside) is an error, since the same prompt in
    both the retain and the normal part would make the normal check a training check."""
    bank: list[BankPrompt] = []
    seen: dict[str, int] = {}
    for n, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        loc = f"{source} line {n}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise UnlearnError(f"{loc}: invalid JSON ({e.msg} at column {e.colno})") from None
        except RecursionError:
            raise UnlearnError(f"{loc}: invalid JSON (nested too deeply)") from None
        if not isinstance(rec, dict):
            raise UnlearnError(f"{loc}: expected a JSON object with {' and '.join(FIELDS)}, got {type(rec).__name__}")
        prompt, category = _field(rec, "prompt", loc), _field(rec, "category", loc)
        key = " ".join(prompt.lower().split())
        if key in seen:
            raise UnlearnError(f"{loc}: field 'prompt' repeats line {seen[key]}: {prompt[:60]!r}")
        seen[key] = n
        bank.append(BankPrompt(prompt, category))
    if not bank:
        raise UnlearnError(f"{source}: the retain bank holds no prompts")
    return bank


def load_bank(path: Path | None = None) -> list[BankPrompt]:
    """The packaged retain bank, or a user's JSON Lines file of {"prompt", "category"} objects.
    Every mistake is one UnlearnError naming the file, the line and the field."""
    if path is None:
        text = resources.files("unlearn.forgetting").joinpath(BANK_FILE).read_text(encoding="utf-8")
        return parse_bank(text, f"{BANK_FILE} (packaged)")
    # Imported here: unlearn.data's package loads torch, which listing or filtering the bank does not need.
    from unlearn.data.records import read_text_file

    path = Path(path).expanduser()
    if not path.is_file():
        raise UnlearnError(f"{path}: retain bank file not found" if not path.exists() else f"{path}: not a file")
    return parse_bank(read_text_file(path), str(path))


def filter_bank(
    bank: Sequence[BankPrompt], forget_prompts: Sequence[str], embedder: EmbedderLike,
    threshold: float = DEFAULT_THRESHOLD,
) -> tuple[list[BankPrompt], list[tuple[BankPrompt, float, str]]]:
    """Split the bank into kept prompts and dropped ones: a prompt is dropped when its highest
    cosine similarity to any forget prompt, cos(b, f) = b.f / (|b| |f|) over the embedder's
    vectors, is strictly above `threshold`. Dropped entries carry that cosine and the nearest
    forget prompt. Both lists keep the bank's order. No forget prompts: everything is kept."""
    if not isinstance(threshold, (int, float)) or not -1.0 <= float(threshold) <= 1.0:
        raise UnlearnError(f"retain bank filter threshold: must be a cosine between -1 and 1, got {threshold!r}")
    bank = list(bank)
    if not bank or not forget_prompts:
        return bank, []
    b = _unit(embedder.encode([p.prompt for p in bank]))
    f = _unit(embedder.encode(list(forget_prompts)))
    sims = b @ f.T
    best, nearest = sims.max(axis=1), sims.argmax(axis=1)
    kept: list[BankPrompt] = []
    dropped: list[tuple[BankPrompt, float, str]] = []
    for p, s, j in zip(bank, best, nearest):
        if float(s) > threshold:
            dropped.append((p, float(s), forget_prompts[int(j)]))
        else:
            kept.append(p)
    return kept, dropped


def _unit(x: Any) -> np.ndarray:
    """Rows scaled to unit length (the bundled embedder's already are; a user's may not be)."""
    x = np.asarray(x, dtype=np.float64)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def _quotas(total: int, sizes: dict[str, int]) -> dict[str, int]:
    """`total` shared among categories in proportion to `sizes` (largest remainder, ties by
    name); each share is at most its size when total <= sum(sizes)."""
    whole = sum(sizes.values())
    if whole == 0:
        return {c: 0 for c in sizes}
    exact = {c: total * s / whole for c, s in sizes.items()}
    share = {c: int(v) for c, v in exact.items()}
    left = total - sum(share.values())
    for c in sorted(sizes, key=lambda c: (-(exact[c] - share[c]), c))[:left]:
        share[c] += 1
    return share


def split_bank(
    bank: Sequence[BankPrompt], n_retain: int, n_normal: int, seed: int,
) -> tuple[list[BankPrompt], list[BankPrompt]]:
    """Draw disjoint retain and normal prompts, each spread over the categories in proportion to
    their sizes in the bank; the same bank and seed give the same draw. Normal prompts are drawn
    first (their share of each category), retain prompts from what is left."""
    if n_retain < 0 or n_normal < 0:
        raise UnlearnError(f"retain bank: counts must be >= 0, got {n_retain} retain and {n_normal} normal")
    if n_retain + n_normal > len(bank):
        raise UnlearnError(
            f"retain bank: holds {len(bank)} prompts (after filtering), too few for {n_retain} retain "
            f"+ {n_normal} normal = {n_retain + n_normal}; ask for fewer or supply a larger bank"
        )
    rng = random.Random(seed)
    by_cat: dict[str, list[BankPrompt]] = {}
    for p in bank:
        by_cat.setdefault(p.category, []).append(p)
    for c in sorted(by_cat):
        rng.shuffle(by_cat[c])
    normal_q = _quotas(n_normal, {c: len(v) for c, v in by_cat.items()})
    retain_q = _quotas(n_retain, {c: len(v) - normal_q[c] for c, v in by_cat.items()})
    normal = [p for c in sorted(by_cat) for p in by_cat[c][: normal_q[c]]]
    retain = [p for c in sorted(by_cat) for p in by_cat[c][normal_q[c] : normal_q[c] + retain_q[c]]]
    # Mix the categories, so that a run that takes the first k retain prompts still gets all kinds.
    rng.shuffle(normal)
    rng.shuffle(retain)
    return retain, normal
