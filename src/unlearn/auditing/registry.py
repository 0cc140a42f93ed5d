"""The attack registry: each attack of `unlearn audit`, what kind it is and where it is published.

An attack is registered with the function that runs it on one model (the unlearned one, then the
original as the baseline) and returns its trials, one per variant (a rewrite kind, a bit width).
A prompt attack returns Probes instead (unlearn.auditing.context): the runner generates every prompt
attack's probes together, in one batched pass per model.

    @register_attack("quantize", kind="weights", source="Zhang et al., ICLR 2025",
                     description="round-to-nearest 8-/4-bit weights")
    def quantize(ctx: AuditContext, model, label: str) -> list[Trial]: ...

`applies(ctx)` returns None when the attack can run on this audit, else the reason it is skipped
(no paraphrase file given, no GPU for bitsandbytes, ...). Attack modules are found, not listed:
every module of unlearn.auditing.attacks is imported on first use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from unlearn.discovery import Registry

KINDS = ("prompt", "weights", "relearn", "membership")


@dataclass
class Trial:
    """One variant of an attack on one model: what it scored on each set.

    scores: {set: {metric: Metric}} (the rates of each set); outputs: {set: [output]} of the items
    measured; items: {set: [index into the audit's set]} (relearning measures a part of the forget
    set); mia: membership inference's {score: {"auc", ...}} instead of generation."""

    variant: str
    scores: dict[str, dict[str, Any]] = field(default_factory=dict)
    outputs: dict[str, list[str]] = field(default_factory=dict)
    items: dict[str, list[int]] = field(default_factory=dict)
    prompts: dict[str, list[str]] = field(default_factory=dict)  # the prompts as the attack rewrote them
    mia: Optional[dict[str, dict[str, float]]] = None
    info: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


Run = Callable[[Any, Any, str], "list[Trial]"]


@dataclass(frozen=True)
class AttackSpec:
    name: str
    kind: str  # one of KINDS
    description: str
    source: str  # where the attack is published
    run: Run
    applies: Callable[[Any], Optional[str]]
    check: Optional[Callable[[Any], Any]] = None  # check(model): UnlearnError when it cannot attack it


_ATTACKS: Registry[AttackSpec] = Registry("attack", "unlearn.auditing.attacks")


def register_attack(
    name: str, *, kind: str, description: str, source: str,
    applies: Optional[Callable[[Any], Optional[str]]] = None, check: Optional[Callable[[Any], Any]] = None,
) -> Callable[[Run], Run]:
    """Register the function running attack `name` (see the module docstring). check(model), when
    given, runs on each loaded model before ANY attack does: an UnlearnError there stops the audit
    with nothing generated or written."""
    if kind not in KINDS:
        raise ValueError(f"attack '{name}': unknown kind '{kind}'; kinds: {', '.join(KINDS)}")

    def deco(fn: Run) -> Run:
        _ATTACKS.add(name, AttackSpec(name, kind, description, source, fn, applies or (lambda ctx: None), check))
        return fn

    return deco


def available_attacks() -> dict[str, AttackSpec]:
    """Every registered attack by name, in registration order."""
    return _ATTACKS.entries()


def get_attack(name: str) -> AttackSpec:
    """The attack registered as `name` (KeyError naming the registered ones if none is)."""
    attacks = available_attacks()
    if name not in attacks:
        raise KeyError(f"unknown attack '{name}'; attacks: {', '.join(attacks)}")
    return attacks[name]
