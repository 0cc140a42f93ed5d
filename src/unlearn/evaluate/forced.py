"""Teacher-forced NLL of evaluation sets under a model: each target response given its prompt (how
likely the model still finds what it should forget or keep), and each generated output given its
prompt under the original model (fluency's perplexity).

`score_nll` computes all of a model's rows in one pass (unlearn.evaluate.nll.grouped_nll): the
original model scores a set's targets, its own outputs and the unlearned model's outputs, three rows
per prompt, and packing computes each prompt once. Used by `unlearn eval` (unlearn.evaluate.run),
evaluation during training (unlearn.evaluate.during), compare and the audit.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from unlearn.config import Config
from unlearn.data.encode import Encoded, Encoder
from unlearn.evaluate.cache import ModelOutputs
from unlearn.evaluate.nll import grouped_nll, response_nll
from unlearn.evaluate.sets import EvalSet


def set_encoder(cfg: Config, tokenizer: Any, s: EvalSet, add_eos: Optional[bool] = None) -> Encoder:
    """The encoder of training (data.template) for qa sets; the raw text for passages."""
    template = "{prompt}{response}" if s.kind == "text" else cfg.data.template
    return Encoder(tokenizer, template, cfg.data.max_length, cfg.data.add_eos if add_eos is None else add_eos)


def target_rows(encoder: Encoder, s: EvalSet) -> list[Encoded]:
    """Each example's prompt and target response, encoded: the target NLL's rows."""
    return encoder.encode_many([(i.prompt, i.target or "") for i in s.items])


def output_rows(encoder: Encoder, prompts: Sequence[str], outputs: Sequence[str]) -> tuple[list[int], list[Encoded]]:
    """(indices of the non-empty outputs, those outputs encoded after their prompts): fluency's rows."""
    keep = [i for i, o in enumerate(outputs) if o.strip()]
    return keep, encoder.encode_many([(prompts[i], outputs[i]) for i in keep])


def spread(keep: Sequence[int], values: Sequence[float], n: int) -> list[Optional[float]]:
    """`values` of the rows `keep` (output_rows) at their places among `n`; None for the others."""
    out: list[Optional[float]] = [None] * n
    for i, v in zip(keep, values):
        out[i] = v
    return out


def target_nll(model: Any, encoder: Encoder, s: EvalSet, batch_size: int) -> list[float]:
    """Teacher-forced NLL per target token of each example."""
    return response_nll(model, target_rows(encoder, s), encoder.tokenizer.pad_token_id, batch_size)


def output_nll(model: Any, encoder: Encoder, prompts: Sequence[str], outputs: Sequence[str], batch_size: int) -> list[Optional[float]]:
    """NLL per token of each output given its prompt (None for empty outputs): fluency's input."""
    keep, rows = output_rows(encoder, prompts, outputs)
    values = response_nll(model, rows, encoder.tokenizer.pad_token_id, batch_size) if rows else []
    return spread(keep, values, len(outputs))


def score_nll(model: Any, tokenizer: Any, cfg: Config, sets: dict[str, EvalSet],
              targets: Optional[ModelOutputs] = None, fluency: Sequence[ModelOutputs] = ()) -> None:
    """Teacher-forced NLL under `model`, all in one pass (grouped_nll: the rows that ask one prompt,
    its target and each model's output, share that prompt's computation): the targets' NLL stored
    in `targets.nll` (nll_roles), and the fluency inputs of each of `fluency`'s outputs (target_nll
    and output_nll's values) in its `fluency_nll`."""
    jobs: list[tuple[dict, str, Optional[list[int]], int]] = []
    groups: list[list[Encoded]] = []
    if targets is not None:
        for role in [r for r in sets if r in nll_roles(sets)]:
            jobs.append((targets.nll, role, None, len(sets[role].items)))
            groups.append(target_rows(set_encoder(cfg, tokenizer, sets[role]), sets[role]))
    for res in fluency:
        for role, s in sets.items():
            keep, rows = output_rows(set_encoder(cfg, tokenizer, s, add_eos=False), s.prompts, res.outputs[role])
            jobs.append((res.fluency_nll, role, keep, len(s.items)))
            groups.append(rows)
    values = grouped_nll(model, groups, tokenizer.pad_token_id, cfg.eval.batch_size)
    for (store, role, keep, n), vals in zip(jobs, values):
        store[role] = vals if keep is None else spread(keep, vals, n)


def add_fluency(model: Any, tokenizer: Any, cfg: Config, sets: dict[str, EvalSet], *outputs: ModelOutputs) -> None:
    """Perplexity inputs for each of `outputs` under `model` (the ORIGINAL model), in one pass."""
    score_nll(model, tokenizer, cfg, sets, fluency=outputs)


def nll_roles(sets: dict[str, EvalSet]) -> set[str]:
    """The sets whose targets' NLL run_model computes."""
    return {role for role, s in sets.items() if s.has_targets and role != "normal"}
