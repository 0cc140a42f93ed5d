"""Train / validation / test splits of a data set, as in the paper (forget data 70/10/20)."""

from __future__ import annotations

import random
from typing import Sequence, TypeVar

T = TypeVar("T")


def split_indices(n: int, fractions: Sequence[float], seed: int) -> tuple[list[int], list[int], list[int]]:
    """Indices of the train, val and test parts of n items: a seeded shuffle, cut by the fractions
    (rounded; train gets at least one item), each part in the original order."""
    order = list(range(n))
    random.Random(f"split-{seed}").shuffle(order)
    n_train = min(n, max(1, round(fractions[0] * n)))
    n_val = min(n - n_train, round(fractions[1] * n))
    parts = order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :]
    return sorted(parts[0]), sorted(parts[1]), sorted(parts[2])


def split_examples(items: Sequence[T], fractions: Sequence[float], seed: int) -> tuple[list[T], list[T], list[T]]:
    """(train, val, test) parts of `items` (see split_indices)."""
    tr, va, te = split_indices(len(items), fractions, seed)
    return [items[i] for i in tr], [items[i] for i in va], [items[i] for i in te]
