"""What every attack works with: the audit's sets, the scoring, and generation with a cache.

    AuditContext.measure(model, label, probes, transform)
        every probe's prompts generated in one batched pass per template (prompts sorted by
        length across probes), the original model's outputs looked up in the output cache first,
        then each probe scored on each set with the evaluation's own metrics (the rates)

The sets are the evaluation's (unlearn.evaluate.sets): forget, forget_test and the first
audit.retain_limit retain examples. A set keeps its ORIGINAL prompts and targets for scoring (a
judge reads the question as asked, not the jailbreak around it); a probe says what the model was
actually given.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from unlearn.auditing.registry import Trial
from unlearn.config import Config
from unlearn.evaluate.cache import environment
from unlearn.evaluate.generate import GenerationSettings, generate
from unlearn.evaluate.metrics import SetScoring, metrics_for
from unlearn.evaluate.forced import set_encoder
from unlearn.evaluate.run import settings_of
from unlearn.evaluate.sets import EvalSet

FORGET_ROLES = ("forget", "forget_test")
UNKNOWN_CONTEXT = 4096  # the context assumed for a model whose config names none
AUDIT_ROLES = (*FORGET_ROLES, "retain")


@dataclass
class Probe:
    """One way of asking: the prompts (and forced answer starts) given for each set's items.

    sets: {role: EvalSet} as scored; prompts/prefills: {role: [...]} in the sets' item order
    (missing: the set's own prompts, no prefill); template: the template they are rendered with."""

    name: str
    sets: dict[str, EvalSet]
    template: str
    prompts: dict[str, list[str]] = field(default_factory=dict)
    prefills: dict[str, list[str]] = field(default_factory=dict)
    items: dict[str, list[int]] = field(default_factory=dict)  # indices into the audit's sets

    def prompts_of(self, role: str) -> list[str]:
        return self.prompts.get(role) or self.sets[role].prompts


def subset(s: EvalSet, indices: Sequence[int]) -> EvalSet:
    """The items `indices` of set `s`, as a set of the same role and rules."""
    return EvalSet(s.role, s.source, s.kind, s.match, [s.items[i] for i in indices], dict(s.info))


class AuditContext:
    """The audit's sets, scoring tools and generation settings, shared by every attack."""

    def __init__(self, cfg: Config, tokenizer: Any, sets: dict[str, EvalSet], *, judge: Any = None,
                 embedder: Any = None, similarity: Any = None, device: str = "cpu", cache: Any = None,
                 fingerprints: Optional[dict[str, Optional[str]]] = None,
                 paths: Optional[dict[str, str]] = None):
        self.cfg, self.tokenizer, self.device = cfg, tokenizer, device
        self.judge, self.embedder, self.similarity = judge, embedder, similarity
        self.cache = cache
        self.fingerprints = fingerprints or {}
        self.paths = paths or {}  # label -> the folder (or alias) the model was loaded from
        limit = cfg.audit.retain_limit
        self.sets = {
            role: (s.head(limit) if role == "retain" and limit is not None else s)
            for role, s in sets.items() if role in AUDIT_ROLES
        }
        self.full_retain: Optional[EvalSet] = sets.get("retain")  # few-shot context comes from its rest
        self.settings = dataclasses.replace(settings_of(cfg), batch_size=cfg.audit.batch_size)
        self.extra: dict[str, EvalSet] = {}  # sets of single attacks (audit.paraphrases)

    # ---- what there is to attack -----------------------------------------------------------

    @property
    def forget_roles(self) -> list[str]:
        return [r for r in FORGET_ROLES if r in self.sets]

    def qa_roles(self) -> list[str]:
        """Sets a prompt can be rewritten for (qa; passages are given without a template)."""
        return [r for r, s in self.sets.items() if s.kind == "qa"]

    def plain(self, roles: Optional[Sequence[str]] = None, name: str = "none") -> Probe:
        """The sets asked as in evaluation: the baseline every attack is compared with."""
        roles = list(roles or self.sets)
        return Probe(name, {r: self.sets[r] for r in roles}, self.cfg.data.template,
                     items={r: list(range(len(self.sets[r].items))) for r in roles})

    # ---- generation and scoring ------------------------------------------------------------

    def generate_probes(self, model: Any, label: str, probes: Sequence[Probe], transform: str = "") -> list[dict[str, list[str]]]:
        """Every probe's outputs {role: [output]}, generated in one pass per (template, kind): fuller
        batches (measured on the demo, six probes of the unlearned model: 27-28 s in one pass against
        32-34 s in a pass per probe and set). The whole pass is looked up in the output cache first
        (key: the model's content, `transform`, the rendered rows and the decoding settings) and
        stored after."""
        groups: dict[tuple[str, bool], list[tuple[int, str, int]]] = {}
        rows: dict[tuple[str, bool], list[tuple[str, str]]] = {}
        for p_i, p in enumerate(probes):
            for role, s in p.sets.items():
                key = (p.template, s.kind == "text")
                prompts, prefills = p.prompts_of(role), p.prefills.get(role) or [""] * len(s.items)
                for j, (q, f) in enumerate(zip(prompts, prefills)):
                    groups.setdefault(key, []).append((p_i, role, j))
                    rows.setdefault(key, []).append((q, f))
        out: list[dict[str, list[str]]] = [{r: [""] * len(s.items) for r, s in p.sets.items()} for p in probes]
        for (template, raw), where in groups.items():
            texts = self._generate_rows(model, label, template, raw, rows[(template, raw)], transform)
            for (p_i, role, j), text in zip(where, texts):
                out[p_i][role][j] = text
        return out

    def _generate_rows(self, model: Any, label: str, template: str, raw: bool, rows: list[tuple[str, str]],
                       transform: str) -> list[str]:
        fp = self.fingerprints.get(label)
        settings = self.settings_for(model)
        key = None
        if self.cache is not None and fp is not None:
            key = self.cache.key("audit-generate", fp, self.cfg.model.dtype, transform, template, raw, rows,
                                 vars(settings), self.cfg.data.max_length, *environment(self.device))
            hit = self.cache.get(key)
            if isinstance(hit, list) and len(hit) == len(rows) and all(isinstance(t, str) for t in hit):
                return hit
        encoder = set_encoder(_with_template(self.cfg, template), self.tokenizer,
                              EvalSet("audit", "", "text" if raw else "qa"))
        prefills = [f for _, f in rows]
        texts = generate(model, encoder, [q for q, _ in rows], settings, raw=raw,
                         prefills=None if raw or not any(prefills) else prefills)
        if key is not None:
            self.cache.put(key, texts)
        return texts

    def settings_for(self, model: Any) -> GenerationSettings:
        """The audit's decoding settings for `model`: evaluation's, except that a prompt is cut only
        where the model's context ends. Evaluation keeps data.max_length - eval.max_new_tokens prompt
        tokens, what training saw; an attack's prompt is longer by design, and cutting it from the
        left drops the jailbreak's opening (on the demo, 1,626 of 2,040 prompt-attack prompts were
        cut to 40 tokens before this)."""
        context = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        limit = (int(context) if isinstance(context, int) else UNKNOWN_CONTEXT) - self.settings.max_new_tokens
        return dataclasses.replace(self.settings, max_prompt_tokens=max(self.settings.max_prompt_tokens, limit))

    def score(self, s: EvalSet, outputs: list[str]) -> dict[str, Any]:
        """The rates (register_metric(rate=True)) of the set's role on these outputs: leak,
        harmful, extraction, hallucination rate, retain accuracy, degenerate rate."""
        x = SetScoring(set=s, outputs=outputs, settings=self.cfg.eval, judge=self.judge,
                       embedder=self.embedder, similarity=self.similarity)
        out = {}
        for spec in metrics_for(s.role):
            if spec.rate:
                m = spec.compute(x)
                if m is not None:
                    out[spec.name] = m
        return out

    def measure(self, model: Any, label: str, probes: Sequence[Probe], transform: str = "") -> list[Trial]:
        """A Trial per probe: each set's outputs and rates."""
        t0 = time.time()
        outputs = self.generate_probes(model, label, probes, transform)
        trials = []
        for p, outs in zip(probes, outputs):
            trial = Trial(p.name, items=dict(p.items))
            for role, s in p.sets.items():
                trial.scores[role] = self.score(s, outs[role])
                trial.outputs[role] = outs[role]
                if p.prompts.get(role) or p.prefills.get(role):
                    trial.prompts[role] = [
                        q + (f" [answer starts: {f}]" if f else "")
                        for q, f in zip(p.prompts_of(role), p.prefills.get(role) or [""] * len(s.items))
                    ]
            trials.append(trial)
        per = (time.time() - t0) / max(1, len(trials))
        for t in trials:
            t.seconds = round(per, 2)
        return trials


def _with_template(cfg: Config, template: str) -> Config:
    """cfg itself when it renders with `template`, else a shallow view whose data.template is it."""
    if cfg.data.template == template:
        return cfg
    import copy

    view = copy.copy(cfg)
    view.data = copy.copy(cfg.data)
    view.data.template = template
    return view
