"""Switching off a model's own dropout for training (train.keep_dropout: false, the default)."""

from __future__ import annotations

from typing import Any

import torch

# Module classes whose `p` is a dropout probability.
DROPOUT_MODULES = (
    torch.nn.Dropout, torch.nn.Dropout1d, torch.nn.Dropout2d, torch.nn.Dropout3d,
    torch.nn.AlphaDropout, torch.nn.FeatureAlphaDropout,
)


def disable_dropout(model: Any) -> int:
    """Zero the dropout of `model`'s own layers, keeping the model in training mode; return how many
    places were zeroed.

    Unlearning compares the policy with the frozen original (KL, NPO, DPO), which runs in eval mode:
    with dropout on in the policy (OPT ships 0.1) the two differ at step 0, so the KL starts above 0
    and the log-ratios are noise. TRL's `disable_dropout` does the same for its preference trainers.
    transformers keeps dropout in two forms: `nn.Dropout` modules, and float attributes read in the
    forward (`LlamaAttention.attention_dropout`, OPT's `dropout`, `layerdrop`); both are zeroed.
    `model.eval()` would also do it but switches gradient checkpointing off (it runs only in
    training mode). LoRA's own dropout (`lora_dropout`, the config's model.lora.dropout) is left as
    configured. The model's config, and so the saved model, keeps its values.
    """
    count = 0
    for name, module in model.named_modules():
        if "lora_dropout" in name:
            continue
        if isinstance(module, DROPOUT_MODULES):
            if module.p > 0:
                module.p = 0.0
                count += 1
            continue
        for attr, value in list(vars(module).items()):
            if (attr.endswith("dropout") or attr == "layerdrop") and isinstance(value, float) and value > 0:
                setattr(module, attr, 0.0)
                count += 1
    return count
