"""Representation Misdirection for Unlearning (Li et al. 2024, WMDP)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Union

import torch

from unlearn.config import check, setting
from unlearn.errors import UnlearnError
from unlearn.models import base_model
from unlearn.objective.context import StepContext
from unlearn.objective.registry import Binding, register_term


def decoder_layers(model: Any) -> Any:
    """The model's list of decoder layers (Llama `model.layers`, OPT `decoder.layers`, ...)."""
    try:
        layers = base_model(model).get_decoder().layers
    except (AttributeError, NotImplementedError, ValueError):
        layers = None
    if layers is None or not hasattr(layers, "__len__") or len(layers) == 0:
        raise UnlearnError("objective.rmu: cannot find this model's decoder layers (get_decoder().layers)")
    return layers


def resolve_layer(layer: Any, n_layers: int) -> int:
    """The configured layer as an index in [0, n_layers); null picks about 7/32 of the depth (WMDP
    steers layer 7 of Zephyr-7B's 32); negative values count from the end."""
    if layer is None:
        return (7 * n_layers) // 32
    if isinstance(layer, bool) or not isinstance(layer, int) or not -n_layers <= layer < n_layers:
        raise UnlearnError(
            f"objective.rmu.layer: expected an integer in [0, {n_layers}) (this model has {n_layers} "
            f"decoder layers), a negative index, or null; got {layer!r}"
        )
    return layer % n_layers


def bind_rmu(model: Any, *, layer: Any, train_layers: int, modules: str, **_: Any) -> Binding:
    """Resolve the steered layer and the parameters RMU trains: those of layers
    layer - train_layers + 1 .. layer whose names (within the layer) match `modules`."""
    layers = decoder_layers(model)
    at = resolve_layer(layer, len(layers))
    try:
        pattern = re.compile(modules)
    except re.error as e:
        raise UnlearnError(f"objective.rmu.modules: not a regular expression ({e})") from None
    chosen = {
        id(p)
        for i in range(max(0, at - train_layers + 1), at + 1)
        for name, p in layers[i].named_parameters()
        if pattern.search(name) and p.requires_grad
    }
    names = tuple(n for n, p in model.named_parameters() if id(p) in chosen)
    if not names:
        sample = ", ".join(n for n, _ in list(layers[at].named_parameters())[:8])
        raise UnlearnError(
            f"objective.rmu: no trainable parameter of layers {max(0, at - train_layers + 1)}..{at} "
            f"matches modules '{modules}' (with LoRA, the adapted modules must include them); "
            f"layer {at} has: {sample}"
        )
    return Binding(params={"layer": at}, layers=(at,), trainable=names)


_DIRECTIONS: dict[tuple[int, int], torch.Tensor] = {}


def random_direction(size: int, seed: int) -> torch.Tensor:
    """The fixed random unit vector u: entries uniform in [0, 1), then normalised (WMDP)."""
    key = (size, seed)
    if key not in _DIRECTIONS:
        g = torch.Generator().manual_seed(seed)
        u = torch.rand(size, generator=g, dtype=torch.float32)
        _DIRECTIONS[key] = u / u.norm()
    return _DIRECTIONS[key]


@dataclass
class RmuParams:
    """Parameters of the rmu term."""

    steering: float = setting(
        20.0, help="Steering coefficient c: forget activations are pushed toward c x a fixed random unit vector."
    )
    alpha: float = setting(100.0, help="Weight of the retain part (activations kept at the original model's).")
    layer: Union[int, None] = setting(
        None,
        help="Decoder layer whose outputs are steered; negative counts from the end. null: about 7/32 of "
        "the depth (WMDP steers layer 7 of 32).",
    )
    train_layers: int = setting(3, help="Layers trained: layer - train_layers + 1 .. layer.")
    modules: str = setting(
        "mlp|fc1|fc2",
        help="Regular expression on parameter names within those layers: what is trained (default: the MLPs).",
    )
    seed: int = setting(0, help="Seed of the random direction u.")

    def __post_init__(self) -> None:
        check(self.alpha >= 0, "alpha", f"must be >= 0, got {self.alpha}")
        check(self.train_layers >= 1, "train_layers", f"must be >= 1, got {self.train_layers}")


@register_term("rmu", segments=("forget", "retain"), reference=("retain",), bind=bind_rmu, params=RmuParams)
def rmu(
    ctx: StepContext,
    steering: float,
    alpha: float,
    layer: Any,
    train_layers: int,
    modules: str,
    seed: int,
) -> torch.Tensor:
    """Representation Misdirection (RMU): scramble a layer's activations on forget data (Li et al. 2024).

    L = (1/B_f) sum_i mean_t || h(x_i)_t - c u ||^2  +  alpha (1/B_r) sum_j mean_t || h(x_j)_t - h_ref(x_j)_t ||^2

    h is the output of decoder layer `layer` at the response positions of forget (i) and retain (j)
    rows, h_ref the frozen original model's, u a fixed random unit vector (entries uniform in [0, 1),
    normalised; `seed`) and c = `steering`. As in the authors' code the squared distance is averaged
    over the hidden dimensions (torch MSE), the scale their c and alpha are tuned for (their
    defaults: c = 20, alpha = 100; Zephyr-7B: c = 6.5, alpha = 1200). Only the parameters of
    layers layer-train_layers+1 .. layer matching `modules` (a regular expression; by default the
    MLPs) are trained. `layer` null picks about 7/32 of the depth (WMDP: layer 7 of 32).
    Li et al., "The WMDP Benchmark: Measuring and Reducing Malicious Use With Unlearning", ICML 2024,
    section 5 (RMU).
    """
    h_forget = ctx.hidden("forget", layer).float()
    u = random_direction(h_forget.shape[-1], seed).to(h_forget.device)
    forget = ctx.seq_mean((h_forget - steering * u).pow(2).mean(-1), "forget").mean()
    h_retain = ctx.hidden("retain", layer).float()
    h_ref = ctx.reference_hidden("retain", layer).float()
    retain = ctx.seq_mean((h_retain - h_ref).pow(2).mean(-1), "retain").mean()
    return forget + alpha * retain
