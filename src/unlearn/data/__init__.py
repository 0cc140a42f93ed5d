"""Examples in, token batches out: loading, templates, label masks, step batches."""

from __future__ import annotations

from unlearn.config import SourceConfig
from unlearn.data.batch import Batch, StepBatcher, collate, encode_examples
from unlearn.data.encode import IGNORE, Encoded, Encoder, TruncationReport
from unlearn.data.records import Example, load_examples
from unlearn.data.split import split_examples, split_indices
from unlearn.errors import UnlearnError

__all__ = [
    "Batch",
    "Encoded",
    "Encoder",
    "Example",
    "IGNORE",
    "StepBatcher",
    "TruncationReport",
    "collate",
    "encode_examples",
    "load_examples",
    "load_source",
    "split_examples",
    "split_indices",
]


def load_source(source: SourceConfig, role: str) -> list:
    """Load the examples a config source names. `role` (forget/retain/mismatch) is for messages."""
    if source.dataset:
        from unlearn.data.sources import get_source

        examples = get_source(source.dataset)(source, role)
    elif source.path:
        examples = load_examples(
            source.path,
            split=source.split,
            prompt_field=source.prompt_field,
            response_field=source.response_field,
        )
    else:
        raise UnlearnError(f"data.{role}: set 'path' (a file or folder) or 'dataset' (an adapter name)")
    if source.limit is not None:
        examples = examples[: source.limit]
    if not examples:
        raise UnlearnError(f"{source.describe()}: the {role} set is empty")
    return examples
