"""Memory of the process: the allocator's settings (`keep_freed_memory`), and peak memory of a
stretch of work, the same way everywhere it is reported (`unlearn compare`, the benchmarks): the
RSS high-water mark on a CPU, torch.cuda.max_memory_allocated on a GPU."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys
from pathlib import Path

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4
# Free memory at the top of the heap that glibc keeps instead of returning it (the most mallopt takes).
KEEP_FREE = 2**31 - 1
TOP_PAD = 64 << 20
# Set to 0 to leave the C allocator as it is.
ENV_SWITCH = "UNLEARN_KEEP_FREED_MEMORY"


@functools.lru_cache(maxsize=None)
def _libc() -> ctypes.CDLL | None:
    """glibc, loaded once (PeakMemory.reset asks for it at every phase); None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:  # not glibc (musl has no mallopt)
        return None


def keep_freed_memory() -> bool:
    """Let glibc keep the memory that a step frees for the next one, instead of handing it back to
    the kernel and faulting it in again.

    On a CPU, every training step, prefill and decode step allocates and frees the same hundreds of
    MB of activations, logits and gradients. glibc serves a block over its mmap threshold (128 KiB
    at first, rising to at most 32 MiB as such blocks are freed) with mmap, and munmap returns it at
    free; it also returns the heap's free top beyond twice that threshold. Each reuse then page-faults
    anew: a prefill of 128 rows of 150 tokens on the demo model spent 47 s of system time on it.
    Here every block comes from the heap (no mmap), and up to 2 GiB of free heap is kept.

    Peak RSS is the peak of live memory plus what the heap could not reuse (docs/performance.md has
    both measured); `PeakMemory.reset` returns the kept memory first, so a phase's peak is its own.
    A process-wide setting: the command line makes it at start (a library caller decides for
    itself). True when it was made; False elsewhere (not Linux glibc, or UNLEARN_KEEP_FREED_MEMORY=0).
    """
    if os.environ.get(ENV_SWITCH, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    libc = _libc()
    if libc is None:
        return False
    return all(libc.mallopt(param, value) == 1 for param, value in (
        (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, KEEP_FREE), (_M_TOP_PAD, TOP_PAD)))


def release_freed_memory() -> None:
    """Return the heap's free memory to the kernel (glibc's malloc_trim), so that RSS is live memory."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


class PeakMemory:
    """Peak memory of what runs after reset(), in bytes: RSS high-water mark on CPU (Linux
    /proc/self/clear_refs + VmHWM; ru_maxrss elsewhere), max allocated on GPU."""

    def __init__(self, device: str):
        self.cuda = device == "cuda"
        self.kind = "cuda_max_allocated" if self.cuda else "peak_rss"

    def reset(self) -> None:
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            release_freed_memory()  # kept free memory (keep_freed_memory) is not this phase's
            try:
                Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS (Linux)
            except OSError:
                pass

    def read(self) -> int:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            return int(torch.cuda.max_memory_allocated())
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        import resource

        scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
