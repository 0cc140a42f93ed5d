"""Weight quantisation as an attack on unlearning: does a 4-bit copy of the model say it again?

Zhang et al., "Catastrophic Failure of LLM Unlearning via Quantization" (ICLR 2025) show that
quantising an unlearned model to 4 bits restores much of the forgotten knowledge. The reason is
arithmetic: unlearning with a small learning rate and a utility constraint moves each weight by far
less than one quantisation step, so rounding the unlearned weights lands on the same grid points
as rounding the original ones. What both models share after rounding is the original model.

Two ways in:
- `quantize_model`: simulated ("fake") round-to-nearest quantisation in place, on any device and
  dtype: every weight is replaced by its de-quantised value. Same grid as a real RTN kernel, no
  special kernels needed, so it runs on the CPU too.
- `load_bitsandbytes`: the real thing, 4-bit NF4 or 8-bit LLM.int8 through transformers'
  BitsAndBytesConfig (CUDA GPU and the bitsandbytes package needed).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unlearn.errors import UnlearnError
from unlearn.models import ensure_pad_token, is_peft


def rtn_quantize(w: torch.Tensor, bits: int, group_size: int = 128) -> torch.Tensor:
    """Round-to-nearest fake quantisation; returns the de-quantised tensor (same shape and dtype).

    Per-group asymmetric min-max along the input dimension (the last one), as GPTQ/AWQ's RTN
    baseline: each row is cut into groups of `group_size` consecutive columns (the last group may be
    shorter), and for each group, with qmax = 2**bits - 1,
        scale = (max - min) / qmax,   zero = round(-min / scale),
        q = clamp(round(w / scale) + zero, 0, qmax),   w' = (q - zero) * scale.
    The group's min and max are represented exactly (up to float rounding). A constant group
    (scale 0) is returned unchanged. Computed in float32 whatever the input dtype.
    """
    if not isinstance(bits, int) or not 1 <= bits <= 16:
        raise UnlearnError(f"quantisation bits must be an integer in 1..16, got {bits!r}")
    if not isinstance(group_size, int) or group_size < 1:
        raise UnlearnError(f"quantisation group_size must be an integer >= 1, got {group_size!r}")
    if w.ndim == 0 or w.shape[-1] == 0 or not w.is_floating_point():
        raise UnlearnError(f"cannot quantise a tensor of shape {tuple(w.shape)} and dtype {w.dtype}")
    x = w.detach().float().reshape(-1, w.shape[-1])
    cols = x.shape[1]
    full = cols // group_size * group_size
    parts = []
    if full:
        parts.append(_fake_quant(x[:, :full].reshape(x.shape[0], -1, group_size), bits).reshape(x.shape[0], full))
    if full < cols:
        parts.append(_fake_quant(x[:, full:].unsqueeze(1), bits).squeeze(1))
    return torch.cat(parts, dim=1).reshape(w.shape).to(w.dtype)


def _fake_quant(g: torch.Tensor, bits: int) -> torch.Tensor:
    """RTN over the last dimension of g (float32): one scale and zero point per group."""
    qmax = 2**bits - 1
    lo = g.amin(dim=-1, keepdim=True)
    hi = g.amax(dim=-1, keepdim=True)
    scale = (hi - lo) / qmax
    constant = scale == 0
    safe = torch.where(constant, torch.ones_like(scale), scale)  # no 0/0 for a constant group
    zero = torch.round(-lo / safe)
    q = torch.clamp(torch.round(g / safe) + zero, 0, qmax)
    return torch.where(constant, g, (q - zero) * safe)


def block_linears(model: Any) -> list[tuple[str, nn.Linear]]:
    """The nn.Linear layers inside the model's transformer blocks, with their names.

    A block is an item of an nn.ModuleList whose items hold Linear layers (transformers keeps the
    decoder layers in one: model.model.layers, model.model.decoder.layers, ...). The LM head and the
    embeddings stay in full precision, as GPTQ, AWQ and bitsandbytes leave them; a Linear sharing its
    weight with an embedding (tied weights) is left out too.
    """
    keep_out: set[int] = set()
    for get in ("get_input_embeddings", "get_output_embeddings"):
        module = getattr(model, get, lambda: None)()
        if module is not None and getattr(module, "weight", None) is not None:
            keep_out.add(id(module.weight))
    found: dict[int, tuple[str, nn.Linear]] = {}
    for list_name, modules in model.named_modules():
        if not isinstance(modules, nn.ModuleList):
            continue
        for i, block in enumerate(modules):
            for name, module in block.named_modules():
                if isinstance(module, nn.Linear) and id(module.weight) not in keep_out:
                    found.setdefault(id(module), (f"{list_name}.{i}.{name}", module))
    return list(found.values())


def quantizable_layers(model: Any) -> list[tuple[str, nn.Linear]]:
    """block_linears(model), or UnlearnError (one line) when the simulated quantiser cannot round
    this model: a peft model, no Linear inside transformer blocks, weights that are integers already.
    The audit asks this of each model before any attack runs, so a model that cannot be quantised
    stops the audit before anything is generated or written."""
    if is_peft(model):
        raise UnlearnError(
            "quantize: this model carries a LoRA adapter (peft); merge it into the weights first "
            "(model.merge_and_unload())"
        )
    layers = block_linears(model)
    if not layers:
        raise UnlearnError(
            f"quantize: {type(model).__name__} has no torch.nn.Linear layer inside transformer blocks "
            "(an nn.ModuleList of layers); this model cannot be quantised by the simulated quantiser "
            "(leave 'quantize' out of audit.attacks)"
        )
    for name, module in layers:
        if not module.weight.is_floating_point():
            raise UnlearnError(
                f"quantize: {name} holds {module.weight.dtype} weights: the model is quantised "
                "already; load it in float32, bfloat16 or float16"
            )
    return layers


@torch.no_grad()
def quantize_model(model: Any, bits: int, group_size: int = 128) -> int:
    """Round every Linear in the transformer blocks with `rtn_quantize`, in place; returns how many.

    Weights are rounded in float32 and written back in their own dtype; biases, norms, embeddings and
    the LM head are untouched (see `block_linears`). A peft model is refused: its adapter would stay
    unquantised on top of rounded base weights, which is neither model; merge it first
    (merge_and_unload), as the audit does before this attack.
    """
    layers = quantizable_layers(model)
    for _, module in layers:
        module.weight.copy_(rtn_quantize(module.weight, bits, group_size))
    return len(layers)


def bitsandbytes_available() -> bool:
    """True when real 4/8-bit loading can work here: bitsandbytes installed and a CUDA GPU seen."""
    return importlib.util.find_spec("bitsandbytes") is not None and torch.cuda.is_available()


def load_bitsandbytes(
    model_dir: str | Path, bits: int, tokenizer: Any = None, dtype: torch.dtype = torch.bfloat16
) -> Any:
    """Load a saved model folder with real bitsandbytes quantisation on the first CUDA GPU.

    bits=4: NF4 weights (4-bit NormalFloat, Dettmers et al. 2023, "QLoRA"), compute in `dtype`;
    bits=8: LLM.int8() (Dettmers et al. 2022). As bitsandbytes does, the LM head stays unquantised.
    With a tokenizer, its pad token is set on the model (unlearn.models.ensure_pad_token). The model
    comes back in eval mode.
    """
    if bits not in (4, 8):
        raise UnlearnError(f"bitsandbytes loading takes bits 4 (nf4) or 8 (LLM.int8), got {bits!r}")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise UnlearnError(
            f"{bits}-bit loading needs the bitsandbytes package, which is not installed (pip install bitsandbytes)"
        )
    if not torch.cuda.is_available():
        raise UnlearnError(f"{bits}-bit loading with bitsandbytes needs a CUDA GPU; none is visible here")
    folder = Path(model_dir).expanduser()
    if not (folder / "config.json").is_file():
        raise UnlearnError(f"bitsandbytes loading: {folder} is not a saved model folder (no config.json)")
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    if bits == 4:
        config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)
    else:
        config = BitsAndBytesConfig(load_in_8bit=True)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(folder), quantization_config=config, dtype=dtype, device_map={"": 0}, use_safetensors=True
        )
    except Exception as e:  # transformers and bitsandbytes raise many kinds
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UnlearnError(f"{bits}-bit loading of {folder} failed: {first}") from None
    if tokenizer is not None:
        ensure_pad_token(tokenizer, model)
    return model.eval()
