"""The registry of loss terms and the Objective, a weighted sum of terms.

A term is a function of a StepContext (and its own keyword parameters) returning a scalar tensor.
It declares the batch segments it reads, whether it needs the frozen reference model, and its
parameters as a dataclass whose fields carry defaults and help texts (shown by `unlearn terms`):

    @dataclass
    class NpoParams:
        beta: float = setting(0.1, help="Inverse temperature ...")

    @register_term("npo", segments=("forget",), reference=True, params=NpoParams)
    def npo(ctx: StepContext, beta: float) -> torch.Tensor: ...

The function's keyword parameters are the dataclass's fields, without defaults (the dataclass owns
them). A config sets them with `objective: {npo: {weight: 1.0, beta: 0.1}}`; they are typed and
checked like any config key (unknown names, wrong types, __post_init__ checks: one line naming the
key). A term registered without `params` takes its parameters from the function's keyword defaults.

`reference` may name a subset of the segments (`reference=("retain",)`): the reference model then
runs on those rows only. A term that needs to know the model before the first step (which decoder
layer it reads, which parameters it trains) passes `bind=`: a function of (model, **params) returning
a Binding; the train loop calls `Objective.bind(model)` once after loading the model.

A term that keeps something across steps (PDU's dual variable) takes a keyword parameter named
`state` (not a field of its dataclass) and passes `bind=`: the Binding's `state`, a mutable object
its bind function makes afresh, is handed to every call of the term as `state=`.

Term modules are found, not listed: every module of the unlearn.objective package is imported on the
first look-up (discover_terms). A term registered elsewhere needs its module imported before the
config is used (`unlearn compare` imports such modules in each method's process).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Union

import torch

from unlearn.config.load import build, describe_keys
from unlearn.discovery import Registry
from unlearn.errors import UnlearnError


@dataclass
class Binding:
    """What a term resolved from the loaded model (returned by its `bind` function)."""

    params: dict[str, Any] = field(default_factory=dict)  # values passed to the term instead of the configured ones
    layers: tuple[int, ...] = ()  # decoder layers whose outputs the term reads with ctx.hidden()
    trainable: Union[tuple[str, ...], None] = None  # names of the only parameters it trains; None: all
    state: Any = None  # a mutable object kept across steps, passed as `state=` to terms that take it


@dataclass(frozen=True)
class Term:
    """A registered loss term: its function, what it reads, and its parameters' dataclass."""

    name: str
    fn: Callable[..., torch.Tensor]
    segments: tuple[str, ...]
    reference: tuple[str, ...]  # segments the frozen reference runs on for this term; () = none
    params_type: type  # a dataclass: one field per keyword parameter of fn, with default and help
    bind: Union[Callable[..., Binding], None] = None

    @property
    def summary(self) -> str:
        """The first line of the term's docstring."""
        doc = inspect.getdoc(self.fn) or ""
        return doc.splitlines()[0] if doc else ""

    @functools.cached_property
    def stateful(self) -> bool:
        """Whether the function takes `state` (its Binding's mutable state, kept across steps);
        asked once per term, not on every step."""
        return STATE in inspect.signature(self.fn).parameters

    @property
    def params(self) -> dict[str, Any]:
        """Parameter name -> default."""
        return _as_dict(self.params_type())

    def describe_params(self) -> list[tuple[str, str, str, str]]:
        """(key, type, default, help) of each parameter, keys as a config spells them."""
        return describe_keys(self.params_type, f"objective.{self.name}.")


_TERMS: Registry[Term] = Registry("loss term", "unlearn.objective")
STATE = "state"  # the keyword a stateful term receives its Binding.state under (not a parameter)


def _as_dict(params: Any) -> dict[str, Any]:
    return {f.name: getattr(params, f.name) for f in dataclasses.fields(params)}


def _params_from_signature(name: str, fn: Callable[..., Any]) -> type:
    """A dataclass of fn's keyword parameters with defaults (for terms registered without params=)."""
    hints = typing.get_type_hints(fn)
    fields = []
    for p in list(inspect.signature(fn).parameters.values())[1:]:
        if p.name == STATE:
            continue
        if p.default is inspect.Parameter.empty:
            raise ValueError(f"loss term '{name}': parameter '{p.name}' needs a default (or pass params=)")
        tp = hints.get(p.name, Any if p.default is None else type(p.default))
        fields.append((p.name, tp, field(default=p.default, metadata={"help": ""})))
    return dataclasses.make_dataclass(f"{name.title()}Params", fields)


def _check_params_type(name: str, fn: Callable[..., Any], params: type) -> None:
    if not dataclasses.is_dataclass(params):
        raise ValueError(f"loss term '{name}': params must be a dataclass, got {params!r}")
    fn_params = [p for p in list(inspect.signature(fn).parameters.values())[1:] if p.name != STATE]
    names = [p.name for p in fn_params]
    fields = [f.name for f in dataclasses.fields(params)]
    if names != fields:
        raise ValueError(
            f"loss term '{name}': the function's parameters {names} differ from {params.__name__}'s fields {fields}"
        )
    with_default = [p.name for p in fn_params if p.default is not inspect.Parameter.empty]
    if with_default:
        raise ValueError(
            f"loss term '{name}': {', '.join(with_default)} has a default in the function; "
            f"{params.__name__} holds the defaults"
        )


def register_term(
    name: str,
    *,
    segments: tuple[str, ...],
    reference: Union[bool, tuple[str, ...]] = False,
    bind: Union[Callable[..., Binding], None] = None,
    params: Union[type, None] = None,
) -> Callable[[Callable[..., torch.Tensor]], Callable[..., torch.Tensor]]:
    """Register a loss term under `name` (duplicates are an error).

    reference: True (the reference runs on all the term's segments), False, or the segments it needs.
    bind: called once with the loaded model and the term's parameters; see Binding. A function
    with a keyword parameter `state` receives the Binding's state there (kept across steps).
    params: the dataclass of the term's parameters (fields made with unlearn.config.setting, so
    each has a help text); None: built from the function's keyword defaults, without help.
    """

    def deco(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        if STATE in inspect.signature(fn).parameters and bind is None:
            raise ValueError(f"loss term '{name}': a term that takes `{STATE}` needs bind= to make it")
        if params is None:
            params_type = _params_from_signature(name, fn)
        else:
            _check_params_type(name, fn, params)
            params_type = params
        if reference is True:
            ref = tuple(segments)
        elif reference is False:
            ref = ()
        else:
            ref = tuple(reference)
            if not set(ref) <= set(segments):
                raise ValueError(f"loss term '{name}': reference segments {ref} not among {segments}")
        _TERMS.add(name, Term(name, fn, tuple(segments), ref, params_type, bind))
        return fn

    return deco


def discover_terms() -> None:
    """Import every module of the unlearn.objective package once, so their terms register."""
    _TERMS.entries()


def get_term(name: str) -> Term:
    """The term registered as `name`; UnlearnError listing the registered ones if none is."""
    terms = _TERMS.entries()
    if name not in terms:
        raise UnlearnError(f"unknown loss term '{name}'; registered terms: {', '.join(sorted(terms))}")
    return terms[name]


def available_terms() -> dict[str, Term]:
    """Every registered term, by name."""
    return dict(sorted(_TERMS.entries().items()))


@dataclass
class WeightedTerm:
    """A term of an Objective: its weight and its parameters (typed, and as a dict of keywords)."""

    term: Term
    weight: float
    config: Any  # an instance of term.params_type
    binding: Union[Binding, None] = None

    @property
    def params(self) -> dict[str, Any]:
        """The configured parameters as keyword arguments of the term's function."""
        return _as_dict(self.config)

    def __call__(self, ctx: Any) -> torch.Tensor:
        """The term's unweighted value on a step (with what bind resolved, if it binds)."""
        params = self.params
        if self.term.bind is not None:
            if self.binding is None:
                raise RuntimeError(f"term '{self.term.name}' needs Objective.bind(model) before use")
            params = {**params, **self.binding.params}
            if self.term.stateful:
                params[STATE] = self.binding.state
        return self.term.fn(ctx, **params)


class Objective:
    """A weighted sum of registered terms, e.g. Objective({"ga": 0.5, "mismatch": 1, "kl": 1})."""

    def __init__(self, spec: dict[str, Any], where: Callable[[str], str] = lambda key: "config"):
        terms = _TERMS.entries()
        self.terms: list[WeightedTerm] = []
        for name, value in spec.items():
            if name not in terms:
                raise UnlearnError(
                    f"{where('objective.' + name)}: objective.{name}: unknown loss term '{name}'; "
                    f"registered terms: {', '.join(sorted(terms))}"
                )
            term = terms[name]
            if isinstance(value, dict):
                params = {k: v for k, v in value.items() if k != "weight"}
                weight = float(value["weight"])
            else:
                params, weight = {}, float(value)
            valid = [f.name for f in dataclasses.fields(term.params_type)]
            unknown = sorted(set(params) - set(valid))
            if unknown:
                raise UnlearnError(
                    f"{where('objective.' + name)}: objective.{name}: unknown parameter "
                    f"'{unknown[0]}'; valid: {', '.join(['weight', *valid])}"
                )
            config = build(term.params_type, params, f"objective.{name}", where)
            self.terms.append(WeightedTerm(term, weight, config))

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

    def state_dict(self) -> dict[str, dict[str, Any]]:
        """What stateful terms keep across steps (PDU's dual variable), as JSON values by term name:
        saved in every checkpoint so that a resumed run continues where it stopped."""
        return {wt.term.name: dataclasses.asdict(wt.binding.state) for wt in self.terms
                if wt.binding is not None and dataclasses.is_dataclass(wt.binding.state)}

    def load_state_dict(self, saved: dict[str, dict[str, Any]]) -> None:
        """Restore what state_dict() returned (after bind); terms not named keep their fresh state."""
        for wt in self.terms:
            values = saved.get(wt.term.name)
            if values and wt.binding is not None and dataclasses.is_dataclass(wt.binding.state):
                for key, value in values.items():
                    setattr(wt.binding.state, key, value)

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
            v = wt(ctx)
            values[wt.term.name] = v
            total = wt.weight * v if total is None else total + wt.weight * v
        assert total is not None  # Objective always has at least one term
        return total, values

    def to_config(self) -> dict[str, Any]:
        """The objective as a config writes it: a weight, or {weight, parameters not at their default}."""
        out: dict[str, Any] = {}
        for wt in self.terms:
            defaults = wt.term.params
            changed = {k: v for k, v in wt.params.items() if v != defaults[k]}
            out[wt.term.name] = {"weight": wt.weight, **changed} if changed else wt.weight
        return out
