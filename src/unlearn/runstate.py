"""A run's state: the run.json manifest and the signal handling that stops a run cleanly.

    OUTPUT_DIR/run.json   {"status": "running" | "done" | "interrupted" | "failed", ...}

run.json is the single source of truth of a run's state. It is written atomically (temp file, then
rename) when the output folder is created and again at every exit: `done` after the model is in
place, `interrupted` after SIGINT/SIGTERM (with the checkpoint and the command that resumes),
`failed` with the reason. A run killed without warning (SIGKILL, power loss) stays `running`; its
`pid` and `host` say which process that was, and `unlearn run CONFIG --resume` continues it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable

from unlearn.files import write_text_atomic

STATUSES = ("running", "done", "interrupted", "failed")

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
