"""Loss terms and their weighted sum. Each term lives in its own module of this package and
registers itself (see registry.py); the modules are found by discover_terms, not listed here.

This package's namespace is filled lazily: `unlearn.objective.presets` (read by the config schema)
must not import torch or the step context.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Binding": "registry",
    "Objective": "registry",
    "Term": "registry",
    "WeightedTerm": "registry",
    "available_terms": "registry",
    "discover_terms": "registry",
    "get_term": "registry",
    "register_term": "registry",
    "PRESETS": "presets",
    "register_preset": "presets",
    "ResponseLM": "context",
    "StepContext": "context",
    "pack_rows": "context",
    "response_logits": "context",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """`from unlearn.objective import Objective` imports the module that defines it on first use."""
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
