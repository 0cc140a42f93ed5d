"""Attention over packed rows, computed unit by unit instead of over the whole bin.

A packed bin (unlearn.models.pack) holds several units side by side: a row, or a row and the rows
that share its prompt. Its 4D mask is block-diagonal: a token attends only within its unit. torch's
CPU flash-attention kernel, given that mask, still computes all width x width scores of the bin
and masks most of them away (the step benchmark's bin of 458 tokens: 10 % of its mask is true).
Here each unit costs two calls at most: its first row, causal and unmasked; then the rows that
share that row's first tokens, all in one call whose keys are those first tokens and the rows'
own, with the matching slice of the mask. Same scores, same softmax over the same keys; padding at
a bin's tail, which nothing reads, gets zeros.

It is registered with transformers' attention interface as PACKED_ATTENTION. Without the units
(every unpacked forward, generation) it is transformers' own SDPA attention, with SDPA's mask
creation; one difference, on the CPU only: a masked forward of several positions over grouped-query
heads runs as SDPA's own grouped-query attention, without copying the keys and values once per
query head (_grouped_on_cpu; the same result to the bit). `use_packed_attention` switches a model
whose attention is SDPA to it; the packed forward (unlearn.models.forward) and decoding
(unlearn.evaluate.decode) do so, and the packed forward passes the units as UNITS_KWARG. The
switch is not saved with the model (transformers drops the internal attention setting from
config.json).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

PACKED_ATTENTION = "unlearn_packed_sdpa"
UNITS_KWARG = "unlearn_units"  # PackedRows.units: per bin, (start, root_end, end, prefix) of each unit

_registered = False


def _register() -> None:
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(PACKED_ATTENTION, packed_attention_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(PACKED_ATTENTION, sdpa_mask)
    _registered = True


def use_packed_attention(model: Any) -> bool:
    """Switch a transformers model (not a peft wrapper) whose attention is SDPA to PACKED_ATTENTION;
    True when it uses PACKED_ATTENTION afterwards. Models with another attention are left alone."""
    config = getattr(model, "config", None)
    attn = getattr(config, "_attn_implementation", None)
    if attn == PACKED_ATTENTION:
        return True
    if attn != "sdpa" or not hasattr(model, "set_attn_implementation"):
        return False
    _register()
    model.set_attn_implementation(PACKED_ATTENTION)
    return getattr(model.config, "_attn_implementation", None) == PACKED_ATTENTION


def packed_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature. query [bins, heads, width, dim], key and value
    [bins, kv_heads, width, dim], attention_mask the packed layout's [bins, 1, width, width];
    returns [bins, width, heads, dim] as transformers' SDPA does."""
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    units = kwargs.pop(UNITS_KWARG, None)
    plain = units is None or attention_mask is None or attention_mask.dim() != 4
    special = any(kwargs.get(k) is not None for k in ("softcap", "position_bias")) or kwargs.get("output_attentions")
    if plain or special:
        if not special and _grouped_on_cpu(module, query, attention_mask):
            out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=dropout,
                                                 scale=scaling, enable_gqa=True)
            return out.transpose(1, 2).contiguous(), None
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    if attention_mask.dtype != torch.bool:
        raise ValueError(f"{PACKED_ATTENTION} expects the packed layout's boolean mask, got {attention_mask.dtype}")
    groups = getattr(module, "num_key_value_groups", 1)
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    bins, width = query.shape[0], query.shape[2]
    out = []
    for b, bin_units in enumerate(units):
        # split, not slices: the backward of a split is one cat, where each slice's would be a
        # zero-filled tensor of the whole width.
        sizes = [n for start, root_end, end, _ in bin_units for n in (root_end - start, end - root_end) if n]
        tail = width - bin_units[-1][2]  # the bin's padding: nothing reads it
        if tail:
            sizes.append(tail)
        q, k, v = (iter(t[b : b + 1].split(sizes, dim=2)) for t in (query, key, value))
        parts = []
        for start, root_end, end, prefix in bin_units:
            # the first row: causal, unmasked
            q0, k0, v0 = next(q), next(k), next(v)
            parts.append(F.scaled_dot_product_attention(q0, k0, v0, dropout_p=dropout, scale=scaling, is_causal=True))
            if end == root_end:
                continue
            # the rows sharing its first `prefix` tokens: to those and to their own rows, as the mask says
            q1, k1, v1 = next(q), next(k), next(v)
            k1, v1 = torch.cat([k0[:, :, :prefix], k1], dim=2), torch.cat([v0[:, :, :prefix], v1], dim=2)
            rows = attention_mask[b : b + 1, :, root_end:end]
            mask = torch.cat([rows[..., start : start + prefix], rows[..., root_end:end]], dim=-1)
            parts.append(F.scaled_dot_product_attention(q1, k1, v1, attn_mask=mask, dropout_p=dropout, scale=scaling))
        if tail:
            parts.append(query.new_zeros(1, query.shape[1], tail, value.shape[-1]))
        out.append(parts[0] if len(parts) == 1 else torch.cat(parts, dim=2))
    attn = out[0] if bins == 1 else torch.cat(out, dim=0)
    return attn.transpose(1, 2).contiguous(), None


def _grouped_on_cpu(module: torch.nn.Module, query: torch.Tensor, attention_mask: torch.Tensor | None) -> bool:
    """Whether a masked forward of several query positions over grouped-query heads runs as SDPA's
    own grouped-query attention (enable_gqa) on the CPU. transformers' SDPA copies the keys and
    values once per query head there (`repeat_kv`): it keeps enable_gqa for unmasked attention,
    because CUDA's kernels fall back to the math one with a mask. The CPU's flash kernel takes the
    mask and the grouped heads as they are, with the same result to the bit
    (tests/models/test_attention.py); in the audit's prefill of the demo model, that copy was 11 %
    of the CPU time."""
    return (query.device.type == "cpu" and attention_mask is not None and query.shape[2] > 1
            and getattr(module, "num_key_value_groups", 1) > 1)
