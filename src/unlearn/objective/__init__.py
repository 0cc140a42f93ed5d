"""Loss terms and their weighted sum. Each term lives in its own module and registers itself."""

from unlearn.objective import dpo, ga, idk, kl, mismatch, nll, npo, rmu, simnpo  # noqa: F401  (registration)
from unlearn.objective.context import StepContext
from unlearn.objective.registry import (
    Binding,
    Objective,
    Term,
    available_terms,
    get_term,
    register_term,
)

__all__ = [
    "Binding",
    "Objective",
    "StepContext",
    "Term",
    "available_terms",
    "get_term",
    "register_term",
]
