"""What keeps a run's files trustworthy: the run.json manifest, signal handling, paths kept inside
OUTPUT_DIR, and disk checks before and during training.

    OUTPUT_DIR/run.json   {"status": "running" | "done" | "interrupted" | "failed", ...}

run.json is the single source of truth of a run's state. It is written atomically (temp file, then
rename) when the output folder is created and again at every exit: `done` after the model is in
place, `interrupted` after SIGINT/SIGTERM (with the checkpoint and the command that resumes),
`failed` with the reason. A run killed without warning (SIGKILL, power loss) stays `running`; its
`pid` and `host` say which process that was, and `unlearn run CONFIG --resume` continues it.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

from unlearn.errors import UnlearnError

STATUSES = ("running", "done", "interrupted", "failed")


def one_line(e: BaseException) -> str:
    """An exception as one line: its message (or type), whitespace collapsed."""
    text = " ".join(str(e).split())
    return text or type(e).__name__


# --------------------------------------------------------------------------------------------
# Atomic files


def fsync_path(path: Path) -> None:
    """Flush a file, or a folder's entry list, to disk (best effort: some filesystems refuse)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes_atomic(path: Path, blob: bytes) -> None:
    """Write `blob` to `path` so that readers see the old file or the new one, never a part."""
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """write_bytes_atomic for UTF-8 text."""
    write_bytes_atomic(path, text.encode("utf-8"))


def replace_dir(tmp: Path, final: Path) -> None:
    """Move the finished folder `tmp` to `final`, replacing an older `final` without a moment in
    which `final` is a half-deleted folder: the old one is renamed aside first, then removed."""
    trash = None
    if final.exists():
        trash = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(final, trash)
    os.replace(tmp, final)
    fsync_path(final.parent)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


def remove_stale_temps(folder: Path) -> list[Path]:
    """Delete leftovers of atomic writes that a killed run did not finish (`.NAME.tmp-*`,
    `.NAME.old-*`, `checkpoints/.tmp-*`). They are never read; this only frees the space."""
    removed = []
    for pattern in (".*.tmp-*", ".*.old-*", "checkpoints/.tmp-*", "checkpoints/.*.old-*"):
        for p in folder.glob(pattern):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p)
    return removed


WRITE_ERRNOS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
                errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
                errno.EPERM: "operation not permitted", errno.EIO: "input/output error"}


def write_error(what: str, e: BaseException) -> UnlearnError:
    """A failed write (OSError, or safetensors' own error type) as a one-line UnlearnError."""
    if isinstance(e, OSError) and e.errno is not None:
        reason = WRITE_ERRNOS.get(e.errno) or (e.strerror or one_line(e)).lower()
        where = f" ({e.filename})" if e.filename else ""
        return UnlearnError(f"cannot write {what}: {reason}{where}")
    return UnlearnError(f"cannot write {what}: {one_line(e)}")


def is_write_error(e: BaseException) -> bool:
    if isinstance(e, OSError):
        return True
    try:
        from safetensors import SafetensorError
    except ImportError:  # pragma: no cover - safetensors is a dependency
        return False
    return isinstance(e, SafetensorError)


# --------------------------------------------------------------------------------------------
# Paths inside OUTPUT_DIR


def inside(root: Path, *parts: str) -> Path:
    """root/parts, refusing a path that resolves outside `root` (a symlink planted in the folder
    must not make a run write, or delete, elsewhere)."""
    path = root.joinpath(*parts)
    real_root = root.resolve()
    real = path.resolve()
    if real != real_root and real_root not in real.parents:
        raise UnlearnError(
            f"{path} resolves to {real}, outside output_dir {real_root}; refusing to write there"
        )
    return path


def refuse_dangerous_overwrite(out: Path, inputs: list[Path]) -> None:
    """--overwrite deletes OUTPUT_DIR. Refuse when that would delete the working directory, the home
    folder or the file system root, or any input of the run (config, data, model)."""
    real = out.resolve()
    cwd, home = Path.cwd().resolve(), Path.home().resolve()
    if real == Path(real.anchor) or real == home or real == cwd or real in cwd.parents:
        raise UnlearnError(
            f"--overwrite would delete '{real}', which holds the working directory or is the home "
            "folder or file system root; choose a dedicated output_dir"
        )
    for p in inputs:
        rp = p.expanduser().resolve()
        if rp == real or real in rp.parents:
            raise UnlearnError(
                f"--overwrite would delete '{p}', an input of this run inside output_dir '{out}'; "
                "move it out or choose another output_dir"
            )


# --------------------------------------------------------------------------------------------
# Disk checks before training


def _existing_ancestor(path: Path) -> Path:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def check_writable(out: Path) -> None:
    """Create and delete a small file where OUTPUT_DIR is (or will be) to prove it can be written.
    os.access is not enough: it says yes to root on a read-only mount, and knows no quotas."""
    probe = out if out.is_dir() else _existing_ancestor(out)
    try:
        fd, name = tempfile.mkstemp(prefix=".unlearn-probe-", dir=probe)
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        reason = WRITE_ERRNOS.get(e.errno or 0) or (e.strerror or one_line(e)).lower()
        raise UnlearnError(f"output_dir '{out}': cannot write in '{probe}' ({reason})") from None


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"  # pragma: no cover


def check_free_space(out: Path, need: int, what: str) -> None:
    """Refuse to start when the disk under OUTPUT_DIR has less free space than the run will write."""
    probe = out if out.is_dir() else _existing_ancestor(out)
    free = shutil.disk_usage(probe).free
    if free < need:
        raise UnlearnError(
            f"output_dir '{out}': {human_bytes(free)} free on its disk, but the run writes about "
            f"{human_bytes(need)} ({what}); free some space, or lower train.keep_last / set "
            "train.save_every: 0"
        )


def estimate_output_bytes(
    trainable_bytes: int, model_bytes: int, *, lora: bool, merge: bool, checkpoints: int
) -> tuple[int, str]:
    """Bytes a run writes: the final model (adapter and/or full weights) and `checkpoints` checkpoint
    folders (trainable weights + two AdamW moments each). A small margin covers JSON and tokenizer."""
    final = (trainable_bytes if lora else model_bytes) + (model_bytes if lora and merge else 0)
    per_ckpt = 3 * trainable_bytes
    need = int(1.05 * (final + checkpoints * per_ckpt)) + 16 * 2**20
    what = f"model {human_bytes(final)}"
    if checkpoints:
        what += f" + {checkpoints} checkpoints of {human_bytes(per_ckpt)}"
    return need, what


# --------------------------------------------------------------------------------------------
# The manifest


class Manifest:
    """OUTPUT_DIR/run.json, written by the main process only. See the module docstring."""

    def __init__(self, path: Path, enabled: bool, **fields: Any):
        self.path, self.enabled = path, enabled
        self.data: dict[str, Any] = {
            "status": "running",
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **fields,
        }

    @property
    def status(self) -> str:
        return self.data["status"]

    def update(self, **fields: Any) -> None:
        self.data.update(fields)
        if self.enabled:
            write_text_atomic(self.path, json.dumps(self.data, indent=2) + "\n")

    def end(self, status: str, **fields: Any) -> None:
        """Record how the run ended. Never raises: a full disk must not hide the error that ended it."""
        assert status in STATUSES
        try:
            self.update(status=status, ended=time.strftime("%Y-%m-%dT%H:%M:%S%z"), **fields)
        except Exception:  # noqa: BLE001 - best effort by design
            pass


def read_manifest(folder: str | Path) -> dict[str, Any] | None:
    """run.json of a run folder, or None when there is none (or it is unreadable)."""
    try:
        data = json.loads((Path(folder) / "run.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def run_status(folder: str | Path) -> str | None:
    """'running', 'done', 'interrupted', 'failed', or None when the folder holds no run.json."""
    data = read_manifest(folder)
    status = data.get("status") if data else None
    return status if status in STATUSES else None


# --------------------------------------------------------------------------------------------
# Signals


class GracefulStop:
    """On SIGINT or SIGTERM, ask the training loop to stop after the current step.

    The loop checks `requested` between steps, writes a checkpoint and exits. A second signal more
    than `debounce` seconds after the first stops at once (launchers such as torchrun forward the
    terminal's Ctrl-C to workers that already received it, so two signals close together count once).
    Handlers are installed only in the main thread, and the previous ones restored by `restore()`.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, debounce: float = 2.0, notice: Callable[[str], None] | None = None):
        self.signum: int | None = None
        self.at = 0.0
        self.debounce = debounce
        self.notice = notice or (lambda text: os.write(2, text.encode()))
        self._old: dict[int, Any] = {}

    def install(self) -> "GracefulStop":
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def restore(self) -> None:
        for s, old in self._old.items():
            try:
                signal.signal(s, old)
            except (ValueError, TypeError):  # pragma: no cover - not the main thread / odd handler
                pass
        self._old.clear()

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def _handle(self, signum: int, frame: Any) -> None:
        now = time.monotonic()
        if self.signum is None:
            self.signum, self.at = signum, now
            self.notice(
                f"\n{signal.Signals(signum).name}: stopping after the current step and writing a "
                "checkpoint (send it again to stop at once)\n"
            )
            return
        if now - self.at < self.debounce:
            return
        self.restore()
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        os.kill(os.getpid(), signum)  # default action of the restored handler: terminate


def exit_code(signum: int) -> int:
    """The shell's convention for a process ended by a signal: 128 + its number."""
    return 128 + int(signum)


def iter_log(path: Path) -> Iterator[dict[str, Any]]:
    """The records of a train_log.jsonl, skipping a torn last line that a kill left behind."""
    if not path.exists():
        return
    for line in path.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("step"), int):
            yield rec
