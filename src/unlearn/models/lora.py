"""LoRA's update added inside the matmul that computes it.

peft's LoRA linear layer computes `result + lora_B(lora_A(dropout(x))) * scaling`: the product is
scaled and added in two passes over a [tokens, out_features] tensor, and the backward scales its
gradient in a third. Here the base layer's output takes the product in place, scaled by the GEMM
itself (`addmm_(h, B^T, alpha=scaling)`): the same sum, with no pass of its own; the backward
scales only the [tokens, r] gradient. Measured with `python benchmarks/step_switches.py` (switched
off in the same process): docs/performance.md.

Only the plain case takes this path: one active adapter, not merged, not disabled, no variant
(DoRA), no bias on lora_B, a plain nn.Linear base, one dtype throughout and no autocast. Anything
else is peft's own forward, unchanged.
"""

from __future__ import annotations

from types import MethodType
from typing import Any

import torch
from torch import nn


def _fused_forward(self: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    adapters = self.active_adapters
    name = adapters[0] if len(adapters) == 1 else None
    base = self.base_layer
    plain = (
        not args and not kwargs and name is not None and not self.disable_adapters and not self.merged
        and name in self.lora_A and name not in self.lora_variant and type(base) is nn.Linear
        and self.lora_B[name].bias is None
        and x.dtype == base.weight.dtype == self.lora_A[name].weight.dtype == self.lora_B[name].weight.dtype
        and not torch.is_autocast_enabled(x.device.type)
    )
    if not plain:
        return type(self).forward(self, x, *args, **kwargs)
    flat = x.reshape(-1, x.shape[-1])
    result = base(flat)
    h = self.lora_A[name](self.lora_dropout[name](flat))
    # result += scaling * h @ B^T, in the GEMM's own accumulate (result is not saved for backward)
    result.addmm_(h, self.lora_B[name].weight.t(), alpha=self.scaling[name])
    return result.view(*x.shape[:-1], result.shape[-1])


def lora_layers(model: Any) -> list[Any]:
    """The peft LoRA linear layers of `model`."""
    from peft.tuners.lora.layer import Linear as LoraLinear

    return [m for m in model.modules() if type(m) is LoraLinear]


def fuse_lora_scaling(model: Any) -> None:
    """Give each peft LoRA linear layer of `model` the fused forward."""
    for module in lora_layers(model):
        module.forward = MethodType(_fused_forward, module)
