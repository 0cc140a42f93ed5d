"""The step context: everything a loss term may read, each thing computed at most once.

One policy forward runs over all segments (forget, mismatch, retain) concatenated. The decoder runs
on every position, but the LM head (a vocabulary-sized matmul) and the log-softmax run only at the
positions that predict a response token. The reference model runs once, only on the rows of the
segments whose terms need it, under torch.no_grad().

Rows of one step differ a lot in length (a forget example of a hundred tokens next to ten
mismatch answers of a dozen), and the k mismatch rows repeat the forget example's prompt. With
`pack=True` the prompt is computed once and the short rows are laid side by side, each with its
own positions and a block-diagonal causal mask, instead of each being padded to the longest (see
`pack_rows`). Same losses, a fraction of the tokens.

Vocabulary-sized fp32 work (log-softmax, cross-entropy, KL) runs over chunks of positions, each
recomputed in the backward pass rather than kept (see `per_position`): past the first chunk, its
memory no longer grows with positions x vocabulary. Only the logits themselves (in the compute
dtype) and their gradient are full-size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from unlearn.data.batch import Batch
from unlearn.data.encode import IGNORE

# Elements of one chunk of vocabulary-sized fp32 work: 2**25 x 4 bytes = 128 MiB, about 680
# positions at a 49k vocabulary, 1000 at 32k.
CHUNK_ELEMENTS = 2**25


def _base(model: Any) -> Any:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def per_position(fn: Callable[..., torch.Tensor], *tensors: torch.Tensor) -> torch.Tensor:
    """fn(*tensors) -> one value per position, evaluated CHUNK_ELEMENTS at a time.

    tensors are [positions, ...] with the vocabulary last on the first. With more than one chunk
    and gradients needed, each chunk is checkpointed: its fp32 intermediates are recomputed in the
    backward pass instead of kept, one chunk at a time.
    """
    n, vocab = tensors[0].shape[0], tensors[0].shape[-1]
    step = max(1, CHUNK_ELEMENTS // max(1, vocab))
    if n <= step:
        return fn(*tensors)
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    out = []
    for i in range(0, n, step):
        part = [t[i : i + step] for t in tensors]
        out.append(checkpoint(fn, *part, use_reentrant=False) if grad else fn(*part))
    return torch.cat(out)


def _token_logps(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return -F.cross_entropy(logits.float(), targets, reduction="none")


def _forward_kl(logits: torch.Tensor, reference_logits: torch.Tensor) -> torch.Tensor:
    logq = F.log_softmax(logits.float(), dim=-1)
    logp = F.log_softmax(reference_logits.float(), dim=-1)
    return F.kl_div(logq, logp, reduction="none", log_target=True).sum(-1)


@dataclass
class PackedRows:
    """Rows of a right-padded batch laid out in fewer, fuller rows ("bins").

    input_ids, position_ids: [bins, width]; mask: [bins, 1, width, width] boolean, True where a
    token may attend. index[r, t] is where token t of source row r is computed in the flattened
    [bins * width] layout (undefined beyond the row's length); tokens a row shares with another
    row point at the other row's copy.
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    mask: torch.Tensor
    index: torch.Tensor
    cost: int  # layout_cost of this layout


# A row shares its prefix with a longer row only when they have this many first tokens in common.
MIN_SHARED_PREFIX = 8


def layout_cost(rows: int, width: int, hidden_size: int) -> int:
    """Estimated cost of a forward over [rows, width] tokens: the linear layers grow with the
    tokens, attention with rows x width^2 (weighted as half as efficient as a matmul)."""
    return rows * width * (3 * hidden_size + width)


def _plan(lengths: list[int], lcp: list[list[int]] | None, width: int | None, hidden_size: int):
    """Units (a row and the rows sharing its prefix) and their bins, cheapest bin width."""
    n = len(lengths)
    order = sorted(range(n), key=lambda r: (-lengths[r], r))
    root_of, shared = list(range(n)), [0] * n
    units: dict[int, list[int]] = {}
    unit_len: dict[int, int] = {}
    cap = max(max(lengths), 2048)
    for r in order:
        best = -1
        if lcp is not None:
            cands = [u for u in units
                     if lcp[r][u] >= MIN_SHARED_PREFIX and unit_len[u] + lengths[r] - lcp[r][u] <= cap]
            best = max(cands, key=lambda u: (lcp[r][u], -u), default=-1)
        if best >= 0:
            root_of[r], shared[r] = best, lcp[r][best]
            units[best].append(r)
            unit_len[best] += lengths[r] - shared[r]
        else:
            units[r], unit_len[r] = [r], lengths[r]

    def first_fit(capacity: int) -> list[list[int]]:
        bins: list[list[int]] = []
        fill: list[int] = []
        for u in sorted(units, key=lambda u: (-unit_len[u], u)):
            for b in range(len(bins)):
                if fill[b] + unit_len[u] <= capacity:
                    bins[b].append(u)
                    fill[b] += unit_len[u]
                    break
            else:
                bins.append([u])
                fill.append(unit_len[u])
        return bins

    def cost(bins: list[list[int]]) -> int:
        return layout_cost(len(bins), max(sum(unit_len[u] for u in b) for b in bins), hidden_size)

    longest, total = max(unit_len.values()), sum(unit_len.values())
    if width is None:
        widths, w = [], longest
        while w < min(total, 4096):
            widths.append(w)
            w *= 2
        widths.append(max(longest, min(total, 4096)))
        bins = min((first_fit(w) for w in widths), key=cost)
    else:
        bins = first_fit(max(width, longest))
    return root_of, shared, units, unit_len, bins, cost(bins)


def pack_rows(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    width: int | None = None,
    hidden_size: int = 1024,
    share_prefix: bool = True,
) -> PackedRows:
    """Lay out right-padded rows so that fewer token positions are computed, with the same result.

    1. Shared prefixes (share_prefix): a row whose first tokens (at least MIN_SHARED_PREFIX) equal
       those of a longer row (the k mismatch answers and the forget example all start with the
       same prompt) is computed only from where it differs; its own tokens attend to the longer
       row's copy of the prefix, and their positions continue from it. Causal attention makes the
       prefix's hidden states the same in every row that has it: only the work changes.
    2. Packing: the rows, each with the rows sharing its prefix ("units"), go first-fit-decreasing
       into bins, each token attending only within its unit, causally. The bin width is `width`,
       or the one of least layout_cost (a few bins of long rows against many short ones).
    With share_prefix, the layout with and the one without sharing are both planned and the
    cheaper kept. The tail of a bin is padding that attends only to itself.
    """
    n = input_ids.shape[0]
    lengths = attention_mask.sum(1).tolist()
    device = input_ids.device
    lcp = None
    if share_prefix and n > 1:  # common prefix lengths of all pairs of rows
        valid = attention_mask.bool()
        same = (input_ids[:, None, :] == input_ids[None, :, :]) & valid[:, None, :] & valid[None, :, :]
        lcp = same.long().cumprod(-1).sum(-1).tolist()
    plans = [_plan(lengths, None, width, hidden_size)]
    if lcp is not None:
        plans.append(_plan(lengths, lcp, width, hidden_size))
    root_of, shared, units, unit_len, bins, cost = min(plans, key=lambda plan: plan[-1])
    width = max(sum(unit_len[u] for u in b) for b in bins)

    nb = len(bins)
    ids = torch.zeros(nb, width, dtype=input_ids.dtype, device=device)
    pos = torch.zeros(nb, width, dtype=torch.long, device=device)
    owner = torch.full((nb, width), -1, dtype=torch.long, device=device)
    root = torch.full((nb, width), -1, dtype=torch.long, device=device)
    limit = torch.zeros(nb, width, dtype=torch.long, device=device)
    index = torch.zeros_like(input_ids)
    for b, unit_ids in enumerate(bins):
        off = 0
        for u in unit_ids:
            for r in units[u]:
                s0, n_r = shared[r], lengths[r]
                k = n_r - s0
                sl = slice(off, off + k)
                ids[b, sl] = input_ids[r, s0:n_r]
                pos[b, sl] = torch.arange(s0, n_r, device=device)
                owner[b, sl] = r
                root[b, sl] = root_of[r]
                limit[b, sl] = s0
                index[r, s0:n_r] = b * width + off + torch.arange(k, device=device)
                if s0:
                    index[r, :s0] = index[root_of[r], :s0]
                off += k
        tail = width - off
        if tail:  # padding: its own segment, positions from 0
            pos[b, off:] = torch.arange(tail, device=device)
            owner[b, off:] = -1 - b
            root[b, off:] = -1 - b
    q_owner, k_owner = owner[:, :, None], owner[:, None, :]
    causal = pos[:, None, :] <= pos[:, :, None]
    cross = (k_owner == root[:, :, None]) & (pos[:, None, :] < limit[:, :, None])
    mask = causal & ((q_owner == k_owner) | cross)
    return PackedRows(ids, pos, mask.unsqueeze(1), index, cost)


def _hidden_size(model: Any) -> int:
    return int(getattr(getattr(_base(model), "config", None), "hidden_size", 1024))


def _logits_at(model: Any, inputs: dict[str, torch.Tensor], select: torch.Tensor,
               where: torch.Tensor | None, fast: bool) -> torch.Tensor:
    """Logits at the selected positions: select on [rows, T-1] for a plain batch, or the flat
    positions `where` of a packed layout."""
    # use_cache=False: a training forward has no use for a KV cache.
    if fast:
        base = _base(model)
        hidden = base.get_decoder()(**inputs, use_cache=False).last_hidden_state
        hidden = hidden[:, :-1][select] if where is None else hidden.reshape(-1, hidden.shape[-1])[where]
        return base.get_output_embeddings()(hidden)
    logits = model(**inputs, use_cache=False).logits
    return logits[:, :-1][select] if where is None else logits.reshape(-1, logits.shape[-1])[where]


def _packed_inputs(packed: PackedRows) -> dict[str, torch.Tensor]:
    return dict(input_ids=packed.input_ids, attention_mask=packed.mask, position_ids=packed.position_ids)


def response_logits(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor,
    fast: bool,
    pack: bool = False,
    hidden_layers: tuple[int, ...] = (),
) -> tuple:
    """Logits at positions that predict a label, their targets, and the row of each position.

    Position t predicts token t+1, so the selection is `labels[:, 1:] != IGNORE` applied to
    positions [:, :-1]. Rows come out in order, so each segment's positions are contiguous.
    fast=True runs the decoder and applies the output head to the selected positions only.
    pack=True lays the rows out with pack_rows first when its layout is cheaper than the padded
    batch; the input must be right-padded, as `collate` makes it.

    With `hidden_layers`, a fourth value: {layer: output of decoder layer `layer` (0-based) at the
    same positions, [positions, hidden]}, from the same forward (transformers' selective
    `output_hidden_states`, so the other layers' states are not kept). The last layer's output is
    taken after the model's final norm, as transformers reports it. Rows are not packed then.
    """
    select = labels[:, 1:] != IGNORE
    targets = labels[:, 1:][select]
    rows = torch.arange(labels.shape[0], device=labels.device).unsqueeze(1).expand_as(select)[select]
    if hidden_layers:
        # hidden_states[0] is the embedding output; hidden_states[l + 1] is the output of layer l.
        extra = {"output_hidden_states": [l + 1 for l in hidden_layers], "use_cache": False}
        if fast:
            base = _base(model)
            out = base.get_decoder()(input_ids=input_ids, attention_mask=attention_mask, **extra)
            logits = base.get_output_embeddings()(out.last_hidden_state[:, :-1][select])
        else:
            out = model(input_ids=input_ids, attention_mask=attention_mask, **extra)
            logits = out.logits[:, :-1][select]
        hidden = {l: out.hidden_states[l + 1][:, :-1][select] for l in hidden_layers}
        return logits, targets, rows, hidden
    if pack and labels.shape[0] > 1:
        hidden_size = _hidden_size(model)
        packed = pack_rows(input_ids, attention_mask, hidden_size=hidden_size)
        if packed.cost < layout_cost(*input_ids.shape, hidden_size):
            where = packed.index[:, :-1][select]
            return _logits_at(model, _packed_inputs(packed), select, where, fast), targets, rows
    inputs = dict(input_ids=input_ids, attention_mask=attention_mask)
    return _logits_at(model, inputs, select, None, fast), targets, rows


class ResponseLM(nn.Module):
    """A module wrapper whose forward returns response-position logits (see response_logits).

    Wrapping (rather than calling the decoder from outside) keeps DDP/FSDP hooks working when
    accelerate prepares this module.
    """

    def __init__(self, model: Any):
        super().__init__()
        self.model = model
        self.fast = True
        self.pack = False  # switched on by check_packing

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor,
        hidden_layers: tuple[int, ...] = (),
    ):
        return response_logits(
            self.model, input_ids, attention_mask, labels, self.fast, self.pack, hidden_layers=hidden_layers
        )

    @torch.no_grad()
    def check_fast_path(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> bool:
        """Use the fast path only if it reproduces the model's own logits on this input.

        Some architectures transform logits after the head (soft-capping, scaling); for those the
        full forward is used.
        """
        was_training = self.model.training
        self.model.eval()
        try:
            fast, _, _ = response_logits(self.model, input_ids, attention_mask, labels, True)
            full, _, _ = response_logits(self.model, input_ids, attention_mask, labels, False)
            ok = fast.shape == full.shape
            if ok:
                scale = full.float().abs().max().clamp(min=1e-6)
                tol = 1e-3 if full.dtype == torch.float32 else 3e-2
                ok = bool(((fast.float() - full.float()).abs().max() / scale) < tol)
        except (AttributeError, TypeError, NotImplementedError):
            ok = False
        finally:
            self.model.train(was_training)
        self.fast = ok
        return ok

    @torch.no_grad()
    def check_packing(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> bool:
        """Pack rows (pack_rows) only if that reproduces the unpacked logits on this batch.

        All rows go into one bin here (rows with a common prompt sharing it), so that a model which
        ignores the 4D mask or the per-row positions (some attention implementations, models that
        derive positions from the 2D mask) is caught. Needs two rows or more; a model that fails
        runs unpacked.
        """
        self.pack = False
        if input_ids.shape[0] < 2:
            return False
        was_training = self.model.training
        self.model.eval()
        try:
            attn = getattr(getattr(_base(self.model), "config", None), "_attn_implementation", None)
            if attn != "sdpa":  # eager wants an additive float mask, flash/flex other formats
                return False
            plain, _, _ = response_logits(self.model, input_ids, attention_mask, labels, self.fast)
            one_bin = pack_rows(input_ids, attention_mask, width=int(attention_mask.sum()))
            select = labels[:, 1:] != IGNORE
            where = one_bin.index[:, :-1][select]
            packed = _logits_at(self.model, _packed_inputs(one_bin), select, where, self.fast)
            ok = packed.shape == plain.shape
            if ok:
                scale = plain.float().abs().max().clamp(min=1e-6)
                tol = 1e-3 if plain.dtype == torch.float32 else 3e-2
                ok = bool(((packed.float() - plain.float()).abs().max() / scale) < tol)
        except (AttributeError, TypeError, ValueError, RuntimeError, NotImplementedError):
            ok = False
        finally:
            self.model.train(was_training)
        self.pack = ok
        return ok


ReferenceFn = Callable[..., tuple]


class StepContext:
    """Read-only view of one step for loss terms. Terms never run a forward pass themselves.

    hidden_layers: decoder layers whose outputs terms read (ctx.hidden); the policy (and the
    reference) are then called with `hidden_layers=` and return them as a fourth value.
    """

    def __init__(
        self,
        policy: Callable[..., tuple],
        batch: Batch,
        reference: ReferenceFn | None = None,
        reference_segments: tuple[str, ...] = (),
        hidden_layers: tuple[int, ...] = (),
    ):
        self.batch = batch
        self._hidden_layers = tuple(hidden_layers)
        if self._hidden_layers:
            out = policy(batch.input_ids, batch.attention_mask, batch.labels, hidden_layers=self._hidden_layers)
            self.logits, self.targets, self.rows, self._hidden = out
        else:
            self.logits, self.targets, self.rows = policy(batch.input_ids, batch.attention_mask, batch.labels)
            self._hidden = {}
        counts = (batch.labels[:, 1:] != IGNORE).sum(1)
        ends = counts.cumsum(0).tolist()
        starts = [0] + ends[:-1]
        self._counts = counts
        self._pos = {
            name: slice(starts[s.start], ends[s.stop - 1]) for name, s in batch.segments.items()
        }
        self._reference = reference
        self._reference_segments = tuple(s for s in reference_segments if s in batch.segments)
        self._cache: dict[tuple[str, str], torch.Tensor] = {}

    # ---- policy ----------------------------------------------------------------------------

    def has(self, segment: str) -> bool:
        return segment in self.batch.segments

    def _seg(self, segment: str) -> slice:
        if segment not in self._pos:
            raise KeyError(f"segment '{segment}' is not in this batch (have: {list(self._pos)})")
        return self._pos[segment]

    def log_softmax(self, segment: str) -> torch.Tensor:
        """Policy log-probabilities over the vocabulary at the segment's response positions, fp32."""
        key = ("lsm", segment)
        if key not in self._cache:
            self._cache[key] = F.log_softmax(self.logits[self._seg(segment)].float(), dim=-1)
        return self._cache[key]

    def token_logps(self, segment: str) -> torch.Tensor:
        """log p(y_t | x, y_<t) of each response token of the segment, fp32, shape [tokens]."""
        key = ("tok", segment)
        if key not in self._cache:
            pos = self._seg(segment)
            if ("lsm", segment) in self._cache:
                lp = self._cache[("lsm", segment)].gather(1, self.targets[pos].unsqueeze(1)).squeeze(1)
            else:
                lp = per_position(_token_logps, self.logits[pos], self.targets[pos])
            self._cache[key] = lp
        return self._cache[key]

    def seq_sum(self, values: torch.Tensor, segment: str) -> torch.Tensor:
        """Sum per-token values into one value per sequence of the segment: [sequences]."""
        rows = self.batch.segments[segment]
        idx = self.rows[self._seg(segment)] - rows.start
        out = torch.zeros(rows.stop - rows.start, dtype=values.dtype, device=values.device)
        return out.index_add(0, idx, values)

    def seq_mean(self, values: torch.Tensor, segment: str) -> torch.Tensor:
        """Mean of per-token values over each sequence's response tokens: [sequences]."""
        counts = self._counts[self.batch.segments[segment]].to(values.dtype).clamp(min=1)
        return self.seq_sum(values, segment) / counts

    def seq_nll(self, segment: str) -> torch.Tensor:
        """Per-sequence mean negative log-likelihood of the response: [sequences]."""
        return -self.seq_mean(self.token_logps(segment), segment)

    def seq_logp(self, segment: str) -> torch.Tensor:
        """Per-sequence summed log-likelihood of the response, log pi(y|x): [sequences]."""
        return self.seq_sum(self.token_logps(segment), segment)

    def hidden(self, segment: str, layer: int) -> torch.Tensor:
        """Output of decoder layer `layer` at the segment's response positions: [tokens, hidden].

        Only layers passed as `hidden_layers` to the context are available."""
        if layer not in self._hidden:
            raise RuntimeError(f"layer {layer} was not requested from the forward (have: {sorted(self._hidden)})")
        return self._hidden[layer][self._seg(segment)]

    # ---- reference -------------------------------------------------------------------------

    def _reference_pass(self) -> None:
        if self._reference is None:
            raise RuntimeError("this objective's terms did not declare that they need the reference")
        segs = self._reference_segments
        row_idx = torch.cat(
            [torch.arange(self.batch.segments[s].start, self.batch.segments[s].stop) for s in segs]
        ).to(self.batch.input_ids.device)
        mask = self.batch.attention_mask[row_idx]
        width = int(mask.sum(1).max())  # right padding: trim columns no row of these uses
        args = (self.batch.input_ids[row_idx, :width], mask[:, :width], self.batch.labels[row_idx, :width])
        hidden: dict[int, torch.Tensor] = {}
        with torch.no_grad():
            if self._hidden_layers:
                logits, _, _, hidden = self._reference(*args, hidden_layers=self._hidden_layers)
            else:
                logits, _, _ = self._reference(*args)
        start = 0
        for s in segs:
            n = self._seg(s).stop - self._seg(s).start
            self._cache[("ref_logits", s)] = logits[start : start + n]
            for layer, h in hidden.items():
                self._cache[("ref_hidden", f"{s}:{layer}")] = h[start : start + n]
            start += n

    def reference_logits(self, segment: str) -> torch.Tensor:
        """Reference logits at the segment's response positions (compute dtype, no gradient)."""
        key = ("ref_logits", segment)
        if key not in self._cache:
            if segment not in self._reference_segments:
                raise RuntimeError(f"no term declared that it needs the reference on '{segment}'")
            self._reference_pass()
        return self._cache[key]

    def reference_log_softmax(self, segment: str) -> torch.Tensor:
        """Reference log-probabilities over the vocabulary at the segment's response positions, fp32."""
        key = ("ref_lsm", segment)
        if key not in self._cache:
            self._cache[key] = F.log_softmax(self.reference_logits(segment).float(), dim=-1)
        return self._cache[key]

    def reference_token_logps(self, segment: str) -> torch.Tensor:
        """log p_ref(y_t | x, y_<t) of each response token of the segment, fp32."""
        key = ("ref_tok", segment)
        if key not in self._cache:
            pos = self._seg(segment)
            self._cache[key] = per_position(_token_logps, self.reference_logits(segment), self.targets[pos])
        return self._cache[key]

    def forward_kl(self, segment: str) -> torch.Tensor:
        """KL(p_ref || p_policy) over the vocabulary at each response position of the segment, fp32,
        shape [tokens]; computed in chunks of positions (per_position)."""
        key = ("kl", segment)
        if key not in self._cache:
            pos = self._seg(segment)
            self._cache[key] = per_position(_forward_kl, self.logits[pos], self.reference_logits(segment))
        return self._cache[key]

    def reference_seq_logp(self, segment: str) -> torch.Tensor:
        """log pi_ref(y|x) per sequence of the segment."""
        return self.seq_sum(self.reference_token_logps(segment), segment)

    def reference_hidden(self, segment: str, layer: int) -> torch.Tensor:
        """The reference model's output of decoder layer `layer` at the segment's response positions."""
        key = ("ref_hidden", f"{segment}:{layer}")
        if key not in self._cache:
            if segment not in self._reference_segments:
                raise RuntimeError(f"no term declared that it needs the reference on '{segment}'")
            if layer not in self._hidden_layers:
                raise RuntimeError(f"layer {layer} was not requested from the forward")
            self._reference_pass()
        return self._cache[key]
