"""The step context: everything a loss term may read, each thing computed at most once.

One policy forward (unlearn.models.forward.response_logits, through a ResponseLM) runs over all
segments (forget, mismatch, retain) concatenated; the context slices its response-position logits
per segment. The reference model runs once, only on the rows of the segments whose terms need it,
under torch.no_grad(). Vocabulary-sized fp32 work runs in chunks of positions (per_position).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from unlearn.data.batch import Batch
from unlearn.data.encode import IGNORE
from unlearn.models.forward import forward_kl_of, per_position, token_logps_of

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
        self._parts = split_positions(self.logits, self._pos)
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

    def span(self, segment: str) -> slice:
        """The segment's slice of the per-position tensors self.targets and self.rows (a term that
        works on the raw logits takes segment_logits, in chunks with unlearn.models.forward.per_position)."""
        return self._seg(segment)

    def segment_logits(self, segment: str) -> torch.Tensor:
        """The policy's logits at the segment's response positions: [tokens, vocab], a view."""
        self._seg(segment)
        return self._parts[segment]

    def log_softmax(self, segment: str) -> torch.Tensor:
        """Policy log-probabilities over the vocabulary at the segment's response positions, fp32."""
        key = ("lsm", segment)
        if key not in self._cache:
            self._cache[key] = F.log_softmax(self.segment_logits(segment).float(), dim=-1)
        return self._cache[key]

    def token_logps(self, segment: str) -> torch.Tensor:
        """log p(y_t | x, y_<t) of each response token of the segment, fp32, shape [tokens]."""
        key = ("tok", segment)
        if key not in self._cache:
            pos = self._seg(segment)
            if ("lsm", segment) in self._cache:
                lp = self._cache[("lsm", segment)].gather(1, self.targets[pos].unsqueeze(1)).squeeze(1)
            else:
                lp = per_position(token_logps_of, self.segment_logits(segment), self.targets[pos])
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
            self._cache[key] = per_position(token_logps_of, self.reference_logits(segment), self.targets[pos])
        return self._cache[key]

    def forward_kl(self, segment: str) -> torch.Tensor:
        """KL(p_ref || p_policy) over the vocabulary at each response position of the segment, fp32,
        shape [tokens]; computed in chunks of positions (per_position)."""
        key = ("kl", segment)
        if key not in self._cache:
            pos = self._seg(segment)
            self._cache[key] = per_position(forward_kl_of, self.segment_logits(segment), self.reference_logits(segment))
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


def split_positions(logits: torch.Tensor, spans: dict[str, slice]) -> dict[str, torch.Tensor]:
    """Each span's rows of `logits` as views from one torch.split, not one slice each.

    The backward of a slice writes its gradient into a zero tensor of the whole [positions, vocab]
    shape, and autograd adds those up: with three segments, three fills and two adds of the
    vocabulary-sized logits per step. One split's backward concatenates its parts' gradients into
    one tensor (zeros only for parts no term used)."""
    cuts = sorted({0, logits.shape[0], *(b for s in spans.values() for b in (s.start, s.stop))})
    pieces = dict(zip(zip(cuts, cuts[1:]), logits.split([b - a for a, b in zip(cuts, cuts[1:])])))
    out = {}
    for name, s in spans.items():
        if (s.start, s.stop) in pieces:
            out[name] = pieces[(s.start, s.stop)]
        else:  # an empty segment or one that overlaps another's cut: a plain slice
            out[name] = logits[s]
    return out
