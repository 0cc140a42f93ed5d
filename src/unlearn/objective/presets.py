"""Named objectives: `objective: npo` in a config (or `unlearn compare --methods npo`) means these weights.

The built-in methods are listed below. A module that adds a loss term may add its method too:

    register_preset("mine", {"mine": 1.0, "kl": 1.0})

This module imports nothing heavy (the config schema reads it); a name not found here makes it
import the term modules first, since one of them may register it.
"""

from __future__ import annotations

from unlearn.discovery import import_submodules

DEFAULT_PRESET = "paper"

# Insertion order is the order `unlearn terms` and error messages list them in.
PRESETS: dict[str, dict[str, float]] = {
    "paper": {"ga": 0.5, "mismatch": 1.0, "kl": 1.0},
    "ga": {"ga": 1.0},
    "ga_mismatch": {"ga": 1.0, "mismatch": 1.0},
    "graddiff": {"ga": 1.0, "nll": 1.0},
    "npo": {"npo": 1.0, "kl": 1.0},
    "simnpo": {"simnpo": 1.0, "nll": 1.0},
    "idk": {"idk": 1.0, "nll": 1.0},
    "dpo": {"dpo": 1.0, "nll": 1.0},
    "rmu": {"rmu": 1.0},
    "sft": {"nll": 1.0},
}


def register_preset(name: str, weights: dict[str, float]) -> None:
    """Add a named objective (term -> weight). Registering a name twice is an error."""
    if name in PRESETS:
        raise ValueError(f"objective preset '{name}' is registered twice")
    if not weights:
        raise ValueError(f"objective preset '{name}' names no term")
    PRESETS[name] = {k: float(v) for k, v in weights.items()}


def preset_names() -> list[str]:
    """Every preset's name, those the term modules register included (they are imported first)."""
    import_submodules("unlearn.objective")
    return list(PRESETS)


def preset_weights(name: str) -> dict[str, float] | None:
    """A copy of the preset's weights, or None when no preset has that name."""
    if name not in PRESETS:
        import_submodules("unlearn.objective")  # a term module may register the preset
    weights = PRESETS.get(name)
    return dict(weights) if weights is not None else None
