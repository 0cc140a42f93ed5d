"""Loss terms and their weighted sum. Each term lives in its own module and registers itself."""

from unlearn.objective import ga, kl, mismatch, nll  # noqa: F401  (registration)
from unlearn.objective.context import ResponseLM, StepContext, pack_rows, response_logits
from unlearn.objective.registry import Objective, Term, available_terms, get_term, register_term

__all__ = [
    "Objective",
    "ResponseLM",
    "StepContext",
    "Term",
    "available_terms",
    "get_term",
    "register_term",
    "pack_rows",
    "response_logits",
]
