"""The frozen original model that KL and NPO-style terms compare against."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch

from unlearn.models.load import is_peft


class Reference:
    """The frozen original model that KL and NPO-style terms compare against.

    With LoRA it IS the policy with its adapters disabled: no second copy of the weights. Without
    LoRA it is one frozen copy in the compute dtype (bfloat16 when training under bf16 autocast,
    never float32 by accident).
    """

    def __init__(self, policy: Any, copy: Any | None = None):
        self.policy = policy
        self.copy = copy

    @classmethod
    def build(cls, policy: Any, compute_dtype: torch.dtype | None = None) -> "Reference":
        if is_peft(policy):
            return cls(policy)
        import copy as _copy

        ref = _copy.deepcopy(policy)
        if compute_dtype is not None and compute_dtype != next(ref.parameters()).dtype:
            ref = ref.to(compute_dtype)
        ref.eval()
        ref.requires_grad_(False)
        return cls(policy, ref)

    @contextlib.contextmanager
    def model(self) -> Iterator[Any]:
        """The reference as a module, for use under torch.no_grad()."""
        if self.copy is not None:
            yield self.copy
            return
        was_training = self.policy.training
        self.policy.eval()  # no LoRA dropout in the reference pass
        try:
            with self.policy.disable_adapter():
                yield self.policy
        finally:
            self.policy.train(was_training)
