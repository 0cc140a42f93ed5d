"""The step context: everything a loss term may read, each thing computed at most once.

One policy forward runs over all segments (forget, mismatch, retain) concatenated. The decoder runs
on every position, but the LM head (a vocabulary-sized matmul) and the log-softmax run only at the
positions that predict a response token. The reference model runs once, only on the rows of the
segments whose terms need it, under torch.no_grad().
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from unlearn.data.batch import Batch
from unlearn.data.encode import IGNORE


def _base(model: Any) -> Any:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def response_logits(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor,
    fast: bool,
    hidden_layers: tuple[int, ...] = (),
) -> tuple:
    """Logits at positions that predict a label, their targets, and the row of each position.

    Position t predicts token t+1, so the selection is `labels[:, 1:] != IGNORE` applied to
    positions [:, :-1]. Rows come out in order, so each segment's positions are contiguous.
    fast=True runs the decoder and applies the output head to the selected positions only.

    With `hidden_layers`, a fourth value: {layer: output of decoder layer `layer` (0-based) at the
    same positions, [positions, hidden]}, from the same forward (transformers' selective
    `output_hidden_states`, so the other layers' states are not kept). The last layer's output is
    taken after the model's final norm, as transformers reports it.
    """
    select = labels[:, 1:] != IGNORE
    targets = labels[:, 1:][select]
    rows = torch.arange(labels.shape[0], device=labels.device).unsqueeze(1).expand_as(select)[select]
    extra: dict[str, Any] = {}
    if hidden_layers:
        # hidden_states[0] is the embedding output; hidden_states[l + 1] is the output of layer l.
        extra["output_hidden_states"] = [l + 1 for l in hidden_layers]
    if fast:
        base = _base(model)
        out = base.get_decoder()(input_ids=input_ids, attention_mask=attention_mask, **extra)
        logits = base.get_output_embeddings()(out.last_hidden_state[:, :-1][select])
    else:
        out = model(input_ids=input_ids, attention_mask=attention_mask, **extra)
        logits = out.logits[:, :-1][select]
    if not hidden_layers:
        return logits, targets, rows
    hidden = {l: out.hidden_states[l + 1][:, :-1][select] for l in hidden_layers}
    return logits, targets, rows, hidden


class ResponseLM(nn.Module):
    """A module wrapper whose forward returns response-position logits (see response_logits).

    Wrapping (rather than calling the decoder from outside) keeps DDP/FSDP hooks working when
    accelerate prepares this module.
    """

    def __init__(self, model: Any):
        super().__init__()
        self.model = model
        self.fast = True

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor,
        hidden_layers: tuple[int, ...] = (),
    ):
        return response_logits(self.model, input_ids, attention_mask, labels, self.fast, hidden_layers)

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
                lp = -F.cross_entropy(self.logits[pos].float(), self.targets[pos], reduction="none")
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
        lsm = F.log_softmax(logits.float(), dim=-1)
        start = 0
        for s in segs:
            n = self._seg(s).stop - self._seg(s).start
            self._cache[("ref_lsm", s)] = lsm[start : start + n]
            for layer, h in hidden.items():
                self._cache[("ref_hidden", f"{s}:{layer}")] = h[start : start + n]
            start += n

    def reference_log_softmax(self, segment: str) -> torch.Tensor:
        """Reference log-probabilities over the vocabulary at the segment's response positions."""
        key = ("ref_lsm", segment)
        if key not in self._cache:
            if segment not in self._reference_segments:
                raise RuntimeError(f"no term declared that it needs the reference on '{segment}'")
            self._reference_pass()
        return self._cache[key]

    def reference_token_logps(self, segment: str) -> torch.Tensor:
        """log p_ref(y_t | x, y_<t) of each response token of the segment, fp32."""
        key = ("ref_tok", segment)
        if key not in self._cache:
            pos = self._seg(segment)
            lsm = self.reference_log_softmax(segment)
            self._cache[key] = lsm.gather(1, self.targets[pos].unsqueeze(1)).squeeze(1)
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
