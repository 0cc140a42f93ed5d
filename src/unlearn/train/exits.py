"""Every way out of a run leaves run.json saying how it ended (see unlearn.runstate): done (the
loop), interrupted (SIGINT/SIGTERM: the step is finished, a checkpoint written, RunInterrupted
raised; KeyboardInterrupt: no checkpoint), failed (the reason; the error is re-raised)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from unlearn.config import Config
from unlearn.distributed import sharded
from unlearn.errors import RunInterrupted, one_line
from unlearn.files import WRITE_ERRNOS, write_error
from unlearn.runstate import GracefulStop, Manifest
from unlearn.train.checkpoint import latest_checkpoint


@dataclass
class RunExit:
    """What the exit paths of a run need; filled in as the run goes."""

    manifest: Manifest | None = None
    stop: GracefulStop | None = None
    out: Path | None = None
    step: int = 0

    def latest(self) -> str | None:
        """The newest complete checkpoint, as run.json records it."""
        ckpt = latest_checkpoint(self.out) if self.out is not None else None
        return str(ckpt) if ckpt is not None else None


def guarded(ex: RunExit, cfg: Config, body: Callable[[], Any]) -> Any:
    """body(), recording in run.json how it ended when it raises: interrupted (KeyboardInterrupt)
    or failed (anything else; a full disk's OSError is re-raised as an UnlearnError). The signal
    handlers are restored whatever happens."""
    try:
        return body()
    except RunInterrupted:
        raise
    except KeyboardInterrupt:
        if ex.manifest is not None:
            ex.manifest.end("interrupted", steps=ex.step, reason="KeyboardInterrupt (no checkpoint written)",
                            last_checkpoint=ex.latest())
        raise
    except BaseException as e:
        err = e
        if isinstance(e, OSError) and e.errno in WRITE_ERRNOS:
            err = write_error(f"to {ex.out or cfg.output_dir}", e)
        if ex.manifest is not None:
            ex.manifest.end("failed", steps=ex.step, reason=one_line(err), last_checkpoint=ex.latest())
        if err is not e:
            raise err from None
        raise
    finally:
        if ex.stop is not None:
            ex.stop.restore()


def interrupt(ex: RunExit, accelerator: Any, cfg: Config, step: int, checkpoint: Any, finetune: bool) -> None:
    """After SIGINT/SIGTERM: write a checkpoint (unless this step just did: checkpoint None),
    record it in run.json and raise RunInterrupted with the command that resumes."""
    assert ex.stop is not None and ex.manifest is not None and ex.out is not None
    ckpt = None
    if not sharded(accelerator):
        if checkpoint is not None:
            checkpoint()
        ckpt = latest_checkpoint(ex.out)
    command = f"unlearn {'finetune' if finetune else 'run'} {ex.out / 'config.yaml'} --resume"
    if accelerator.num_processes > 1:
        command = f"accelerate launch <the same options> -m {command}"
    where = f"checkpoint {ckpt}" if ckpt else "no checkpoint (not supported under FSDP/DeepSpeed)"
    ex.manifest.end("interrupted", steps=step, signal=ex.stop.name, last_checkpoint=str(ckpt) if ckpt else None,
                    resume=command)
    raise RunInterrupted(
        f"{ex.stop.name}: stopped after step {step} of {cfg.train.max_steps}; {where}; "
        f"resume with: {command}",
        ex.stop.signum or 0,
        ckpt,
    )
