"""The decoding loop under `unlearn.evaluate.generate`: batches of parts, a shared prefix computed
once, a KV cache written in place, rows that have ended dropped from the batch and its KV cache.

    batches(ids, batch_size)      row indices in batches of parts (one per prefix group, and the rest)
    part_of(ids, rows, pad_id)    a part's tensors: the common prefix apart, the rest left-padded
    decode(model, parts, settings, eos_ids=, stopped=)
                                  the new token ids of every row; greedy tokens equal transformers'
                                  `generate` for each prompt alone (tests/evaluate/test_generate.py)
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from unlearn.models.attention import use_packed_attention
from unlearn.models.forward import base_model


@dataclass
class GenerationSettings:
    max_new_tokens: int = 64
    batch_size: int = 8
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    max_prompt_tokens: int = 512  # longer prompts lose tokens from the left, as in training


# Dropping rows copies the whole KV cache: done once an eighth of the batch has ended, not for each row.
DROP_EVERY = 8
SHARED_PREFIX = 32  # tokens: rows that begin alike for this long share one computation of the prefix
# Rows sharing no prefix are prefilled in parts of similar length: a part's shortest row is at least
# (1 - WIDTH_SPREAD) of its longest, so its left padding stays small, and a part has MIN_PART rows
# or more, so each prefill stays one large matrix multiply. On the demo's audit (900 jailbreak rows
# of one model) this cut the prefilled positions from 29,077 to 25,894.
WIDTH_SPREAD = 0.1
MIN_PART = 8


def batches(ids: Sequence[Sequence[int]], batch_size: int) -> list[list[list[int]]]:
    """Batches of at most batch_size rows, each a list of parts (lists of row indices) prefilled
    apart and decoded together. Rows whose first SHARED_PREFIX tokens are equal (one jailbreak
    around many questions, one few-shot context, a chat template's system prompt) form a group,
    longest first, in parts of its own (its prefix then computed once); groups go into batches
    first-fit, largest first, and the other rows, longest first, fill the room left, in parts of
    similar length (by_width)."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, row in enumerate(ids):
        if len(row) > SHARED_PREFIX:
            groups.setdefault(tuple(row[:SHARED_PREFIX]), []).append(i)
    together = [g for g in groups.values() if len(g) > 1]
    grouped = {i for g in together for i in g}
    by_length = lambda rows: sorted(rows, key=lambda i: len(ids[i]), reverse=True)  # noqa: E731
    chunks = [g[s : s + batch_size] for g in map(by_length, together) for s in range(0, len(g), batch_size)]
    out: list[list[list[int]]] = []
    room: list[int] = []
    for chunk in sorted(chunks, key=len, reverse=True):
        b = next((b for b, r in enumerate(room) if r >= len(chunk)), None)
        if b is None:
            out.append([])
            room.append(batch_size)
            b = len(out) - 1
        out[b].append(chunk)
        room[b] -= len(chunk)
    loose = by_length([i for i in range(len(ids)) if i not in grouped])
    for b in range(len(out)):
        if room[b] and loose:
            out[b].extend(by_width(ids, loose[: room[b]]))
            loose = loose[room[b]:]
    out.extend(by_width(ids, loose[s : s + batch_size]) for s in range(0, len(loose), batch_size))
    return out


def by_width(ids: Sequence[Sequence[int]], rows: Sequence[int]) -> list[list[int]]:
    """Rows sorted longest first, in parts of similar length (WIDTH_SPREAD, MIN_PART)."""
    parts: list[list[int]] = []
    for i in rows:
        if parts and (len(parts[-1]) < MIN_PART or len(ids[i]) >= (1 - WIDTH_SPREAD) * len(ids[parts[-1][0]])):
            parts[-1].append(i)
        else:
            parts.append([i])
    return parts


def common_prefix(ids: Sequence[Sequence[int]], rows: Sequence[int]) -> int:
    """How many first tokens every row of `rows` shares, if at least SHARED_PREFIX (else 0); at
    least one token of each row is left after it (the row's first forward)."""
    first = ids[rows[0]]
    n = min(len(ids[i]) for i in rows) - 1
    for i in rows[1:]:
        row = ids[i]
        k = 0
        while k < n and row[k] == first[k]:
            k += 1
        n = k
    return n if n >= SHARED_PREFIX and len(rows) > 1 else 0


@dataclass
class Part:
    """Rows prefilled together: the tokens before every row (None: none shared), and each row's
    tokens after it, left-padded ([rows, width] ids and 0/1 mask)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    prefix: Optional[torch.Tensor] = None


def part_of(ids: Sequence[Sequence[int]], rows: Sequence[int], pad_id: int, device: Any = "cpu") -> Part:
    """The Part of prompts `rows`: their common prefix (common_prefix) apart, the rest left-padded."""
    shared = common_prefix(ids, rows)
    rest = [ids[i][shared:] for i in rows]
    width = max(len(r) for r in rest)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rest):  # left padding: the prompt ends where generation starts
        input_ids[r, width - len(row) :] = torch.tensor(row)
        mask[r, width - len(row) :] = 1
    prefix = torch.tensor(ids[rows[0]][:shared], device=device) if shared else None
    return Part(input_ids.to(device), mask.to(device), prefix)


@dataclass
class _Forward:
    """What a causal LM's forward takes: transformers 5 renamed `past_key_values` to `cache`; a
    peft model passes both on to the model it wraps, so its base model's forward is read."""

    cache: str
    logits_to_keep: bool
    position_ids: bool

    @classmethod
    def of(cls, model: Any) -> "_Forward":
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        params = inspect.signature(base.forward).parameters
        return cls("cache" if "cache" in params else "past_key_values", "logits_to_keep" in params,
                   "position_ids" in params)

    def __call__(self, model: Any, ids: torch.Tensor, mask: torch.Tensor, position: torch.Tensor,
                 cache: Any) -> tuple[torch.Tensor, Any]:
        """(the last position's logits in float32, the KV cache after this forward)."""
        kwargs: dict[str, Any] = {self.cache: cache} if cache is not None else {}
        if self.logits_to_keep:
            # The last position. As the count 1 it is a strided slice of a prefill's hidden states,
            # which torch multiplies by a frozen output head as a batched matmul of the weight
            # expanded per row: 175 ms against 23 ms for 60 rows of the demo model on this CPU.
            # Its index gathers it into one contiguous row per prompt: one matmul.
            width = ids.shape[1]
            kwargs["logits_to_keep"] = 1 if width == 1 else torch.tensor([width - 1], device=ids.device)
        if self.position_ids:
            kwargs["position_ids"] = position
        out = model(input_ids=ids, attention_mask=mask, use_cache=True, **kwargs)
        cache = getattr(out, "cache", None)
        return out.logits[:, -1, :].float(), (out.past_key_values if cache is None else cache)


def _sampler(settings: GenerationSettings) -> Callable[[torch.Tensor], torch.Tensor]:
    """Next tokens from the last position's logits: argmax, or transformers' temperature and top-p
    warpers and a draw (do_sample)."""
    if not settings.do_sample:
        return lambda logits: logits.argmax(-1)
    from transformers.generation.logits_process import (
        LogitsProcessorList,
        TemperatureLogitsWarper,
        TopPLogitsWarper,
    )

    warpers = LogitsProcessorList()
    if settings.temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(settings.temperature))
    if settings.top_p < 1.0:
        warpers.append(TopPLogitsWarper(settings.top_p))

    def draw(logits: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(warpers(None, logits), dim=-1)
        return torch.multinomial(probs, num_samples=1).squeeze(1)

    return draw


@torch.no_grad()
def decode(
    model: Any,
    parts: Sequence[Part],
    settings: GenerationSettings,
    *,
    eos_ids: Sequence[int] = (),
    stopped: Optional[Callable[[list[int]], bool]] = None,
) -> list[list[int]]:
    """The new tokens of each row of `parts` (in order), up to and including the token that ends
    it (one of `eos_ids`, the token after which `stopped(new tokens)` is true, or the
    max_new_tokens-th).

    Each part is prefilled on its own: a part's `prefix` once, on one row, its KV cache then
    repeated for every row, whose padding sits masked between the prefix and its own tokens.
    The parts' caches are then joined, each left-padded to the longest, and decoded as one batch
    (transformers' DynamicCache; any other cache decodes part by part). Positions are counted over
    real tokens from the attention mask, as transformers' generate counts them, so greedy outputs
    are the ones it gives for each prompt alone.

    The joined cache's layers then write each step's keys and values in place, into room reserved
    for max_new_tokens (unlearn.evaluate.kvcache.reserve), where DynamicCache copies the whole cache
    every step.

    Rows that have ended leave the batch, and their rows of the KV cache go
    (`Cache.batch_select_indices`), once they are an eighth of it (DROP_EVERY; each drop copies the
    cache), so later steps compute mostly the rows still going. A cache without
    batch_select_indices keeps every row to the end, as generate does."""
    use_packed_attention(base_model(model))  # SDPA without copying grouped keys (unlearn.models.attention)
    forward = _Forward.of(model)
    pick = _sampler(settings)
    started = [_prefill(model, forward, p) for p in parts]
    joined = started[0] if len(started) == 1 else _join(started)
    if joined is None:
        return [t for s in started for t in _continue(model, forward, pick, s, settings, eos_ids, stopped)]
    del started  # the parts' own caches, copied into the joined one
    if settings.max_new_tokens > 1:
        from unlearn.evaluate.kvcache import reserve

        reserve(joined[1], settings.max_new_tokens - 1)  # the first new token comes from the prefill
    return _continue(model, forward, pick, joined, settings, eos_ids, stopped)


def _prefill(model: Any, forward: _Forward, part: Part) -> tuple[torch.Tensor, Any, torch.Tensor, torch.Tensor]:
    """(last logits, KV cache, attention mask, last position) of a part's prompts."""
    n = part.input_ids.shape[0]
    mask, cache, step_ids = part.attention_mask, None, part.input_ids
    if part.prefix is not None and part.prefix.numel():
        mask = torch.cat([mask.new_ones((n, part.prefix.numel())), mask], dim=1)
        cache = _prefix_cache(model, forward, part.prefix, n)
        if cache is None:  # a cache that cannot be repeated: each row runs whole, padded after the prefix
            step_ids = torch.cat([part.prefix[None].expand(n, -1), step_ids], dim=1)
    position = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)[:, -step_ids.shape[1]:]
    logits, cache = forward(model, step_ids, mask, position, cache)
    return logits, cache, mask, position[:, -1:]


def _join(started: Sequence[tuple[torch.Tensor, Any, torch.Tensor, torch.Tensor]]) -> Optional[tuple]:
    """The parts' prefill states as one batch: each cache and mask left-padded to the longest and
    stacked; None unless every cache is a plain DynamicCache (layers of DynamicLayer)."""
    from transformers.cache_utils import DynamicLayer

    layers = [getattr(cache, "layers", None) for _, cache, _, _ in started]
    if any(ls is None or any(type(x) is not DynamicLayer for x in ls) for ls in layers) or \
            len({len(ls) for ls in layers}) != 1:
        return None
    width = max(mask.shape[1] for _, _, mask, _ in started)
    for i, layer in enumerate(layers[0]):
        for name in ("keys", "values"):  # [rows, heads, length, head_dim]: pad the length on the left
            setattr(layer, name, torch.cat([F.pad(getattr(ls[i], name), (0, 0, width - mask.shape[1], 0))
                                            for ls, (_, _, mask, _) in zip(layers, started)]))
    mask = torch.cat([F.pad(m, (width - m.shape[1], 0)) for _, _, m, _ in started])
    return (torch.cat([s[0] for s in started]), started[0][1], mask, torch.cat([s[3] for s in started]))


def _continue(model: Any, forward: _Forward, pick: Callable[[torch.Tensor], torch.Tensor], state: tuple,
              settings: GenerationSettings, eos_ids: Sequence[int],
              stopped: Optional[Callable[[list[int]], bool]]) -> list[list[int]]:
    """The decoding steps after a prefill (`state`: its last logits, cache, mask, last position)."""
    logits, cache, mask, position = state
    eos = set(eos_ids)
    n = logits.shape[0]
    new: list[list[int]] = [[] for _ in range(n)]
    rows = list(range(n))  # the output row of each batch row
    finished = [False] * n  # ended, by output row (an ended row may still be in the batch)
    for step in range(settings.max_new_tokens):
        if step:
            logits, cache = forward(model, step_ids, mask, position, cache)
        next_ids = pick(logits)
        keep = []
        for b, (row, token) in enumerate(zip(rows, next_ids.tolist())):
            if finished[row]:
                continue
            new[row].append(token)
            ends = (token in eos or len(new[row]) >= settings.max_new_tokens
                    or (stopped is not None and stopped(new[row])))
            if ends:
                finished[row] = True
            else:
                keep.append(b)
        if not keep:
            break
        if (len(rows) - len(keep)) * DROP_EVERY >= len(rows) and hasattr(cache, "batch_select_indices"):
            index = torch.tensor(keep, device=mask.device)
            cache.batch_select_indices(index)
            rows = [rows[b] for b in keep]
            mask, position, next_ids = mask[index], position[index], next_ids[index]
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
        position = position + 1
        step_ids = next_ids.unsqueeze(1)
    return new


def _prefix_cache(model: Any, forward: _Forward, prefix: torch.Tensor, rows: int) -> Any:
    """The KV cache of `prefix` (one forward of one row), repeated for `rows` rows; None where the
    cache cannot be repeated, or the model takes no positions (the rows then run whole)."""
    if not forward.position_ids:
        return None
    _, cache = forward(model, prefix[None], torch.ones_like(prefix)[None],
                       torch.arange(prefix.numel(), device=prefix.device)[None], None)
    if not hasattr(cache, "batch_repeat_interleave"):
        return None
    cache.batch_repeat_interleave(rows)
    return cache
