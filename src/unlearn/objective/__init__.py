"""Loss terms and their weighted sum. Each term lives in its own module of this package and
registers itself (see registry.py); the modules are found by discover_terms, not listed here.

This package's namespace is filled lazily: `unlearn.objective.presets` (read by the config schema)
must not import torch or the step context.
"""

from __future__ import annotations

from unlearn.discovery import lazy_exports

# Each submodule -> the public names it defines, imported on first use (see unlearn.discovery).
__getattr__, __all__ = lazy_exports(__name__, {
    "registry": "Binding Objective Term WeightedTerm available_terms discover_terms get_term register_term",
    "presets": "PRESETS register_preset",
    "context": "StepContext",
})
