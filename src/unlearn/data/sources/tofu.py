"""TOFU (Maini et al. 2024, "TOFU: A Task of Fictitious Unlearning for LLMs", arXiv 2401.06121):
question/answer pairs about 200 fictitious authors, and the evaluation sets of the benchmark.

The hub's locuslab/TOFU has one config per file, JSON Lines named after the config:

    forget01 forget05 forget10         question, answer (the authors to forget: 1, 5, 10 %)
    retain99 retain95 retain90 full    question, answer (the rest; full = all 4000)
    holdout01 holdout05 holdout10      question, answer (never trained on: privleak's non-members)
    real_authors world_facts           question, answer
    forget01_perturbed ... forget10_perturbed, retain_perturbed
                                       + paraphrased_answer, perturbed_answer (a list),
                                         paraphrased_question
    real_authors_perturbed world_facts_perturbed
                                       question, answer, perturbed_answer (a list), option1..4

`path` is a folder holding those files (`forget01.json`, or `.jsonl`/`.parquet`/`.csv`, or a
sub-folder `forget01/` as datasets' save_to_disk or the hub's parquet export writes it) or one of
the files itself; `split` names the config (the file). Without `path` the hub is used (online).

    data.forget: {dataset: tofu, path: data/TOFU, split: forget01}
    data.retain: {dataset: tofu, path: data/TOFU, split: retain99}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from unlearn.config import SourceConfig
from unlearn.data.records import SUFFIXES, Example
from unlearn.data.sources import register_source
from unlearn.data.sources._common import normalise, source_rows, text
from unlearn.errors import UnlearnError

HUB = "locuslab/TOFU"
SCHEMA = "question, answer (the *_perturbed configs: + paraphrased_answer, perturbed_answer list)"
FORGET_SPLITS = ("forget01", "forget05", "forget10")
# The retain set that goes with each forget set (the rest of the 4000), and its holdout.
RETAIN_OF = {"forget01": "retain99", "forget05": "retain95", "forget10": "retain90"}
HOLDOUT_OF = {"forget01": "holdout01", "forget05": "holdout05", "forget10": "holdout10"}
CONFIGS = (
    *FORGET_SPLITS, *RETAIN_OF.values(), "full", *HOLDOUT_OF.values(), "real_authors", "world_facts",
    *(f"{s}_perturbed" for s in FORGET_SPLITS), "retain_perturbed", "real_authors_perturbed",
    "world_facts_perturbed",
)

Row = tuple[str, dict[str, Any]]


def _in_folder(folder: Path, config: str) -> Path:
    """The file (or sub-folder) of `config` in a TOFU folder."""
    for suffix in SUFFIXES:
        p = folder / f"{config}{suffix}"
        if p.is_file():
            return p
    if (folder / config).is_dir():
        return folder / config
    present = [c for c in CONFIGS if any((folder / f"{c}{s}").is_file() for s in SUFFIXES)
               or (folder / c).is_dir()]
    raise UnlearnError(
        f"{folder}: no file for TOFU config '{config}' (expected {config}.json as on the hub "
        f"{HUB}; TOFU files here: {', '.join(present) or 'none'})"
    )


def _hub_rows(config: str, key: str) -> list[Row]:
    import datasets

    try:
        ds = datasets.load_dataset(HUB, config, split="train")
    except Exception as e:  # offline, renamed, gated: datasets raises many types
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UnlearnError(
            f"{key}: not set, and TOFU config '{config}' cannot be loaded from the hub's {HUB} ({reason}); "
            f"set {key} to a folder of the TOFU files (where there is network: huggingface-cli download "
            f"{HUB} --repo-type dataset --local-dir DIR)"
        ) from None
    return [(f"{HUB} {config} row {i}", normalise(dict(rec))) for i, rec in enumerate(ds)]


def tofu_rows(path: str | None, config: str, key: str) -> list[Row]:
    """(location, normalised record) of TOFU config `config` from `path` (a TOFU folder or that
    config's file), else from the hub. key: the config key of the path, for messages."""
    if config not in CONFIGS:
        raise UnlearnError(f"'{config}' is not a TOFU config; configs: {', '.join(CONFIGS)}")
    if path is None:
        return _hub_rows(config, key)
    p = Path(path).expanduser()
    if not p.exists():
        raise UnlearnError(f"{p}: not found ({key})")
    if p.is_dir():
        p = _in_folder(p, config)
    elif p.stem != config:
        raise UnlearnError(
            f"{p}: this file holds TOFU config '{p.stem}' by its name, not '{config}'; point path at "
            f"{config}.json or at the folder holding the TOFU files"
        )
    # a single file, or a config's own folder (its one split, or 'train')
    return list(source_rows(SourceConfig(path=str(p)), key, "tofu", None))


def string_field(rec: dict[str, Any], name: str, where: str) -> str:
    """A string field of a TOFU record; missing or not a string is one line naming row and field."""
    return text(rec, name, where, SCHEMA)  # type: ignore[return-value]


def answer_list(rec: dict[str, Any], name: str, where: str) -> list[str]:
    """A non-empty list of answer strings (perturbed_answer); anything else names row and field."""
    if name not in rec or rec[name] is None:
        raise UnlearnError(f"{where}: missing field '{name}' (expected fields: {SCHEMA})")
    v = rec[name]
    if not isinstance(v, (list, tuple)) or not v or not all(isinstance(x, str) and x.strip() for x in v):
        raise UnlearnError(f"{where}: field '{name}' must be a non-empty list of non-empty strings")
    return list(v)


@register_source("tofu", schema=SCHEMA, hub=HUB)
def tofu(source: SourceConfig, role: str) -> list[Example]:
    """(question, answer) of the TOFU config named by split (forget01, retain99, ...)."""
    if source.split is None:
        raise UnlearnError(
            f"data.{role}: dataset tofu needs split: the TOFU config, e.g. forget01 (its retain set: "
            f"retain99); configs: {', '.join(CONFIGS)}"
        )
    if source.split not in CONFIGS:
        raise UnlearnError(f"data.{role}.split: '{source.split}' is not a TOFU config; configs: {', '.join(CONFIGS)}")
    prompt_field = "question" if source.prompt_field == "prompt" else source.prompt_field
    response_field = "answer" if source.response_field == "response" else source.response_field
    out: list[Example] = []
    for where, rec in tofu_rows(source.path, source.split, f"data.{role}.path"):
        prompt = text(rec, prompt_field, where, SCHEMA)
        response = text(rec, response_field, where, SCHEMA)
        meta: dict[str, Any] = {"where": where, "split": source.split}
        # the evaluation fields travel with the example (for a set read from a *_perturbed config)
        for key in ("paraphrased_question", "paraphrased_answer", "perturbed_answer"):
            if rec.get(key) is not None:
                meta[key] = rec[key]
        if prompt.strip() and response.strip():
            out.append(Example(prompt, response, meta, where=where))
    return out
