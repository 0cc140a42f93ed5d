"""Examples in, token batches out: loading, templates, label masks, step batches."""

from __future__ import annotations

from unlearn.config import SourceConfig
from unlearn.data.batch import Batch, StepBatcher, collate, encode_examples
from unlearn.data.encode import IGNORE, Encoded, Encoder, TruncationReport
from unlearn.data.records import Example, load_examples
from unlearn.data.split import group_ids, normalise_prompt, split_examples, split_indices
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
    "group_ids",
    "load_examples",
    "load_source",
    "normalise_prompt",
    "group_of",
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
    name = getattr(source, "group_field", None)  # data.forget's (ForgetSourceConfig) only
    if name:
        for i, e in enumerate(examples):
            where = e.where or e.meta.get("where") or f"{source.describe()} item {i}"
            e.group = group_of(e.meta, name, where, role)
    return examples


def group_of(record: dict, name: str, where: str, role: str = "forget") -> object:
    """The value of the group field `name` of a record (or an example's metadata): what keeps it in
    one part of eval.split. A missing or empty value is an error naming the record and the field."""
    value = record.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        state = "missing" if value is None else "empty"
        raise UnlearnError(f"{where}: {state} field '{name}' (data.{role}.group_field)")
    return value
