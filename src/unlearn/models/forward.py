"""The training forward: response-position logits of a causal LM, computed as cheaply as the model allows.

One policy forward runs over all of a step's rows. The decoder runs on every position, but the LM
head (a vocabulary-sized matmul) runs only at the positions that predict a response token
(`response_logits`, `fast=True`), when that reproduces the model's own logits (`ResponseLM.
check_fast_path`). With `pack=True` the rows are first laid out with `pack_rows` (unlearn.models.
pack) when that layout is cheaper than the padded batch.

Vocabulary-sized fp32 work (log-softmax, cross-entropy, KL) runs over chunks of positions, each
recomputed in the backward pass rather than kept (see `per_position`): past the first chunk, its
memory no longer grows with positions x vocabulary. Only the logits themselves (in the compute
dtype) and their gradient are full-size.

Used by training (unlearn.objective.context.StepContext, unlearn.train), evaluation
(unlearn.evaluate.nll) and the distributed reference (unlearn.distributed).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from unlearn.data.encode import IGNORE
from unlearn.models.attention import PACKED_ATTENTION, UNITS_KWARG, use_packed_attention
from unlearn.models.pack import PackedRows, layout_cost, pack_rows

# Elements of one chunk of vocabulary-sized fp32 work: 2**25 x 4 bytes = 128 MiB, about 680
# positions at a 49k vocabulary, 1000 at 32k.
CHUNK_ELEMENTS = 2**25


def base_model(model: Any) -> Any:
    """The transformers model inside a peft wrapper (the model itself when there is none)."""
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
    # One split, not a slice per chunk: a slice's backward fills a zero tensor of the whole shape.
    for part in zip(*(t.split(step) for t in tensors)):
        out.append(checkpoint(fn, *part, use_reentrant=False) if grad else fn(*part))
    return torch.cat(out)


def token_logps_of(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) at each position, fp32: [positions]."""
    return -F.cross_entropy(logits.float(), targets, reduction="none")


def forward_kl_of(logits: torch.Tensor, reference_logits: torch.Tensor) -> torch.Tensor:
    """KL(p_ref || p) over the vocabulary at each position, fp32: [positions]."""
    logq = F.log_softmax(logits.float(), dim=-1)
    logp = F.log_softmax(reference_logits.float(), dim=-1)
    return F.kl_div(logq, logp, reduction="none", log_target=True).sum(-1)


def model_hidden_size(model: Any) -> int:
    """The model's hidden size (1024 when its config does not say), for layout_cost."""
    return int(getattr(getattr(base_model(model), "config", None), "hidden_size", 1024))


def logits_at(model: Any, inputs: dict[str, torch.Tensor], select: torch.Tensor,
               where: torch.Tensor | None, fast: bool) -> torch.Tensor:
    """Logits at the selected positions: select on [rows, T-1] for a plain batch, or the flat
    positions `where` of a packed layout."""
    # use_cache=False: a training forward has no use for a KV cache.
    if fast:
        base = base_model(model)
        hidden = base.get_decoder()(**inputs, use_cache=False).last_hidden_state
        hidden = hidden[:, :-1][select] if where is None else hidden.reshape(-1, hidden.shape[-1])[where]
        return base.get_output_embeddings()(hidden)
    logits = model(**inputs, use_cache=False).logits
    return logits[:, :-1][select] if where is None else logits.reshape(-1, logits.shape[-1])[where]


def packed_inputs(model: Any, packed: PackedRows) -> dict[str, Any]:
    """The model inputs of a packed layout: its 4D mask and per-row positions, and its units where
    the model's attention can run unit by unit (unlearn.models.attention, switched on here)."""
    inputs: dict[str, Any] = dict(input_ids=packed.input_ids, attention_mask=packed.mask,
                                  position_ids=packed.position_ids)
    if use_packed_attention(base_model(model)):
        inputs[UNITS_KWARG] = packed.units
    return inputs


def packed_layout(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> PackedRows | None:
    """The packed layout response_logits(pack=True) runs for this right-padded batch, or None when
    the padded batch is as cheap (or has a single row)."""
    if input_ids.shape[0] < 2:
        return None
    hidden_size = model_hidden_size(model)
    packed = pack_rows(input_ids, attention_mask, hidden_size=hidden_size)
    return packed if packed.cost < layout_cost(*input_ids.shape, hidden_size) else None


def computed_tokens(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, pack: bool) -> int:
    """Token positions the forward of response_logits computes for this batch, padding included."""
    packed = packed_layout(model, input_ids, attention_mask) if pack else None
    return int((packed.input_ids if packed is not None else input_ids).numel())


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
            base = base_model(model)
            out = base.get_decoder()(input_ids=input_ids, attention_mask=attention_mask, **extra)
            logits = base.get_output_embeddings()(out.last_hidden_state[:, :-1][select])
        else:
            out = model(input_ids=input_ids, attention_mask=attention_mask, **extra)
            logits = out.logits[:, :-1][select]
        hidden = {l: out.hidden_states[l + 1][:, :-1][select] for l in hidden_layers}
        return logits, targets, rows, hidden
    packed = packed_layout(model, input_ids, attention_mask) if pack else None
    if packed is not None:
        where = packed.index[:, :-1][select]
        return logits_at(model, packed_inputs(model, packed), select, where, fast), targets, rows
    inputs = dict(input_ids=input_ids, attention_mask=attention_mask)
    return logits_at(model, inputs, select, None, fast), targets, rows


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

        Packed logits agree when they differ by at most `tol` of the largest logit, or by no more than
        twice what the layout alone changes: each row run on its own, unpadded, against the padded
        batch. In bf16, rounding through a deep random-init model differs by more than `tol` between
        any two layouts (a Llama-2-7B-shaped model ran unpacked on the H200 check); a layout that
        breaks the rows' separation differs by 15-100 times that floor (tests/models/test_pack.py).
        """
        self.pack = False
        if input_ids.shape[0] < 2:
            return False
        was_training = self.model.training
        self.model.eval()
        try:
            attn = getattr(getattr(base_model(self.model), "config", None), "_attn_implementation", None)
            if attn not in ("sdpa", PACKED_ATTENTION):  # eager wants an additive float mask, flash/flex others
                return False
            plain, _, _ = response_logits(self.model, input_ids, attention_mask, labels, self.fast)
            one_bin = pack_rows(input_ids, attention_mask, width=int(attention_mask.sum()))
            select = labels[:, 1:] != IGNORE
            where = one_bin.index[:, :-1][select]
            packed = logits_at(self.model, packed_inputs(self.model, one_bin), select, where, self.fast)
            ok = packed.shape == plain.shape
            if ok:
                scale = plain.float().abs().max().clamp(min=1e-6)
                tol = 1e-3 if plain.dtype == torch.float32 else 3e-2
                err = (packed.float() - plain.float()).abs().max()
                ok = bool(err / scale < tol) or bool(
                    err <= 2 * self._layout_noise(input_ids, attention_mask, labels, plain))
        except (AttributeError, TypeError, ValueError, RuntimeError, NotImplementedError):
            ok = False
        finally:
            self.model.train(was_training)
        self.pack = ok
        return ok

    def _layout_noise(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                      batched: torch.Tensor) -> torch.Tensor:
        """The largest change in the logits that the layout alone makes: each row on its own,
        unpadded (right-padded input), against `batched`, the padded batch's logits."""
        alone = []
        for i in range(input_ids.shape[0]):
            n = int(attention_mask[i].sum())
            row, _, _ = response_logits(self.model, input_ids[i:i + 1, :n], attention_mask[i:i + 1, :n],
                                        labels[i:i + 1, :n], self.fast)
            alone.append(row)
        return (torch.cat(alone).float() - batched.float()).abs().max()
