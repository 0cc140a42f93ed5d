"""The run's output folder before anything is written: may it be used, what must --overwrite keep,
how much will the run write."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from unlearn.config import Config
from unlearn.errors import UnlearnError
from unlearn.files import check_writable, estimate_output_bytes, inside
from unlearn.models import DTYPES


def check_output_dir(path: Path, *, overwrite: bool, resume: bool) -> None:
    """Refuse to clobber a previous run; check that the folder can be created. Writes nothing."""
    if path.exists():
        if not path.is_dir():
            raise UnlearnError(f"output_dir '{path}' exists and is a file")
        if resume:
            if not (path / "config.yaml").exists():
                raise UnlearnError(f"--resume: '{path}' holds no run (no config.yaml)")
            # A resumed run writes into what is there: a planted symlink must not lead elsewhere.
            for name in ("config.yaml", "run.json", "train_log.jsonl", "checkpoints", "model", "adapter"):
                inside(path, name)
        elif any(path.iterdir()) and not overwrite:
            raise UnlearnError(
                f"output_dir '{path}' exists and is not empty; pass --overwrite to replace it "
                "or --resume to continue it"
            )
    elif resume:
        raise UnlearnError(f"--resume: output_dir '{path}' does not exist")
    check_writable(path)


def run_inputs(cfg: Config, with_eval: bool = False) -> list[Path]:
    """The files a run reads (with_eval: and its evaluation): --overwrite must not delete them."""
    paths = [cfg.data.forget, cfg.data.retain, cfg.data.mismatch]
    if with_eval:
        paths += [cfg.eval.forget, cfg.eval.forget_test, cfg.eval.retain, cfg.eval.normal]
    found = [Path(s.path) for s in paths if s is not None and s.path]
    if Path(cfg.model.name).expanduser().exists():
        found.append(Path(cfg.model.name))
    source = cfg.origins.get("", "")
    if source and Path(source).is_file():
        found.append(Path(source))
    return found


def output_bytes(cfg: Config, model: Any) -> tuple[int, str]:
    """(bytes, description) the run will write; see estimate_output_bytes."""
    params = list(model.parameters())
    trainable = sum(p.numel() * p.element_size() for p in params if p.requires_grad)
    # The model is saved in model.dtype, also when it trained in fp32 (setup.master_weights).
    whole = sum(p.numel() for p in params) * DTYPES[cfg.model.dtype].itemsize
    checkpoints = cfg.train.keep_last + 1 if cfg.train.save_every else 0
    return estimate_output_bytes(trainable, whole, lora=cfg.model.lora is not None,
                                 merge=cfg.model.merge, checkpoints=checkpoints)
