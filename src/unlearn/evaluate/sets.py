"""Evaluation sets: forget, forget_test (held out, the paper's "unseen"), retain, normal.

Each set is read and checked in full before any model is loaded: a record lacking a field that a
configured metric needs is an error naming the file, the line and the field. A forget set scored by
eval.judge may hold prompts only (red-team prompts without reference answers): its harmful rate is
computed, the metrics that compare with a target (leak rate, ROUGE-L, NLL) are left out.

What each set holds is stated in its `info` (metrics.json's "sets"): the forget set is drawn from the
examples the run trained on when run.json records them (else the whole forget part, and it says so);
forget_test counts its prompts that also occur in the training forget data and in the retain data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from unlearn.config import EVAL_SETS, Config, EvalSetConfig, SourceConfig
from unlearn.errors import UnlearnError

ROLES = EVAL_SETS


@dataclass
class EvalItem:
    prompt: str
    target: Optional[str] = None  # the response (kind text: the true continuation)
    answers: Optional[list[str]] = None  # match: contains
    hallucinated: Optional[str] = None
    where: str = ""
    group: Any = None  # data.forget.group_field's value (forget sets): the audit relearns by group


@dataclass
class EvalSet:
    role: str
    source: str
    kind: str = "qa"
    match: str = "bleu"
    items: list[EvalItem] = field(default_factory=list)
    # How the set was drawn and how it overlaps the training data, for metrics.json's "sets".
    info: dict[str, Any] = field(default_factory=dict)

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
        return EvalSet(self.role, self.source, self.kind, self.match, self.items[:n], dict(self.info))


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
    from unlearn.data.records import record_string

    return record_string(rec, name, where, required=required, hint=f"(needed by {why})")


def _item(rec: dict[str, Any], where: str, role: str, sc: EvalSetConfig, tokenizer: Any,
          prompts_only: bool = False) -> EvalItem:
    """One record as an item. `prompts_only`: a qa record may lack its response (target None), as
    every record of the normal set may, and a forget set's may when eval.judge scores it."""
    key = f"eval.{role}"
    optional = role == "normal" or prompts_only
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
    target = _string(rec, sc.response_field, where, f"{key}: the metrics of the {role} set", not optional)
    if target is not None and not target.strip():
        if not optional:
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


NO_RECORD = "all forget examples (no record of training)"
TRAINED = "trained examples"


class _Training:
    """What training read, loaded once and only when a set asks: data.forget's examples with the
    indices of the part it trained on (the train part under eval.split), data.retain's prompts."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self._forget: Optional[tuple[list[Any], list[int]]] = None
        self._retain: Optional[set[str]] = None

    def forget(self) -> Optional[tuple[list[Any], list[int]]]:
        from unlearn.data import load_source
        from unlearn.data.split import example_groups, split_indices

        cfg = self.cfg
        if cfg.data.forget is None or not (cfg.data.forget.path or cfg.data.forget.dataset):
            return None
        if self._forget is None:
            examples = load_source(cfg.data.forget, "forget")
            part = list(range(len(examples)))
            if cfg.eval.split:  # as train.setup does: training sees the train part only
                part = split_indices(len(examples), cfg.eval.split, cfg.seed, example_groups(examples))[0]
            self._forget = examples, part
        return self._forget

    def forget_prompts(self) -> Optional[set[str]]:
        got = self.forget()
        return None if got is None else _prompt_set(got[0][i].prompt for i in got[1])

    def retain_prompts(self) -> Optional[set[str]]:
        from unlearn.data import load_source

        src = self.cfg.data.retain
        if src is None or not (src.path or src.dataset):
            return None
        if self._retain is None:
            self._retain = _prompt_set(e.prompt for e in load_source(src, "retain"))
        return self._retain


def _prompt_set(prompts: Any) -> set[str]:
    from unlearn.data.split import normalise_prompt

    return {k for k in (normalise_prompt(p) for p in prompts) if k}


def _forget_part(cfg: Config, source: EvalSetConfig, records: list[tuple[str, dict[str, Any]]], part: int) -> list[int]:
    """Indices of part `part` (0 train, 1 val, 2 test) of data.forget's records under eval.split,
    cut by prompt group (and data.forget.group_field) exactly as training cuts its examples."""
    from unlearn.data import group_of
    from unlearn.data.split import group_ids, split_indices

    if not cfg.eval.split:
        return list(range(len(records)))
    prompts = [rec.get(source.prompt_field) if isinstance(rec.get(source.prompt_field), str) else None
               for _, rec in records]
    name = cfg.data.forget.group_field if cfg.data.forget is not None else None
    groups = [group_of(rec, name, where) for where, rec in records] if name else None
    return split_indices(len(records), cfg.eval.split, cfg.seed, group_ids(prompts, groups))[part]


def _trained_first(
    chosen: list[int], n_records: int, trained: Optional[dict[str, Any]], training: _Training, limit: Optional[int]
) -> tuple[list[int], dict[str, Any]]:
    """The forget part's records the run trained on, and what the set is: the first `limit` in
    order of first use, given in data order (the order of the set without a record, so a run that
    trained on every example is evaluated on the same items in the same batches); all of `chosen`
    when run.json has no record (older runs, a model trained elsewhere)."""
    from unlearn.data.records import example_hash

    record = trained.get("forget") if isinstance(trained, dict) else None
    if record is None:
        return chosen, {"forget_set": NO_RECORD}
    seen = record.get("seen") if isinstance(record, dict) else None
    if not isinstance(seen, list) or not all(
        isinstance(s, (list, tuple)) and len(s) == 2 and isinstance(s[0], str) for s in seen
    ):
        raise UnlearnError("run.json: trained_examples.forget.seen must be a list of [hash, times]")
    got = training.forget()
    if got is None or len(got[0]) != n_records:  # the eval records cannot be matched to training's
        return chosen, {"forget_set": NO_RECORD, "note": "the training examples could not be matched"}
    hashes = [example_hash(e.prompt, e.response) for e in got[0]]
    first: dict[str, int] = {}
    for k, (h, _) in enumerate(seen):
        first.setdefault(h, k)
    found: dict[str, int] = {}
    for i in chosen:  # identical examples are one item
        if hashes[i] in first:
            found.setdefault(hashes[i], i)
    if seen and not found:
        raise UnlearnError(
            f"run.json: none of the {len(first)} forget examples the run trained on is in data.forget "
            "(changed since the run?)"
        )
    info: dict[str, Any] = {"forget_set": TRAINED, "trained_examples": len(first), "training_examples": record.get("total")}
    if len(found) < len(first):
        info["trained_examples_not_found"] = len(first) - len(found)
    picked = sorted(found.values(), key=lambda i: first[hashes[i]])
    return sorted(picked[:limit] if limit is not None else picked), info


def _overlap(items: list[EvalItem], records: list[tuple[str, dict[str, Any]]], source: EvalSetConfig,
             training: _Training) -> dict[str, Optional[int]]:
    """How many of the set's prompts (normalised) occur in the training forget data and in the
    retain data; None where that data is not configured."""
    from unlearn.data.split import normalise_prompt

    keys = []
    for item, (_, rec) in zip(items, records):
        raw = rec.get(source.prompt_field)
        keys.append(normalise_prompt(raw if isinstance(raw, str) and raw.strip() else item.prompt))
    forget, retain = training.forget_prompts(), training.retain_prompts()
    return {
        "prompts_in_forget_training": None if forget is None else sum(k in forget for k in keys),
        "prompts_in_retain": None if retain is None else sum(k in retain for k in keys),
    }


JUDGED_SETS = ("forget", "forget_test")  # the sets eval.judge scores (the harmful rate's)


def _all_or_no_targets(items: list[EvalItem], records: list[tuple[str, dict[str, Any]]], source: EvalSetConfig,
                       role: str, judge: str) -> None:
    """A judged forget set is prompt/response pairs or prompts only, not a mix: with some targets
    missing the target metrics would score those outputs against nothing. Prompts only, the judge
    must not need the set's responses (similarity compares with them)."""
    missing = [i for i, item in enumerate(items) if item.target is None]
    if not missing:
        return
    if len(missing) < len(items):
        where, rec = records[missing[0]]
        field = source.response_field
        what = f"missing field '{field}'" if rec.get(field) is None else f"field '{field}' is empty"
        raise UnlearnError(
            f"{where}: {what}, while other records of eval.{role} have one: give every record a response, "
            "or none (prompts only, scored by eval.judge)"
        )
    if judge.partition(":")[0] == "similarity":
        raise UnlearnError(
            f"{source.describe()}: eval.{role} has prompts only, and eval.judge: similarity compares outputs "
            f"with the set's responses (field '{source.response_field}'); use topic, which needs none"
        )


def read_eval_set(source: EvalSetConfig, role: str, tokenizer: Any, name: Optional[str] = None) -> EvalSet:
    """One set read from its own source (e.g. the audit's paraphrases), scored as evaluation set
    `role`; `name` is what errors call it (default eval.ROLE). An empty source is an error."""
    records = _records(source, name or role)
    if not records:
        raise UnlearnError(f"{source.describe()}: {name or 'eval set ' + role} is empty")
    items = [_item(rec, where, role, source, tokenizer) for where, rec in records]
    return EvalSet(role, source.describe(), source.kind, source.match, items)


def load_eval_sets(
    cfg: Config, tokenizer: Any, roles: Optional[list[str]] = None, trained: Optional[dict[str, Any]] = None
) -> dict[str, EvalSet]:
    """Read and check every configured eval set (all of cfg.eval.sets unless `roles` is given).

    forget and retain default to data.forget and data.retain; with eval.split, forget is the train
    part of data.forget (what was unlearned) and forget_test its test part, cut by prompt group.
    `trained` is run.json's "trained_examples": with it, the default forget set holds the examples
    the run trained on, in order of first use. Sets without data are left out; an empty set, or
    none at all, is an error.
    """
    wanted = roles or cfg.eval.sets
    training = _Training(cfg)
    sets: dict[str, EvalSet] = {}
    for role in ROLES:
        if role not in wanted:
            continue
        source, from_forget = _set_config(cfg, role)
        if source is None:
            continue
        records = _records(source, role)
        info: dict[str, Any] = {}
        if from_forget:
            chosen = _forget_part(cfg, source, records, {"forget": 0, "forget_test": 2}[role])
            if role == "forget":
                chosen, info = _trained_first(chosen, len(records), trained, training, cfg.eval.limit)
            records = [records[i] for i in chosen]
        if cfg.eval.limit is not None:
            records = records[: cfg.eval.limit]
        if not records:
            extra = f" (eval.split {cfg.eval.split} leaves it nothing)" if from_forget and cfg.eval.split else ""
            raise UnlearnError(f"{source.describe()}: eval set '{role}' is empty{extra}")
        prompts_only = role in JUDGED_SETS and cfg.eval.judge is not None and source.kind == "qa"
        items = [_item(rec, where, role, source, tokenizer, prompts_only) for where, rec in records]
        if prompts_only:
            _all_or_no_targets(items, records, source, role, cfg.eval.judge)
            if all(i.target is None for i in items):  # metrics.json says why the target metrics are absent
                info["responses"] = "none: prompts only, scored by eval.judge (no leak rate, ROUGE-L or NLL)"
        group_field = cfg.data.forget.group_field if cfg.data.forget is not None else None
        if group_field and role in ("forget", "forget_test"):
            for item, (_, rec) in zip(items, records):
                item.group = rec.get(group_field)
        if role == "forget_test":
            info.update(_overlap(items, records, source, training))
        sets[role] = EvalSet(role, source.describe(), source.kind, source.match, items, info)
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
    source, from_forget = _set_config(cfg, "forget")
    if source is None or not from_forget:
        return None
    records = _records(source, "forget")
    val = _forget_part(cfg, source, records, 1)
    if not val:
        return None
    items = [_item(records[i][1], records[i][0], "forget", source, tokenizer) for i in val]
    return EvalSet("forget", source.describe() + " (val split)", source.kind, source.match, items)
