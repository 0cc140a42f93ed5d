"""The 95 % interval of a rate: Wilson's score interval, computed here and nowhere else.

Evaluation sets are often 18-200 prompts; a rate without its interval misleads (0 of 18 is
[0.0, 17.6] %). metrics.json carries the interval next to every rate (evaluate/score.py), the
verdict and the reports show it.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

Z95 = 1.959963984540054  # the standard normal quantile of 0.975


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of k successes in n trials:

        centre = (p + z²/2n) / (1 + z²/n),  half = z √(p(1-p)/n + z²/4n²) / (1 + z²/n),  p = k/n

    e.g. k=0, n=18 -> (0.0, 0.176); k=9, n=18 -> (0.290, 0.710). ValueError for n < 1 or k outside [0, n]."""
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"wilson: need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def rate_interval(per_example: Sequence[Optional[float]]) -> Optional[tuple[float, float]]:
    """The Wilson interval of a rate from its per-example values; None unless every value counted
    (None is left out, as in the aggregate) is a yes/no (0 or 1), i.e. unless the metric is a rate."""
    kept = [v for v in per_example if v is not None]
    if not kept or any(v not in (0.0, 1.0) for v in kept):
        return None
    return wilson(int(sum(kept)), len(kept))
