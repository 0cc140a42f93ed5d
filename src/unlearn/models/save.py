"""Save a trained model (or its LoRA adapter) atomically."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any, Callable

import torch

from unlearn.models.load import is_peft, merge_lora


def save_model(
    model: Any, tokenizer: Any, folder: Path, *, base_name: str, merge: bool,
    state_dict: dict[str, torch.Tensor] | None = None, dtype: torch.dtype | None = None,
) -> dict[str, str]:
    """Save the result under `folder` atomically (written next to it, then renamed into place).

    Full fine-tune: folder/model. LoRA: folder/model holds the adapter, or the merged model when
    `merge` (the adapter then goes to folder/adapter). `state_dict`: the weights to save when the
    model's own are sharded across processes (FSDP, ZeRO-3). A failed write leaves no partial
    folder behind. Returns {kind: path} of what was written. `dtype`: the dtype a full model's
    floating-point weights are saved in (a model trained with fp32 master weights goes back to the
    dtype it was loaded in); None keeps theirs.
    """
    from unlearn.files import replace_dir

    written: dict[str, str] = {}
    if dtype is not None and not is_peft(model):
        weights = model.state_dict() if state_dict is None else state_dict
        if any(t.is_floating_point() and t.dtype != dtype for t in weights.values()):
            state_dict = {k: t.to(dtype) if t.is_floating_point() else t for k, t in weights.items()}
    extra = {} if state_dict is None else {"state_dict": state_dict}

    def atomic(name: str, write: Callable[[Path], None]) -> None:
        final = folder / name
        tmp = folder / f".{name}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            write(tmp)
            tokenizer.save_pretrained(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        replace_dir(tmp, final)
        written[name] = str(final)

    if is_peft(model):
        # Record the name the user gave (alias, folder or hub id) so the adapter reloads anywhere.
        for pc in model.peft_config.values():
            pc.base_model_name_or_path = base_name

        def save_adapter(p: Path) -> None:
            # save_embedding_layers=False: peft would otherwise look the base model up on the hub
            # to decide; embeddings are only resized when a pad token is added, which reloading
            # through load_model() repeats.
            model.save_pretrained(p, safe_serialization=True, save_embedding_layers=False, **extra)

        atomic("adapter" if merge else "model", save_adapter)
        if merge:
            merged = merge_lora(model)
            atomic("model", lambda p: merged.save_pretrained(p, safe_serialization=True))
    else:
        atomic("model", lambda p: model.save_pretrained(p, safe_serialization=True, **extra))
    return written
