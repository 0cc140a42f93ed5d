"""`unlearn eval`: the original and the unlearned model on the same prompts, scored side by side.

    check_run         the run directory holds a finished model (or --allow-unfinished)
    load_eval_sets    every set read and checked; the judge and embedding model loaded
    -> unlearned model: generate on every set, NLL of the targets             (then freed)
    -> original model:  the same, plus the perplexity of BOTH models' outputs (fluency)
    -> metrics per set and model; samples with per-example scores

Only one language model is in memory at a time. `evaluate_run` returns an EvalResult; unlearn.report
writes it. Pass `original=` an earlier result's `.original` to reuse the original model's outputs
when evaluating several runs of the same model on the same sets (unlearn compare). With eval.cache,
the original's outputs come from the on-disk cache (unlearn.evaluate.cache) when its key matches,
and the original model is not even loaded when the unlearned outputs' fluency is cached too.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch

from unlearn.config import Config, ModelConfig
from unlearn.errors import UnlearnError
from unlearn.evaluate.cache import (
    ModelOutputs, OutputCache, environment, fluency_from_json, model_fingerprint, outputs_from_json,
)
from unlearn.evaluate.backend import check_backend, generate_texts
from unlearn.evaluate.forced import add_fluency, nll_roles, score_nll, set_encoder
from unlearn.evaluate.generate import GenerationSettings
from unlearn.evaluate.judges import judge_spec, load_judge
from unlearn.evaluate.metrics import get_metric
from unlearn.evaluate.score import evaluate_outputs
from unlearn.evaluate.sets import EvalSet, load_eval_sets
from unlearn.evaluate.verdict import verdict


@dataclass
class EvalResult:
    metrics: dict[str, Any]  # the content of metrics.json
    samples: list[dict[str, Any]]  # the lines of samples.jsonl
    original: ModelOutputs
    unlearned: ModelOutputs
    output_dir: Path
    model_dir: Path


# --------------------------------------------------------------------------------------------
# The run directory


def check_run(cfg: Config, model_dir: Optional[Path] = None, allow_unfinished: bool = False) -> tuple[Path, Path, dict]:
    """(output_dir, model_dir, run.json content) of a run that can be evaluated; UnlearnError if not."""
    out = Path(cfg.output_dir).expanduser().resolve()
    model_dir = Path(model_dir).expanduser().resolve() if model_dir else out / "model"
    manifest: dict[str, Any] = {}
    if (out / "run.json").exists():
        try:
            manifest = json.loads((out / "run.json").read_text())
        except json.JSONDecodeError as e:
            raise UnlearnError(f"{out / 'run.json'}: unreadable ({e.msg})") from None
        status = manifest.get("status")
        if status != "done" and not allow_unfinished:
            raise UnlearnError(
                f"{out / 'run.json'}: the run's status is '{status}', not 'done'; finish it "
                "(unlearn run CONFIG --resume) or pass --allow-unfinished"
            )
    if not model_dir.is_dir() or not (
        (model_dir / "config.json").exists() or (model_dir / "adapter_config.json").exists()
    ):
        raise UnlearnError(
            f"{model_dir}: no model found; run `unlearn run CONFIG` first (output_dir: {cfg.output_dir})"
        )
    return out, model_dir, manifest


def pick_device(cfg: Config) -> str:
    if cfg.train.device == "cuda":
        if not torch.cuda.is_available():
            raise UnlearnError(f"{cfg.origin('train.device')}: train.device: cuda, but no GPU is visible")
        return "cuda"
    if cfg.train.device == "auto" and torch.cuda.is_available():
        return "cuda"
    return "cpu"


# --------------------------------------------------------------------------------------------
# Running one model


def settings_of(cfg: Config) -> GenerationSettings:
    e = cfg.eval
    return GenerationSettings(
        max_new_tokens=e.max_new_tokens, batch_size=e.batch_size, do_sample=e.do_sample,
        temperature=e.temperature, top_p=e.top_p, seed=cfg.seed,
        max_prompt_tokens=max(8, cfg.data.max_length - e.max_new_tokens),
    )


def run_model(
    model: Any, tokenizer: Any, cfg: Config, sets: dict[str, EvalSet], label: str, name: str,
    progress: Optional[Callable[[int], None]] = None, fluency_of: Sequence[ModelOutputs] = (),
    own_fluency: bool = False,
) -> ModelOutputs:
    """Generate on every set (with eval.backend; `name`: the folder, alias or hub id the model was
    loaded from, which vLLM loads) and compute the targets' NLL; with `own_fluency`, the fluency
    inputs of its own outputs, and of `fluency_of`'s, in the same pass (score_nll): the original
    model scores both models' outputs."""
    t0 = time.time()
    res = ModelOutputs(label, name, key=sets_key(cfg, sets))
    settings = settings_of(cfg)
    source = dataclasses.replace(cfg.model, name=name)
    for kind in dict.fromkeys(s.kind for s in sets.values()):  # one call per kind: fuller batches
        roles = [r for r, s in sets.items() if s.kind == kind]
        texts = generate_texts(model, set_encoder(cfg, tokenizer, sets[roles[0]]),
                               [p for r in roles for p in sets[r].prompts], settings, backend=cfg.eval.backend,
                               source=source, raw=kind == "text", progress=progress)
        for r in roles:
            res.outputs[r], texts = texts[: len(sets[r].items)], texts[len(sets[r].items):]
    score_nll(model, tokenizer, cfg, sets, targets=res, fluency=[res, *fluency_of] if own_fluency else fluency_of)
    res.seconds = time.time() - t0
    return res


def sets_key(cfg: Config, sets: dict[str, EvalSet], full: bool = False) -> str:
    """A fingerprint of what the outputs depend on besides the model: prompts and generation settings
    (16 hex digits; all 64 with `full`)."""
    import hashlib

    h = hashlib.sha256()
    backend = [] if cfg.eval.backend == "hf" else [cfg.eval.backend]  # hf: the same keys as before backends
    h.update(json.dumps([cfg.data.template, cfg.data.max_length, cfg.data.add_eos, vars(settings_of(cfg)),
                         *backend]).encode())
    for role, s in sets.items():
        h.update(json.dumps([role, s.kind, s.prompts, s.targets]).encode())
    return h.hexdigest() if full else h.hexdigest()[:16]


def cached_original(cfg: Config, sets: dict[str, EvalSet], device: str) -> tuple[Optional[str], Optional[ModelOutputs]]:
    """(key, outputs) of the original model (cfg.model) on `sets` in the output cache: the key holds
    the model's content hash, its dtype, the prompts, targets and generation settings (sets_key),
    the device (CPU and GPU outputs differ) and the versions of unlearn, torch and transformers.
    key None: not cached (eval.cache: false, or a model without a known content); outputs None: a
    miss. After generating, store dataclasses.asdict(outputs) under the key with OutputCache.put."""
    if not cfg.eval.cache:
        return None, None
    fingerprint = model_fingerprint(cfg.model.name, cfg.model.revision)
    if fingerprint is None:
        return None, None
    key = OutputCache.key("original-outputs", fingerprint, cfg.model.dtype, sets_key(cfg, sets, full=True),
                          *environment(device))
    value = OutputCache().get(key)
    sizes = {role: len(s.items) for role, s in sets.items()}
    return key, outputs_from_json(value, sizes, nll_roles(sets), sets_key(cfg, sets))


def free_model(model: Any) -> None:
    """Let a model's memory go (the caller drops its reference too): host and GPU caches."""
    del model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------------------------
# The whole evaluation


class _Bar:
    """A rich progress bar over all prompts on a terminal; a line per phase elsewhere."""

    def __init__(self, console: Any, total: int):
        self.console, self.bar, self.task = console, None, None
        if console is not None and console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeRemainingColumn(), console=console)
            self.task = self.bar.add_task("generate", total=total)
            self.bar.start()

    def phase(self, text: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, description=text)
        elif self.console is not None:
            self.console.print(text)

    def advance(self, n: int) -> None:
        if self.bar is not None:
            self.bar.advance(self.task, n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def check_declared_targets(cfg: Config, sets: dict[str, EvalSet]) -> None:
    """A set that declares its `target` (forbidden or desired) must have a target response in every
    record: without one there is nothing the declaration could be about (a prompts-only normal set)."""
    for role, s in sets.items():
        sc = getattr(cfg.eval, role)
        if sc is None or sc.target is None:
            continue
        missing = next((i for i in s.items if i.target is None), None)
        if missing is not None:
            raise UnlearnError(
                f"{missing.where}: missing field '{sc.response_field}' (needed by eval.{role}.target: "
                f"{sc.target}: a declared target needs a target response in every record)"
            )


def prepare(cfg: Config, device: str, trained: Optional[dict] = None) -> tuple[Any, dict[str, EvalSet], Any, Any, Any]:
    """(tokenizer, sets, judge, embedder, hallucination similarity): everything that can fail on
    bad input, checked before any model generates. `trained`: run.json's "trained_examples"."""
    from unlearn.models import load_tokenizer

    tokenizer = load_tokenizer(cfg.model)
    sets = load_eval_sets(cfg, tokenizer, trained=trained)
    check_declared_targets(cfg, sets)
    e = cfg.eval
    embedder = similarity = judge = None
    spec = judge_spec(e.judge) if e.judge else None
    if spec is not None and not spec.needs:  # a judge with its own model first: it fails the most often
        judge = load_judge(e.judge, e, device)
    need_embedder = (
        "normal" in sets
        or (spec is not None and "embedder" in spec.needs)
        or (e.hallucination_similarity == "embedding" and any(s.has_hallucinated for s in sets.values()))
    )
    if need_embedder:
        from unlearn.evaluate.embed import Embedder

        embedder = Embedder(e.embedding_model, device)
    if any(s.has_hallucinated and role in get_metric("hallucination_rate").sets for role, s in sets.items()):
        if e.hallucination_similarity == "bertscore":
            from unlearn.evaluate.embed import BertScorer

            try:
                similarity = BertScorer(e.bertscore_model, device, layer=e.bertscore_layer)
            except UnlearnError as err:  # where the model was named: the file and line to fix
                raise UnlearnError(f"{cfg.origin('eval.bertscore_model')}: {err}") from None
        else:
            similarity = embedder
    if spec is not None and spec.needs:
        judge = load_judge(e.judge, e, device, embedder=embedder)
    return tokenizer, sets, judge, embedder, similarity


def evaluate_run(
    cfg: Config,
    *,
    model_dir: Optional[Path] = None,
    allow_unfinished: bool = False,
    original: Optional[ModelOutputs] = None,
    console: Any = None,
) -> EvalResult:
    """Evaluate OUTPUT_DIR/model (or `model_dir`) against the original model (cfg.model.name).

    Returns the metrics (metrics.json's content) and samples; writes nothing (report.write_report
    does). Raises UnlearnError, before any generation, for a missing model, an unfinished run,
    bad eval sets or a judge that cannot be loaded.
    """
    from unlearn.models import load_model

    t0 = time.time()
    out, model_dir, manifest = check_run(cfg, model_dir, allow_unfinished)
    check_backend(cfg, model_dir)
    device = pick_device(cfg)
    tokenizer, sets, judge, embedder, similarity = prepare(cfg, device, manifest.get("trained_examples"))
    key = sets_key(cfg, sets)
    if original is not None and original.key != key:
        original = None  # other prompts or settings: generate again
    okey, cached = cached_original(cfg, sets, device)
    cache = OutputCache(enabled=okey is not None)
    from_cache = original is None and cached is not None
    original = cached if from_cache else original
    n_prompts = sum(len(s.items) for s in sets.values())
    bar = _Bar(console, n_prompts * (1 if original is not None else 2))
    try:
        mc = cfg.model
        bar.phase("unlearned model")
        model, _ = load_model(
            ModelConfig(name=str(model_dir), dtype=mc.dtype, revision=mc.revision,
                        trust_remote_code=mc.trust_remote_code, allow_pickle=mc.allow_pickle),
            tokenizer,
        )
        unlearned = run_model(model.to(device), tokenizer, cfg, sets, "unlearned", str(model_dir), bar.advance)
        free_model(model)
        # The unlearned outputs' fluency is under the original model: cached by those outputs, so
        # that evaluating the same run again needs no original model at all.
        fkey = OutputCache.key("fluency", okey, unlearned.outputs) if okey else None
        fluency = fluency_from_json(cache.get(fkey), {r: len(s.items) for r, s in sets.items()}) if fkey else None
        unlearned.fluency_nll = fluency or {}
        if original is None or not original.fluency_nll or fluency is None:
            bar.phase("original model")
            model, _ = load_model(mc, tokenizer)
            model.to(device)
            generated = original is None
            others = [unlearned] if fluency is None else []
            if generated:  # its own outputs' fluency and the unlearned ones' in the NLL pass
                original = run_model(model, tokenizer, cfg, sets, "original", mc.name, bar.advance,
                                     fluency_of=others, own_fluency=True)
            else:
                add_fluency(model, tokenizer, cfg, sets, *([original] if not original.fluency_nll else []), *others)
            free_model(model)
            if generated and okey:  # only what this call generated: a passed `original` is not checked
                cache.put(okey, dataclasses.asdict(original))
            if fkey and fluency is None:
                cache.put(fkey, unlearned.fluency_nll)
        bar.phase("scoring")
        table, samples = evaluate_outputs(
            cfg, sets, original, unlearned, judge=judge, embedder=embedder, similarity=similarity
        )
    finally:
        bar.close()
    e = cfg.eval
    from unlearn.version import __version__

    metrics = {
        "unlearn_version": __version__,
        "run": {
            "output_dir": str(out),
            "model_dir": str(model_dir),
            "original_model": cfg.model.name,
            "status": manifest.get("status"),
            "steps": manifest.get("steps"),
            "objective": manifest.get("objective", cfg.objective),
            "stop_reason": manifest.get("stop_reason"),
        },
        "settings": {
            "template": cfg.data.template,
            "max_new_tokens": e.max_new_tokens,
            "decoding": "sampling" if e.do_sample else "greedy",
            **({"temperature": e.temperature, "top_p": e.top_p} if e.do_sample else {}),
            "backend": e.backend,
            "bleu_threshold": e.bleu_threshold,
            "judge": e.judge,
            "embedding_model": e.embedding_model or "all-MiniLM-L6-v2 (bundled)",
            "hallucination_similarity": e.hallucination_similarity if similarity is not None else None,
            "hallucination_margin": e.hallucination_margin,
            **({"bertscore": similarity.settings} if hasattr(similarity, "settings") else {}),
            "split": e.split,
            "seed": cfg.seed,
            "device": device,
            "original_cached": from_cache,
        },
        "sets": {
            role: {"n": len(s.items), "source": s.source, "kind": s.kind, "target": e.target_of(role),
                   "rule": ("contains the answer" if s.match == "contains" else f"BLEU >= {e.bleu_threshold:g}"),
                   **s.info}
            for role, s in sets.items()
        },
        "metrics": table,
        "verdict": verdict(table, e.verdict),
        "seconds": {
            "unlearned_generation": round(unlearned.seconds, 2),
            "original_generation": 0.0 if from_cache else round(original.seconds, 2),  # none: cached
            "total": round(time.time() - t0, 2),
        },
    }
    return EvalResult(metrics, samples, original, unlearned, out, model_dir)
