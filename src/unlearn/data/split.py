"""Train / validation / test splits of a data set, as in the paper (forget data 70/10/20), by group.

A part is cut from whole prompt groups: examples with the same normalised prompt (PKU-SafeRLHF gives
one prompt two unsafe responses, and repeats prompts across rows), or the same value of a
source's `group_field` (a person, a book), always land in the same part. Otherwise the "unseen"
test prompts would have been trained on.
"""

from __future__ import annotations

import json
import random
from typing import Any, Optional, Sequence, TypeVar

T = TypeVar("T")


def normalise_prompt(text: str) -> str:
    """The form in which two prompts count as the same: case folded, whitespace runs as one space,
    no leading or trailing whitespace."""
    return " ".join(text.casefold().split())


def group_value(value: Any) -> str:
    """A group_field value as a key: strings normalised like prompts, anything else as JSON."""
    return normalise_prompt(value) if isinstance(value, str) else json.dumps(value, sort_keys=True)


def group_ids(prompts: Sequence[Optional[str]], groups: Optional[Sequence[Any]] = None) -> list[int]:
    """A group number for each item, numbered by first appearance: items sharing a normalised prompt
    or a group value (None: none) are in one group, and so, transitively, are their groups.

    An empty or missing prompt joins nothing (it says nothing about what the example is about)."""
    parent = list(range(len(prompts)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[tuple[str, str], int] = {}
    for i, prompt in enumerate(prompts):
        keys = []
        if prompt is not None and normalise_prompt(prompt):
            keys.append(("prompt", normalise_prompt(prompt)))
        if groups is not None and groups[i] is not None:
            keys.append(("group", group_value(groups[i])))
        for key in keys:
            j = first.setdefault(key, i)
            a, b = root(i), root(j)
            if a != b:
                parent[max(a, b)] = min(a, b)  # the earlier item stays the root: stable numbering
    number: dict[int, int] = {}
    return [number.setdefault(root(i), len(number)) for i in range(len(prompts))]


def split_indices(
    n: int, fractions: Sequence[float], seed: int, groups: Optional[Sequence[int]] = None
) -> tuple[list[int], list[int], list[int]]:
    """Indices of the train, val and test parts of n items, each part in the original order.

    The parts hold round(fractions[0] * n) items (at least one), round(fractions[1] * n) and the
    rest. The groups (`groups[i]`: item i's group number from group_ids; None: every item alone)
    are shuffled with the seed and dealt in that order, each whole to the first part it still fits
    in; a group that fits nowhere goes to the part with the most room for its size (room / size
    wanted). So with every item alone this is the example-wise cut of earlier versions (same seed,
    same parts), and a part may miss its size by less than one group."""
    ids = list(range(n)) if groups is None else list(groups)
    members: dict[int, list[int]] = {}
    for i, g in enumerate(ids):
        members.setdefault(g, []).append(i)
    order = sorted(members)
    random.Random(f"split-{seed}").shuffle(order)
    n_train = min(n, max(1, round(fractions[0] * n)))
    n_val = min(n - n_train, round(fractions[1] * n))
    want = (n_train, n_val, n - n_train - n_val)
    parts: tuple[list[int], list[int], list[int]] = ([], [], [])
    for g in order:
        size = len(members[g])
        fits = [k for k in range(3) if len(parts[k]) + size <= want[k]]
        if fits:
            k = fits[0]
        else:
            k = max((k for k in range(3) if want[k]), key=lambda k: ((want[k] - len(parts[k])) / want[k], -k))
        parts[k].extend(members[g])
    if not parts[0]:  # train is never empty: it takes the first group dealt
        first = members[order[0]]
        for part in parts[1:]:
            part[:] = [i for i in part if i not in first]
        parts[0].extend(first)
    return sorted(parts[0]), sorted(parts[1]), sorted(parts[2])


def example_groups(items: Sequence[Any]) -> list[int]:
    """group_ids of examples: by their normalised prompt and their `group` (set by load_source from
    the source's group_field)."""
    return group_ids([getattr(e, "prompt", None) for e in items], [getattr(e, "group", None) for e in items])


def split_examples(items: Sequence[T], fractions: Sequence[float], seed: int) -> tuple[list[T], list[T], list[T]]:
    """(train, val, test) parts of examples (see split_indices), by example_groups."""
    tr, va, te = split_indices(len(items), fractions, seed, example_groups(items))
    return [items[i] for i in tr], [items[i] for i in va], [items[i] for i in te]
