"""The judge registry: what `eval.judge` may name, and how each judge is built.

A judge decides whether outputs are harmful, for the harmful rate on the forget sets. Each module of
this package registers one (modules are found, not listed):

    @register_judge("refusal")                      # eval.judge: refusal
    def _refusal(arg, eval_cfg, device) -> Judge: ...

    @register_judge("classifier", argument=True)    # eval.judge: classifier:PATH_OR_ID
    @register_judge("similarity", needs=("embedder",))

`argument=True`: the judge is written NAME:ARG and the factory receives ARG (a path or hub id).
`needs`: what the evaluation loads anyway and passes to the factory as a keyword (NEEDS lists them:
"embedder", the sentence embedding model); it is None when the factory is called outside an evaluation.
A judge is called with the prompts, the outputs and the set's reference (forget) responses and
returns, per output, True (harmful), False, or None (its answer could not be read).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Protocol, Sequence

from unlearn.discovery import Registry
from unlearn.errors import UnlearnError

NEEDS = ("embedder",)


class Judge(Protocol):
    name: str

    def __call__(
        self, prompts: Sequence[str], outputs: Sequence[str], references: Sequence[str]
    ) -> list[Optional[bool]]:
        """True: harmful; False: not; None: the judge's answer could not be read."""
        ...


JudgeFactory = Callable[..., Judge]  # (argument, eval config, device, **needs) -> Judge


@dataclass(frozen=True)
class JudgeSpec:
    name: str
    factory: JudgeFactory
    argument: bool  # written NAME:ARG
    needs: tuple[str, ...]  # keywords of NEEDS the factory takes

    @property
    def usage(self) -> str:
        """How eval.judge writes it: 'refusal', 'classifier:PATH_OR_ID'."""
        return f"{self.name}:PATH_OR_ID" if self.argument else self.name


_JUDGES: Registry[JudgeSpec] = Registry("judge", "unlearn.evaluate.judges")


def register_judge(
    name: str, *, argument: bool = False, needs: Sequence[str] = ()
) -> Callable[[JudgeFactory], JudgeFactory]:
    """Register a judge factory under `name` (see the module docstring)."""
    unknown = [n for n in needs if n not in NEEDS]
    if unknown:
        raise ValueError(f"judge '{name}': unknown needs {unknown}; the evaluation provides {', '.join(NEEDS)}")

    def deco(fn: JudgeFactory) -> JudgeFactory:
        _JUDGES.add(name, JudgeSpec(name, fn, argument, tuple(needs)))
        return fn

    return deco


def available_judges() -> list[JudgeSpec]:
    """Every registered judge."""
    return list(_JUDGES.entries().values())


def judge_problem(spec: str) -> Optional[str]:
    """What is wrong with an eval.judge value, or None if it names a registered judge correctly."""
    judges = _JUDGES.entries()
    kind, colon, arg = spec.partition(":")
    judge = judges.get(kind)
    if judge is not None and (bool(arg) if judge.argument else not colon):
        return None
    usages = [j.usage for j in judges.values()]
    listed = ", ".join(usages[:-1]) + (" or " if len(usages) > 1 else "") + usages[-1]
    return f"expected {listed}, got '{spec}'"


def judge_spec(spec: str) -> JudgeSpec:
    """The registered judge an eval.judge value names (UnlearnError if none)."""
    judges = _JUDGES.entries()
    kind = spec.partition(":")[0]
    if kind not in judges:
        raise UnlearnError(f"eval.judge: unknown judge '{kind}'; judges: {', '.join(judges)}")
    return judges[kind]


def load_judge(spec: str, eval_cfg: Any, device: str = "cpu", **provided: Any) -> Judge:
    """Build the judge named by eval.judge ('refusal', 'classifier:PATH', ...). Loads any model now,
    so that a judge that cannot be loaded fails before anything is generated. `provided`: what the
    evaluation has loaded (NEEDS); the judge receives those it declared."""
    judge = judge_spec(spec)
    return judge.factory(spec.partition(":")[2], eval_cfg, device, **{n: provided.get(n) for n in judge.needs})


def load_error(spec: str, e: Exception) -> UnlearnError:
    """The one-line error for a judge model that cannot be loaded."""
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    return UnlearnError(f"eval.judge: cannot load '{spec}': {msg}")
