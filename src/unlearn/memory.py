"""Peak memory of a stretch of work, the same way everywhere it is reported (`unlearn compare`,
the benchmarks): the RSS high-water mark on a CPU, torch.cuda.max_memory_allocated on a GPU."""

from __future__ import annotations

import sys
from pathlib import Path


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
