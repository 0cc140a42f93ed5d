"""Files that stay trustworthy: atomic writes, folder swaps, paths kept inside OUTPUT_DIR, disk
checks before and during a run, and the reader of a train_log.jsonl that a kill may have torn."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, Iterator

from unlearn.errors import UnlearnError, one_line

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
