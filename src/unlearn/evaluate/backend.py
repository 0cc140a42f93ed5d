"""The one place that decides what generates an evaluation's outputs (eval.backend).

    check_backend(cfg, model_dir)   at the start of evaluation: a one-line UnlearnError if the
                                    backend cannot run here (before any model generates)
    generate_texts(model, ...)      'hf': unlearn.evaluate.generate.generate on the model in memory;
                                    'vllm': unlearn.evaluate.vllm_backend on the folder it came from

A module of its own because the vLLM backend builds on generate.py's helpers (prompt_ids, the stops,
decode_output): generate.py importing it back would make a cycle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from unlearn.config import Config
from unlearn.data.encode import Encoder
from unlearn.evaluate.generate import GenerationSettings, generate

BACKENDS = ("hf", "vllm")


def check_backend(cfg: Config, model_dir: Optional[Path] = None) -> None:
    """A one-line UnlearnError if cfg.eval.backend cannot run here (vllm: the package, a CUDA GPU,
    an adapter vLLM can serve in `model_dir`): called at the start of evaluation, before any model
    generates. The hf backend needs nothing more."""
    if cfg.eval.backend == "vllm":
        from unlearn.evaluate.vllm_backend import check_vllm

        check_vllm(cfg, model_dir)


def generate_texts(
    model: Any,
    encoder: Encoder,
    prompts: Sequence[str],
    settings: GenerationSettings,
    *,
    backend: str = "hf",
    source: Any = None,
    raw: bool = False,
    prefills: Optional[Sequence[str]] = None,
    progress: Optional[Callable[[int], None]] = None,
) -> list[str]:
    """The outputs of `generate`, from the backend named (eval.backend).

    'hf': transformers' generate on the in-memory `model`. 'vllm': vLLM on the folder `model` was
    loaded from: `source`, the ModelConfig whose name is that folder, alias or hub id (a LoRA
    adapter folder is served through vLLM's LoRA support); `model` is not used. Both backends get
    the same token ids (prompt_ids), stop at the same tokens and strings and decode alike
    (decode_output), so greedy outputs agree up to the numerics of their kernels."""
    if backend == "vllm":
        if source is None:
            raise ValueError("generate_texts: the vllm backend needs `source`, the model's ModelConfig")
        from unlearn.evaluate.vllm_backend import generate_vllm

        return generate_vllm(source, encoder, prompts, settings, raw=raw, prefills=prefills, progress=progress)
    if backend != "hf":
        raise ValueError(f"generate_texts: unknown backend {backend!r}; backends: {', '.join(BACKENDS)}")
    return generate(model, encoder, prompts, settings, raw=raw, prefills=prefills, progress=progress)
