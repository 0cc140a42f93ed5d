"""The registry of loss terms and the Objective, a weighted sum of terms.

A term is a function of a StepContext (and its own keyword parameters) returning a scalar tensor.
It declares the batch segments it reads and whether it needs the frozen reference model:

    @register_term("kl", segments=("retain",), reference=True)
    def kl(ctx: StepContext) -> torch.Tensor: ...

Parameters are keyword arguments with defaults; a config sets them with
`objective: {npo: {weight: 1.0, beta: 0.1}}`.

`reference` may name a subset of the segments (`reference=("retain",)`): the reference model then
runs on those rows only. A term that needs to know the model before the first step (which decoder
layer it reads, which parameters it trains) passes `bind=`: a function of (model, **params) returning
a Binding; the train loop calls `Objective.bind(model)` once after loading the model.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Union

import torch

from unlearn.errors import UnlearnError


@dataclass
class Binding:
    """What a term resolved from the loaded model (returned by its `bind` function)."""

    params: dict[str, Any] = field(default_factory=dict)  # values passed to the term instead of the configured ones
    layers: tuple[int, ...] = ()  # decoder layers whose outputs the term reads with ctx.hidden()
    trainable: Union[tuple[str, ...], None] = None  # names of the only parameters it trains; None: all


@dataclass(frozen=True)
class Term:
    name: str
    fn: Callable[..., torch.Tensor]
    segments: tuple[str, ...]
    reference: tuple[str, ...]  # segments the frozen reference runs on for this term; () = none
    params: dict[str, Any]  # name -> default
    bind: Union[Callable[..., Binding], None] = None

    @property
    def summary(self) -> str:
        doc = inspect.getdoc(self.fn) or ""
        return doc.splitlines()[0] if doc else ""


_TERMS: dict[str, Term] = {}


def register_term(
    name: str,
    *,
    segments: tuple[str, ...],
    reference: Union[bool, tuple[str, ...]] = False,
    bind: Union[Callable[..., Binding], None] = None,
) -> Callable[[Callable[..., torch.Tensor]], Callable[..., torch.Tensor]]:
    """Register a loss term under `name` (duplicates are an error).

    reference: True (the reference runs on all the term's segments), False, or the segments it needs.
    bind: called once with the loaded model and the term's parameters; see Binding.
    """

    def deco(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        if name in _TERMS:
            raise ValueError(f"loss term '{name}' is registered twice")
        sig = inspect.signature(fn)
        params = {
            p.name: p.default
            for p in list(sig.parameters.values())[1:]
            if p.default is not inspect.Parameter.empty
        }
        if reference is True:
            ref = tuple(segments)
        elif reference is False:
            ref = ()
        else:
            ref = tuple(reference)
            if not set(ref) <= set(segments):
                raise ValueError(f"loss term '{name}': reference segments {ref} not among {segments}")
        _TERMS[name] = Term(name, fn, tuple(segments), ref, params, bind)
        return fn

    return deco


def get_term(name: str) -> Term:
    if name not in _TERMS:
        raise UnlearnError(
            f"unknown loss term '{name}'; registered terms: {', '.join(sorted(_TERMS))}"
        )
    return _TERMS[name]


def available_terms() -> dict[str, Term]:
    return dict(sorted(_TERMS.items()))


def _coerce_param(term: str, key: str, default: Any, value: Any) -> Any:
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, (int, float)):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and isinstance(default, float):
            value = float(value)
    elif default is None:
        ok = True
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise UnlearnError(
            f"objective.{term}.{key}: expected {type(default).__name__}, got {value!r}"
        )
    return value


@dataclass
class WeightedTerm:
    term: Term
    weight: float
    params: dict[str, Any]
    binding: Union[Binding, None] = None


class Objective:
    """A weighted sum of registered terms, e.g. Objective({"ga": 0.5, "mismatch": 1, "kl": 1})."""

    def __init__(self, spec: dict[str, Any], where: Callable[[str], str] = lambda key: "config"):
        self.terms: list[WeightedTerm] = []
        for name, value in spec.items():
            if name not in _TERMS:
                raise UnlearnError(
                    f"{where('objective.' + name)}: objective.{name}: unknown loss term '{name}'; "
                    f"registered terms: {', '.join(sorted(_TERMS))}"
                )
            term = _TERMS[name]
            if isinstance(value, dict):
                params = {k: v for k, v in value.items() if k != "weight"}
                weight = float(value["weight"])
            else:
                params, weight = {}, float(value)
            unknown = set(params) - set(term.params)
            if unknown:
                valid = ", ".join(["weight", *term.params])
                raise UnlearnError(
                    f"{where('objective.' + name)}: objective.{name}: unknown parameter "
                    f"'{sorted(unknown)[0]}'; valid: {valid}"
                )
            params = {
                k: _coerce_param(name, k, term.params[k], params.get(k, d)) for k, d in term.params.items()
            }
            self.terms.append(WeightedTerm(term, weight, params))

    @property
    def segments(self) -> tuple[str, ...]:
        """Batch segments any term reads, plus the forget set for monitoring when it is loaded."""
        segs: list[str] = []
        for wt in self.terms:
            segs.extend(s for s in wt.term.segments if s not in segs)
        return tuple(segs)

    @property
    def reference_segments(self) -> tuple[str, ...]:
        segs: list[str] = []
        for wt in self.terms:
            segs.extend(s for s in wt.term.reference if s not in segs)
        return tuple(segs)

    @property
    def needs_reference(self) -> bool:
        return any(wt.term.reference for wt in self.terms)

    def bind(self, model: Any) -> None:
        """Let terms that declared `bind` resolve what they need from the loaded model (once)."""
        for wt in self.terms:
            if wt.term.bind is not None:
                wt.binding = wt.term.bind(model, **wt.params)

    @property
    def hidden_layers(self) -> tuple[int, ...]:
        """Decoder layers whose outputs some term reads (the fused forward then keeps them)."""
        return tuple(sorted({l for wt in self.terms if wt.binding for l in wt.binding.layers}))

    def restrict_trainable(self, model: Any) -> int:
        """Freeze every parameter that no restricting term trains; returns how many stay trainable.

        Without a restricting term, nothing changes. Never unfreezes a parameter (LoRA keeps its
        base weights frozen)."""
        keep: set[str] = set()
        restricted = False
        for wt in self.terms:
            if wt.binding is not None and wt.binding.trainable is not None:
                restricted = True
                keep.update(wt.binding.trainable)
        n = 0
        for name, p in model.named_parameters():
            if restricted and name not in keep:
                p.requires_grad_(False)
            n += int(p.requires_grad)
        if n == 0:
            raise UnlearnError("objective: no trainable parameters left (see the terms' layer settings)")
        return n

    def __call__(self, ctx: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(weighted total, {term: unweighted value})."""
        values: dict[str, torch.Tensor] = {}
        total: torch.Tensor | None = None
        for wt in self.terms:
            params = wt.params
            if wt.term.bind is not None:
                if wt.binding is None:
                    raise RuntimeError(f"term '{wt.term.name}' needs Objective.bind(model) before use")
                params = {**params, **wt.binding.params}
            v = wt.term.fn(ctx, **params)
            values[wt.term.name] = v
            total = wt.weight * v if total is None else total + wt.weight * v
        assert total is not None  # Objective always has at least one term
        return total, values

    def to_config(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for wt in self.terms:
            changed = {k: v for k, v in wt.params.items() if v != wt.term.params[k]}
            out[wt.term.name] = {"weight": wt.weight, **changed} if changed else wt.weight
        return out
