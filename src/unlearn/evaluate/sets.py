"""Evaluation sets: forget, forget_test (held out, the paper's "unseen"), retain, normal.

Each set is read and checked in full before any model is loaded: a record lacking a field that a
configured metric needs is an error naming the file, the line and the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from unlearn.config import EVAL_SETS, SET_TARGETS, Config, EvalSetConfig, SourceConfig
from unlearn.errors import UnlearnError

ROLES = EVAL_SETS


@dataclass
class EvalItem:
    prompt: str
    target: Optional[str] = None  # the response (kind text: the true continuation)
    answers: Optional[list[str]] = None  # match: contains
    hallucinated: Optional[str] = None
    where: str = ""


@dataclass
class EvalSet:
    role: str
    source: str
    kind: str = "qa"
    match: str = "bleu"
    items: list[EvalItem] = field(default_factory=list)

    @property
    def target(self) -> str:
        """What the set's targets are to the unlearned model: forbidden or desired (SET_TARGETS)."""
        return SET_TARGETS[self.role]

    @property
    def has_targets(self) -> bool:
        return all(i.target is not None for i in self.items)

    @property
    def has_hallucinated(self) -> bool:
        return all(i.hallucinated is not None for i in self.items)

    @property
    def prompts(self) -> list[str]:
        return [i.prompt for i in self.items]

    @property
    def targets(self) -> list[str]:
        return [i.target or "" for i in self.items]

    def head(self, n: int) -> "EvalSet":
        return EvalSet(self.role, self.source, self.kind, self.match, self.items[:n])


def _records(source: SourceConfig, role: str) -> list[tuple[str, dict[str, Any]]]:
    """(location, record) pairs of a source; files keep every field so metrics can ask for theirs."""
    if source.dataset:
        from unlearn.data import load_source

        examples = load_source(source, role)
        return [
            (f"{source.describe()} item {i}", {**e.meta, source.prompt_field: e.prompt, source.response_field: e.response})
            for i, e in enumerate(examples)
        ]
    if not source.path:
        raise UnlearnError(f"eval.{role}: set 'path' (a file or folder) or 'dataset'")
    from unlearn.data.records import read_records

    out = [(f"{source.path} {loc}", rec) for loc, rec in read_records(source.path, source.split)]
    return out[: source.limit] if source.limit is not None else out


def _string(rec: dict[str, Any], name: str, where: str, why: str, required: bool) -> Optional[str]:
    if name not in rec or rec[name] is None:
        if required:
            raise UnlearnError(f"{where}: missing field '{name}' (needed by {why})")
        return None
    v = rec[name]
    if not isinstance(v, str):
        raise UnlearnError(f"{where}: field '{name}' must be a string, got {type(v).__name__}")
    return v


def _item(rec: dict[str, Any], where: str, role: str, sc: EvalSetConfig, tokenizer: Any) -> EvalItem:
    key = f"eval.{role}"
    if sc.kind == "text":
        passage = _string(rec, sc.response_field, where, f"{key}.kind: text", True)
        head = _string(rec, sc.prompt_field, where, "", False) or ""
        passage = head + passage
        offsets = tokenizer(passage, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        if len(offsets) <= sc.prompt_tokens:
            raise UnlearnError(
                f"{where}: passage has {len(offsets)} tokens, not more than {key}.prompt_tokens="
                f"{sc.prompt_tokens}: nothing is left to compare"
            )
        cut = offsets[sc.prompt_tokens - 1][1]
        target = passage[cut : cut + sc.target_chars]
        if not target.strip():
            raise UnlearnError(f"{where}: nothing but whitespace follows the first {sc.prompt_tokens} tokens")
        return EvalItem(passage[:cut], target, where=where)
    prompt = _string(rec, sc.prompt_field, where, f"{key} (prompts to generate from)", True)
    target = _string(rec, sc.response_field, where, f"{key}: the metrics of the {role} set", role != "normal")
    if target is not None and not target.strip():
        if role != "normal":
            raise UnlearnError(f"{where}: field '{sc.response_field}' is empty")
        target = None
    answers = None
    if sc.match == "contains":
        if sc.answer_field:
            if sc.answer_field not in rec or rec[sc.answer_field] is None:
                raise UnlearnError(f"{where}: missing field '{sc.answer_field}' (needed by {key}.match: contains)")
            raw = rec[sc.answer_field]
            answers = [raw] if isinstance(raw, str) else raw
            if not isinstance(answers, list) or not answers or not all(isinstance(a, str) and a.strip() for a in answers):
                raise UnlearnError(
                    f"{where}: field '{sc.answer_field}' must be a non-empty string or list of strings"
                )
        elif target is not None:
            answers = [target]
    hallucinated = None
    if sc.hallucinated_field:
        hallucinated = _string(rec, sc.hallucinated_field, where, f"{key}.hallucinated_field", True)
    return EvalItem(prompt, target, answers, hallucinated, where)


_SOURCE_KEYS = (
    "path", "dataset", "split", "limit", "prompt_field", "response_field", "passage_words", "prompt_words",
)
_EVAL_KEYS = ("kind", "match", "answer_field", "hallucinated_field", "prompt_tokens", "target_chars")


def _on_data(src: SourceConfig, sc: Optional[EvalSetConfig]) -> EvalSetConfig:
    """The training source `src` with the eval options of `sc` (e.g. match: contains).

    A response_field set on the eval set names the target instead: HaluEval trains on the
    hallucinated answer, but the hallucination rate needs the right one as the target
    (`eval.forget: {response_field: right_answer, hallucinated_field: hallucinated_answer}`)."""
    opts = {k: getattr(sc, k) for k in _EVAL_KEYS} if sc is not None else {}
    keys = {k: getattr(src, k) for k in _SOURCE_KEYS}
    if sc is not None and sc.response_field != "response":
        keys["response_field"] = sc.response_field
    return EvalSetConfig(**keys, **opts)


def _set_config(cfg: Config, role: str) -> tuple[Optional[EvalSetConfig], bool]:
    """(the set's config, whether it comes from data.forget); None: the set has no data."""
    sc: Optional[EvalSetConfig] = getattr(cfg.eval, role)
    if sc is not None and (sc.path or sc.dataset):
        return sc, False
    if (role == "forget" or (role == "forget_test" and cfg.eval.split)) and cfg.data.forget is not None:
        return _on_data(cfg.data.forget, sc), True
    if role == "retain" and cfg.data.retain is not None:
        return _on_data(cfg.data.retain, sc), False
    if sc is not None:
        raise UnlearnError(f"{cfg.origin('eval.' + role)}: eval.{role}: set 'path' (a file or folder) or 'dataset'")
    return None, False


def load_eval_sets(cfg: Config, tokenizer: Any, roles: Optional[list[str]] = None) -> dict[str, EvalSet]:
    """Read and check every configured eval set (all of cfg.eval.sets unless `roles` is given).

    forget and retain default to data.forget and data.retain; with eval.split, forget is the train
    part of data.forget (what was unlearned) and forget_test its test part. Sets without data are
    left out; an empty set, or none at all, is an error.
    """
    from unlearn.data.split import split_indices

    wanted = roles or cfg.eval.sets
    sets: dict[str, EvalSet] = {}
    for role in ROLES:
        if role not in wanted:
            continue
        source, from_forget = _set_config(cfg, role)
        if source is None:
            continue
        records = _records(source, role)
        if from_forget and cfg.eval.split:
            train, val, test = split_indices(len(records), cfg.eval.split, cfg.seed)
            records = [records[i] for i in {"forget": train, "forget_test": test}[role]]
        if cfg.eval.limit is not None:
            records = records[: cfg.eval.limit]
        if not records:
            extra = f" (eval.split {cfg.eval.split} leaves it nothing)" if from_forget and cfg.eval.split else ""
            raise UnlearnError(f"{source.describe()}: eval set '{role}' is empty{extra}")
        items = [_item(rec, where, role, source, tokenizer) for where, rec in records]
        sets[role] = EvalSet(role, source.describe(), source.kind, source.match, items)
    if not sets:
        raise UnlearnError(
            f"{cfg.origin('eval')}: nothing to evaluate: set data.forget / data.retain or eval.forget, "
            "eval.forget_test, eval.retain, eval.normal (eval.sets: " + ", ".join(cfg.eval.sets) + ")"
        )
    return sets


def validation_set(cfg: Config, tokenizer: Any) -> Optional[EvalSet]:
    """The val part of data.forget under eval.split (train.eval_every's forget set), else None."""
    if not cfg.eval.split or cfg.data.forget is None:
        return None
    from unlearn.data.split import split_indices

    source, from_forget = _set_config(cfg, "forget")
    if source is None or not from_forget:
        return None
    records = _records(source, "forget")
    _, val, _ = split_indices(len(records), cfg.eval.split, cfg.seed)
    if not val:
        return None
    items = [_item(records[i][1], records[i][0], "forget", source, tokenizer) for i in val]
    return EvalSet("forget", source.describe() + " (val split)", source.kind, source.match, items)
