"""Loss terms and their weighted sum. Each term lives in its own module of this package and
registers itself (see registry.py); the modules are found by discover_terms, not listed here.

This package's namespace is filled lazily: `unlearn.objective.presets` (read by the config schema)
must not import torch or the step context.
"""

from __future__ import annotations

from unlearn.discovery import lazy_exports

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
    "StepContext": "context",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
