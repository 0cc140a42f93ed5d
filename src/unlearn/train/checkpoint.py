"""Resumable checkpoints (safetensors + JSON, no pickles) and what a resumed run must agree with.

checkpoints/step-N holds the trained parameters, the optimizer state, the RNG states, the
scheduler state and the data position; it is written to a temp folder, flushed and renamed, so a
kill leaves either the whole checkpoint or none. `check_resume_config` refuses a resumed run
whose config differs from the saved one (except train.max_steps and evaluation settings).
"""

from __future__ import annotations

import json
import random
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unlearn.config import Config
from unlearn.errors import UnlearnError, one_line
from unlearn.files import fsync_path, inside, is_write_error, replace_dir, write_error, write_text_atomic
from unlearn.objective import Objective


def write_json_atomic(path: Path, data: Any) -> None:
    """`data` as indented JSON, written atomically."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The torch (and CUDA) RNG states as tensors, Python's and NumPy's as JSON-able values."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    np_state = np.random.get_state()
    meta = {
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Restore what rng_state() returned."""
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    v, state, gauss = meta["python"]
    random.setstate((v, tuple(state), gauss))
    n = meta["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))


def save_checkpoint(
    folder: Path, step: int, model: Any, optimizer: Any, scheduler: Any, keep_last: int,
    data: dict[str, Any] | None = None, loop: dict[str, Any] | None = None,
) -> Path:
    """Write checkpoints/step-N atomically (a temp folder, flushed to disk, renamed into place).

    A failed write (full disk) removes the temp folder, keeps the older checkpoints and raises an
    UnlearnError. `data` records the data position (the batches are a pure function of the seed
    and the micro-batch index, so the position is all the sampler state there is). `loop`: the
    training loop's own state (JSON values: the stopping rule's, the skipped steps), which
    loop_state() gives back.
    """
    root = inside(folder, "checkpoints")
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:07d}"
    tmp = root / f".tmp-step-{step:07d}-{uuid.uuid4().hex[:8]}"
    try:
        _write_checkpoint(tmp, step, model, optimizer, scheduler, data, loop)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_write_error(e):
            raise write_error(f"checkpoint {final.name}", e) from None
        raise
    replace_dir(tmp, final)
    for old in sorted(root.glob("step-*"))[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _write_checkpoint(
    tmp: Path, step: int, model: Any, optimizer: Any, scheduler: Any, data: dict[str, Any] | None,
    loop: dict[str, Any] | None,
) -> None:
    from safetensors.torch import save_file

    tmp.mkdir()
    trainable = {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}
    save_file(trainable, tmp / "trainable.safetensors")
    opt = optimizer.state_dict()
    opt_tensors, opt_meta = {}, {}
    for idx, st in opt["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                opt_tensors[f"{idx}.{k}"] = v.detach().contiguous().cpu()
            else:
                opt_meta[f"{idx}.{k}"] = v
    save_file(opt_tensors, tmp / "optimizer.safetensors")
    rng_tensors, rng_meta = rng_state()
    save_file(rng_tensors, tmp / "rng.safetensors")
    sched = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
    write_json_atomic(
        tmp / "state.json",
        {"step": step, "param_groups": opt["param_groups"], "optimizer_scalars": opt_meta,
         "scheduler": sched, "rng": rng_meta, "data": data or {}, "loop": loop or {}},
    )
    for f in tmp.iterdir():
        fsync_path(f)
    fsync_path(tmp)


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint of the run in `folder` (one with its state.json), or None."""
    done = [p for p in sorted((folder / "checkpoints").glob("step-*")) if (p / "state.json").exists()]
    return done[-1] if done else None


def loop_state(path: Path) -> dict[str, Any]:
    """The training loop's state saved in checkpoint `path` ({} for a checkpoint without one)."""
    try:
        state = json.loads((path / "state.json").read_text())
    except (OSError, ValueError) as e:
        raise UnlearnError(
            f"checkpoint {path} cannot be read ({one_line(e)}); delete it to resume from the one before"
        ) from None
    loop = state.get("loop") if isinstance(state, dict) else None
    return loop if isinstance(loop, dict) else {}


def load_checkpoint(
    path: Path, model: Any, optimizer: Any, scheduler: Any, data: dict[str, Any] | None = None
) -> int:
    """Restore weights, optimizer, scheduler and RNG from a checkpoint; return its step. `data`:
    this run's data position keys, which must match the checkpoint's (same global batch)."""
    from safetensors.torch import load_file

    try:
        state = json.loads((path / "state.json").read_text())
        trainable = load_file(path / "trainable.safetensors")
        opt_tensors = load_file(path / "optimizer.safetensors")
        rng_tensors = load_file(path / "rng.safetensors")
    except Exception as e:  # a damaged disk: JSONDecodeError, SafetensorError, OSError
        raise UnlearnError(
            f"checkpoint {path} cannot be read ({one_line(e)}); delete it to resume from the one before"
        ) from None
    saved_data = state.get("data") or {}
    for key, ours in (data or {}).items():
        if key in saved_data and key != "micro_batch_index" and saved_data[key] != ours:
            raise UnlearnError(
                f"--resume: checkpoint {path.name} was written with {key} {saved_data[key]}, this run "
                f"has {ours} (train.batch_size x processes must stay the same)"
            )
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    missing = sorted(set(params) - set(trainable))
    if missing:
        raise UnlearnError(f"{path}: checkpoint lacks trained parameter '{missing[0]}' of this model")
    with torch.no_grad():
        for n, t in trainable.items():
            if n not in params:
                raise UnlearnError(f"{path}: checkpoint has parameter '{n}' that this model lacks")
            if tuple(t.shape) != tuple(params[n].shape):
                raise UnlearnError(
                    f"{path}: parameter '{n}' has shape {tuple(t.shape)} in the checkpoint, "
                    f"{tuple(params[n].shape)} in this model"
                )
            params[n].copy_(t.to(params[n].device, params[n].dtype))
    opt_state: dict[int, dict[str, Any]] = {}
    for key, v in list(opt_tensors.items()) + list(state["optimizer_scalars"].items()):
        idx, _, name = key.partition(".")
        opt_state.setdefault(int(idx), {})[name] = v
    optimizer.load_state_dict({"state": opt_state, "param_groups": state["param_groups"]})
    # LambdaLR keeps its lambdas out of the checkpoint (functions): they come from the config.
    scheduler.load_state_dict({**state["scheduler"], "lr_lambdas": [None] * len(optimizer.param_groups)})
    set_rng_state(rng_tensors, state["rng"])
    return int(state["step"])


def check_resume_config(out: Path, cfg: Config) -> None:
    """A resumed run must be the same run: only train.max_steps, train.log_every and evaluation
    settings may change."""
    import yaml

    from unlearn.config import config_from_dict

    saved = config_from_dict(yaml.safe_load((out / "config.yaml").read_text()))
    ours = config_from_dict(cfg.to_dict())
    if ours.train.lr is None:
        ours.train.lr = saved.train.lr
    if ours.objective != saved.objective:
        ours.objective = Objective(ours.objective).to_config()

    def flat(d: Any, prefix: str = "") -> dict[str, Any]:
        if isinstance(d, dict):
            out_: dict[str, Any] = {}
            for k, v in d.items():
                out_.update(flat(v, f"{prefix}{k}."))
            return out_
        return {prefix[:-1]: d}

    a, b = flat(saved.to_dict()), flat(ours.to_dict())
    # Evaluation settings may change (they do not change what is trained), except the split.
    free = lambda k: k in ("train.max_steps", "train.log_every") or (k.startswith("eval.") and not k.startswith("eval.split"))  # noqa: E731
    diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and not free(k))
    if diff:
        raise UnlearnError(
            f"--resume: the config differs from {out / 'config.yaml'} in: {', '.join(diff)} "
            "(only train.max_steps, train.log_every and eval settings may change when resuming)"
        )
