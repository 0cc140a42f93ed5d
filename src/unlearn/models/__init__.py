"""The model layer: loading (load), the frozen reference (reference), saving (save), the training
forward that computes response-position logits (forward), the row packing it uses (pack) and
switching off the model's dropout for training (dropout).

Everything public is importable from here: `from unlearn.models import load_model, ResponseLM`.
"""

from unlearn.models.dropout import disable_dropout
from unlearn.models.forward import (
    ResponseLM,
    base_model,
    computed_tokens,
    forward_kl_of,
    logits_at,
    model_hidden_size,
    packed_layout,
    packed_inputs,
    per_position,
    response_logits,
    token_logps_of,
)
from unlearn.models.load import (
    ALIASES,
    DTYPES,
    SMOLLM2_GGUF,
    add_lora,
    byte_tokenizer,
    cache_dir,
    ensure_pad_token,
    is_peft,
    load_model,
    load_tokenizer,
    own_memory,
    quiet_transformers,
    resolve_name,
)
from unlearn.models.pack import PackedRows, layout_cost, pack_rows
from unlearn.models.reference import Reference
from unlearn.models.save import save_model

__all__ = [
    "ALIASES", "DTYPES", "SMOLLM2_GGUF", "PackedRows", "Reference",
    "ResponseLM", "add_lora", "base_model", "computed_tokens", "byte_tokenizer", "cache_dir", "disable_dropout", "ensure_pad_token", "forward_kl_of",
    "is_peft", "layout_cost", "load_model", "load_tokenizer", "logits_at", "model_hidden_size", "own_memory", "pack_rows",
    "packed_layout", "packed_inputs", "per_position", "quiet_transformers", "resolve_name", "response_logits", "save_model",
    "token_logps_of",
]
