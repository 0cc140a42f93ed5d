"""Generation through vLLM (`eval.backend: vllm`): the HF path's prompts, stops and decoding, on a GPU.

    check_vllm(cfg, model_dir)    one-line UnlearnError before anything generates: no vllm package,
                                  no CUDA GPU, or a LoRA adapter vLLM cannot serve
    model_source(mc)              what vLLM loads: a model folder (or hub id) and a LoRA adapter or none
    build_request(...)            plain data: each prompt's token ids, the SamplingParams keywords
    generate_vllm(mc, ...)        the outputs, decoded exactly as unlearn.evaluate.generate decodes
    agreement(a, b)               how many outputs of two backends are identical

vLLM needs a model folder, not a model in memory. The original model is its folder (a built-in alias
is written to one: smollm2-135m's converted folder, a tiny-random model saved once per content under
the cache); the unlearned model is OUTPUT_DIR/model, a full model folder or a LoRA adapter, which is
served on its base model with enable_lora and a LoRARequest (no merged copy is written).

Same inputs: the prompts are given as token ids from unlearn.evaluate.generate.prompt_ids (the
Encoder's rendering and truncation), never re-tokenized by vLLM. Same stops: EOS and the template's
end-of-turn tokens (stop_token_ids), the next-prompt marker (stop), then the HF path's own cut and
decoding (decode_output) on the generated token ids. Same decoding: greedy (temperature 0) unless
eval.do_sample, then temperature, top_p and the run's seed. vLLM also stops at EOS ids that the
model's generation_config.json lists, which the HF path does not (most models list the tokenizer's).

The vLLM API used (checked against vLLM's sources, 0.6 to 0.33): LLM(model, dtype=, seed=,
revision=, trust_remote_code=, max_model_len=, gpu_memory_utilization=, enable_lora=,
max_lora_rank=, max_loras=); SamplingParams(max_tokens=, temperature=, top_p=, seed=, stop=,
stop_token_ids=, skip_special_tokens=); LLM.generate(prompts, sampling_params, use_tqdm=,
lora_request=), prompts as TokensPrompt dicts {"prompt_token_ids": [...]}, outputs in input order;
LoRARequest(lora_name, lora_int_id, lora_path) (positional: the third field was lora_local_path
before 0.6); RequestOutput.outputs[0].token_ids. max_lora_rank is one of LORA_RANKS.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import importlib.util
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from unlearn.config import Config, ModelConfig
from unlearn.data.encode import Encoder
from unlearn.errors import UnlearnError, one_line
from unlearn.evaluate.generate import (
    GenerationSettings, decode_output, end_of_turn_ids, prompt_ids, stop_strings,
)

# max_lora_rank values every vLLM from 0.6 on accepts (later ones add 1, 320 and 512).
LORA_RANKS = (8, 16, 32, 64, 128, 256)
# The share of GPU memory vLLM may take (weights, activations, KV cache): the rest stays for the
# models evaluation keeps in transformers (the targets' NLL and fluency, judges, embedder).
GPU_MEMORY = 0.5
INSTALL = "pip install vllm"  # no brackets: the CLI prints errors with rich, which reads [x] as markup


# --------------------------------------------------------------------------------------------
# Checks: before anything generates


def vllm_installed() -> bool:
    """Whether the vllm package can be imported (found, not imported: importing it takes seconds)."""
    return importlib.util.find_spec("vllm") is not None


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def check_available(where: str = "eval.backend") -> None:
    """UnlearnError unless vLLM can run here: the package installed and a CUDA GPU visible."""
    if not vllm_installed():
        raise UnlearnError(f"{where}: eval.backend: vllm needs the vllm package ({INSTALL}); or set eval.backend: hf")
    if not cuda_available():
        raise UnlearnError(f"{where}: eval.backend: vllm needs a CUDA GPU and none is visible; set eval.backend: hf")


def adapter_info(folder: Path) -> dict[str, Any]:
    """A LoRA adapter folder's base model, rank (the largest, rank_pattern included) and whether it
    is DoRA, from its adapter_config.json."""
    path = Path(folder) / "adapter_config.json"
    try:
        info = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UnlearnError(f"{path}: unreadable ({one_line(e)})") from None
    base = info.get("base_model_name_or_path")
    if not base:
        raise UnlearnError(f"{path}: no base_model_name_or_path")
    ranks = [info.get("r") or 0, *(info.get("rank_pattern") or {}).values()]
    return {"base": str(base), "rank": int(max(ranks)), "dora": bool(info.get("use_dora"))}


def max_lora_rank(rank: int, where: str = "eval.backend") -> int:
    """The smallest max_lora_rank vLLM accepts that holds an adapter of rank `rank`."""
    for r in LORA_RANKS:
        if rank <= r:
            return r
    raise UnlearnError(f"{where}: eval.backend: vllm serves LoRA ranks up to {LORA_RANKS[-1]}; the adapter's "
                       f"rank is {rank}; use eval.backend: hf")


def check_adapter(folder: Path, dtype: str, where: str = "eval.backend") -> None:
    """UnlearnError for an adapter vLLM cannot serve: float32 (vLLM's LoRA kernels run in bfloat16
    and float16 only), DoRA, or a rank over LORA_RANKS."""
    info = adapter_info(folder)
    if dtype == "float32":
        raise UnlearnError(f"{where}: eval.backend: vllm serves the LoRA adapter {folder} in bfloat16 or "
                           "float16 only (vLLM's LoRA kernels); set model.dtype: bfloat16, or eval.backend: hf")
    if info["dora"]:
        raise UnlearnError(f"{where}: eval.backend: vllm cannot serve the DoRA adapter {folder}; use eval.backend: hf")
    max_lora_rank(info["rank"], where)


def check_vllm(cfg: Config, model_dir: Optional[Path] = None) -> None:
    """The start of an evaluation with eval.backend: vllm: vLLM available, and the unlearned model
    (`model_dir`), if it is a LoRA adapter, one vLLM can serve. One-line UnlearnError naming
    eval.backend's file and line."""
    where = cfg.origin("eval.backend")
    check_available(where)
    if model_dir is not None and (Path(model_dir) / "adapter_config.json").exists():
        check_adapter(Path(model_dir), cfg.model.dtype, where)


# --------------------------------------------------------------------------------------------
# What vLLM loads


@dataclass(frozen=True)
class Source:
    """What vLLM loads for a model: `model`, a folder or hub id, and `adapter`, a LoRA adapter
    folder served on it (None: none) of rank `rank`."""

    model: str
    adapter: Optional[str] = None
    rank: int = 0


def alias_folder(name: str) -> Path:
    """A folder vLLM can load for a built-in alias: smollm2-135m's converted folder; a tiny-random
    model (built in code) saved once per content, weights and tokenizer, under cache_dir()/models."""
    from unlearn.models.load import ALIASES, cache_dir, load_model

    folder = ALIASES[name]()
    if isinstance(folder, Path):
        return folder
    model, tok = load_model(ModelConfig(name=name))  # float32; vLLM casts to model.dtype
    h = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        h.update(key.encode() + value.detach().cpu().numpy().tobytes())
    target = cache_dir() / "models" / f"{name}-{h.hexdigest()[:12]}"
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".tmp-{target.name}-{uuid.uuid4().hex[:8]}"
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    try:
        os.replace(tmp, target)
    except OSError:  # another process wrote the same content first
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return target


def model_source(mc: ModelConfig) -> Source:
    """What vLLM loads for mc.name: an alias's folder, a local folder, a hub id; a LoRA adapter
    folder is its base model's source with the adapter on top."""
    from unlearn.models.load import resolve_name

    kind, where = resolve_name(mc.name)
    if kind == "local" and (where / "adapter_config.json").exists():
        info = adapter_info(where)
        base = model_source(dataclasses.replace(mc, name=info["base"]))
        if base.adapter is not None:
            raise UnlearnError(f"{where}: its base {info['base']} is itself an adapter; vLLM serves one LoRA "
                               "adapter on a full model")
        return Source(base.model, str(where), info["rank"])
    if kind == "alias":
        return Source(str(alias_folder(where)))
    return Source(str(where))


# --------------------------------------------------------------------------------------------
# The request: plain data, built without vLLM


@dataclass
class Request:
    """What vLLM is asked: the prompts' token ids, the SamplingParams keywords, and the stop
    strings the outputs are cut at after decoding (as the HF path cuts them)."""

    prompts: list[list[int]]
    sampling: dict[str, Any]
    stops: list[str]


def sampling_kwargs(encoder: Encoder, settings: GenerationSettings, raw: bool = False) -> dict[str, Any]:
    """SamplingParams keywords matching the HF path's GenerationConfig: at most max_new_tokens,
    stop at the end-of-turn ids and (templated prompts) the template's next-prompt marker; greedy
    (temperature 0) unless do_sample, then temperature, top_p and the seed."""
    kw: dict[str, Any] = {
        "max_tokens": settings.max_new_tokens,
        "stop_token_ids": end_of_turn_ids(encoder),
        "skip_special_tokens": True,
    }
    stops = [] if raw else stop_strings(encoder)
    if stops:
        kw["stop"] = stops
    if settings.do_sample:
        kw.update(temperature=settings.temperature, top_p=settings.top_p, seed=settings.seed)
    else:
        kw["temperature"] = 0.0
    return kw


def build_request(encoder: Encoder, prompts: Sequence[str], settings: GenerationSettings, raw: bool = False,
                  prefills: Optional[Sequence[str]] = None) -> Request:
    """The request for `prompts`: token ids exactly as the HF path feeds them (prompt_ids)."""
    return Request(
        prompts=prompt_ids(encoder, prompts, settings.max_prompt_tokens, raw, prefills),
        sampling=sampling_kwargs(encoder, settings, raw),
        stops=[] if raw else stop_strings(encoder),
    )


@dataclass(frozen=True)
class EngineSpec:
    """The keywords an engine is built with; an engine serves every spec equal to its own but for
    a smaller LoRA rank (0: no LoRA)."""

    model: str
    dtype: str
    revision: Optional[str]
    trust_remote_code: bool
    max_model_len: int
    seed: int
    max_lora_rank: int = 0

    def kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "model": self.model, "dtype": self.dtype, "revision": self.revision,
            "trust_remote_code": self.trust_remote_code, "max_model_len": self.max_model_len,
            "seed": self.seed, "gpu_memory_utilization": GPU_MEMORY,
        }
        if self.max_lora_rank:
            kw.update(enable_lora=True, max_lora_rank=self.max_lora_rank, max_loras=1)
        return kw

    def serves(self, want: "EngineSpec") -> bool:
        return dataclasses.replace(self, max_lora_rank=0) == dataclasses.replace(want, max_lora_rank=0) and (
            self.max_lora_rank >= want.max_lora_rank
        )


def engine_spec(mc: ModelConfig, source: Source, settings: GenerationSettings) -> EngineSpec:
    """The engine for `source`: room for the longest prompt and its new tokens (capped at the
    model's max_position_embeddings where its config says), the LoRA rank its adapter needs."""
    length = settings.max_prompt_tokens + settings.max_new_tokens
    config = Path(source.model) / "config.json"
    if config.is_file():
        try:
            limit = json.loads(config.read_text()).get("max_position_embeddings")
        except (OSError, json.JSONDecodeError):
            limit = None
        if isinstance(limit, int) and limit > 0:
            length = min(length, limit)
    return EngineSpec(
        model=source.model, dtype=mc.dtype, revision=None if Path(source.model).is_dir() else mc.revision,
        trust_remote_code=mc.trust_remote_code, max_model_len=length, seed=settings.seed,
        max_lora_rank=max_lora_rank(source.rank) if source.adapter else 0,
    )


# --------------------------------------------------------------------------------------------
# Calling vLLM

# One engine at a time (vLLM holds GPU_MEMORY of the GPU while it lives), kept between calls: an
# evaluation asks it once per set, and an adapter and its base model share it.
_ENGINE: dict[str, Any] = {}
_LORA_IDS: dict[tuple[str, int, int], int] = {}


def release() -> None:
    """Shut the kept engine down and give its GPU memory back (as vLLM's own tests clean up)."""
    llm = _ENGINE.pop("llm", None)
    _ENGINE.clear()
    if llm is None:
        return
    del llm
    try:
        from vllm.distributed import destroy_distributed_environment, destroy_model_parallel

        destroy_model_parallel()
        destroy_distributed_environment()
    except Exception:  # an older or newer vLLM without them: deleting the engine is what counts
        pass
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def engine(spec: EngineSpec) -> Any:
    """The kept engine if it serves `spec`, else a new one (the old one released first)."""
    held = _ENGINE.get("spec")
    if held is not None and held.serves(spec):
        return _ENGINE["llm"]
    release()
    try:
        from vllm import LLM

        llm = LLM(**spec.kwargs())
    except Exception as e:  # vLLM raises many kinds (unsupported architecture, memory, ...)
        raise UnlearnError(f"eval.backend: vllm could not load {spec.model}: {one_line(e)}") from e
    _ENGINE.update(spec=spec, llm=llm)
    return llm


def lora_request(adapter: str) -> Any:
    """The LoRARequest for an adapter folder; its id changes when the adapter's files do (vLLM
    keeps loaded adapters by id)."""
    from vllm.lora.request import LoRARequest

    folder = Path(adapter)
    files = [folder / n for n in ("adapter_model.safetensors", "adapter_model.bin", "adapter_config.json")]
    stat = next(p.stat() for p in files if p.exists())
    key = (str(folder.resolve()), stat.st_size, stat.st_mtime_ns)
    lora_id = _LORA_IDS.setdefault(key, len(_LORA_IDS) + 1)  # ids start at 1
    return LoRARequest(f"unlearned-{lora_id}", lora_id, str(folder))


def generate_vllm(
    mc: ModelConfig,
    encoder: Encoder,
    prompts: Sequence[str],
    settings: GenerationSettings,
    *,
    raw: bool = False,
    prefills: Optional[Sequence[str]] = None,
    progress: Optional[Callable[[int], None]] = None,
) -> list[str]:
    """The outputs of unlearn.evaluate.generate.generate for the model at mc.name, through vLLM."""
    if not prompts:
        return []
    check_available()
    source = model_source(mc)
    if source.adapter is not None:
        check_adapter(Path(source.adapter), mc.dtype)
    request = build_request(encoder, prompts, settings, raw, prefills)
    llm = engine(engine_spec(mc, source, settings))
    from vllm import SamplingParams

    lora = lora_request(source.adapter) if source.adapter is not None else None
    try:
        results = llm.generate([{"prompt_token_ids": ids} for ids in request.prompts],
                               SamplingParams(**request.sampling), use_tqdm=False, lora_request=lora)
    except Exception as e:
        what = source.adapter or source.model
        raise UnlearnError(f"eval.backend: vllm could not generate with {what}: {one_line(e)}") from e
    tok = encoder.tokenizer
    outputs = [decode_output(tok, ids, list(r.outputs[0].token_ids), raw, request.stops)
               for ids, r in zip(request.prompts, results)]
    if progress is not None:
        progress(len(outputs))
    return outputs


# --------------------------------------------------------------------------------------------
# Comparing backends


def agreement(hf_outputs: Sequence[str], vllm_outputs: Sequence[str]) -> dict[str, Any]:
    """How far two backends' outputs for the same prompts agree: {"identical": the fraction of
    prompts whose outputs are the same string, "n": the number of prompts, "differ": the indices
    of those that are not}. ValueError for lists of different lengths, or empty ones."""
    if len(hf_outputs) != len(vllm_outputs):
        raise ValueError(f"agreement: {len(hf_outputs)} outputs against {len(vllm_outputs)}")
    if not hf_outputs:
        raise ValueError("agreement: no outputs to compare")
    differ = [i for i, (a, b) in enumerate(zip(hf_outputs, vllm_outputs)) if a != b]
    n = len(hf_outputs)
    return {"identical": (n - len(differ)) / n, "n": n, "differ": differ}
