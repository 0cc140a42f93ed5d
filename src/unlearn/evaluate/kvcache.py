"""A KV cache whose layers write each new token in place, into room reserved after the prefill.

transformers' `DynamicLayer` concatenates a layer's keys and values with the new token's at every
decoding step: a copy of the whole cache, per layer, per step. In the audit's jailbreak decode (the
demo model, 128 rows of about 70 prompt tokens) those copies were 2.9 of 7.0 s of the decode's CPU
time in a profile, as much as the matrix multiplies. `ReservedLayer` keeps the same tensors in
buffers with `room` more positions and hands attention the filled part, a view: a step writes one
position. SDPA reads the view's strides as they are (checked on the CPU: 1.15 ms against 1.11 ms
on a contiguous copy; not measured on a GPU), and transformers 5.24 decodes grouped-query attention
by packing the query heads (`pack_gqa`), so no copy is made of the keys either. What attention
sees, and so every output, is the same.

    reserve(cache, room)   turn a prefilled DynamicCache's layers into ReservedLayers, in place;
                           False (nothing changed) unless every layer is a plain DynamicLayer
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import DynamicLayer


class ReservedLayer(DynamicLayer):
    """A DynamicLayer whose `keys` and `values` are views of the filled part of reserved buffers
    ([rows, heads, filled + room, head_dim]). Writing past the room grows the buffers (a copy, as
    DynamicLayer makes every step)."""

    def take(self, room: int) -> None:
        """Move this layer's keys and values into buffers with `room` positions to spare."""
        self._kbuf, self._vbuf = _with_room(self.keys, room), _with_room(self.values, room)
        self._filled = self.keys.shape[-2]
        self._expose()

    def _expose(self) -> None:
        self.keys = self._kbuf[:, :, : self._filled]
        self.values = self._vbuf[:, :, : self._filled]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> tuple:
        n, m = self._filled, key_states.shape[-2]
        if n + m > self._kbuf.shape[-2]:
            self._kbuf = _with_room(self._kbuf[:, :, :n], max(m, n))
            self._vbuf = _with_room(self._vbuf[:, :, :n], max(m, n))
        self._kbuf[:, :, n : n + m] = key_states
        self._vbuf[:, :, n : n + m] = value_states
        self._filled = n + m
        self._expose()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self._filled

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:  # DynamicLayer's rule: a count of tokens to remove is negative
            raise ValueError(f"crop takes a negative number of tokens to remove, got {tokens_to_remove}")
        self._filled = max(0, self._filled + tokens_to_remove)
        self._expose()

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._kbuf = self._kbuf.repeat_interleave(repeats, dim=0)
        self._vbuf = self._vbuf.repeat_interleave(repeats, dim=0)
        self._expose()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._kbuf, self._vbuf = self._kbuf[indices], self._vbuf[indices]
        self._expose()

    def reset(self) -> None:
        self.__class__ = DynamicLayer  # back to a plain layer: its reset drops the tensors
        for name in ("_kbuf", "_vbuf", "_filled"):
            self.__dict__.pop(name, None)
        DynamicLayer.reset(self)


def _with_room(t: torch.Tensor, room: int) -> torch.Tensor:
    out = t.new_empty(*t.shape[:-2], t.shape[-2] + room, t.shape[-1])
    out[..., : t.shape[-2], :] = t
    return out


def reserve(cache: Any, room: int) -> bool:
    """Give every layer of a prefilled cache `room` positions to write into (ReservedLayer). Only a
    cache whose layers are all plain, initialized DynamicLayers is changed (sliding-window,
    quantized, offloaded and static layers keep their own update); returns whether it was."""
    layers = getattr(cache, "layers", None)
    if not layers or any(type(x) is not DynamicLayer or not x.is_initialized or x.keys is None or
                         x.keys.dim() != 4 for x in layers):
        return False
    for layer in layers:
        layer.__class__ = ReservedLayer
        layer.take(room)
    return True
