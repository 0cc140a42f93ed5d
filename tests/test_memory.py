"""The process's allocator setting (unlearn.memory.keep_freed_memory) and peak memory.

Each check runs in a fresh interpreter: the setting is process-wide and must not leak into the
other tests' memory figures.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# Allocates 192 MiB in 4 buffers of 48 MiB and frees them together, ten times over (what a training
# step does with its logits and gradients), and reports the minor page faults. glibc always mmaps a
# block this size by default (its mmap threshold rises to 32 MiB at most) and returns it at free.
PROBE = r"""
import json, os, resource, sys
import torch
from unlearn.memory import keep_freed_memory, PeakMemory
made = keep_freed_memory() if sys.argv[1] == "keep" else False
def rounds(n):
    for _ in range(n):
        ts = [torch.empty(48 << 20, dtype=torch.uint8).fill_(1) for _ in range(4)]
        del ts
rounds(3)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
rounds(10)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
# A phase's peak after the kept memory is returned: live memory, not what the heap kept.
big = [torch.empty(48 << 20, dtype=torch.uint8).fill_(1) for _ in range(6)]; del big
peak = PeakMemory("cpu"); peak.reset(); rss = peak.read()
print(json.dumps({"made": made, "faults": faults, "rss": rss}))
"""


def _probe(mode: str, env: dict[str, str] | None = None) -> dict:
    import os

    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=120,
                         env={**os.environ, **(env or {})})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_kept_memory_is_reused_without_page_faults_and_not_counted_in_a_later_peak():
    default, kept = _probe("default"), _probe("keep")
    assert kept["made"] is True
    # By default the 192 MiB (49,152 pages) are returned and faulted in again every round; kept,
    # the same memory is reused.
    assert default["faults"] > 400_000, default
    assert kept["faults"] < 1_000, kept
    # The 288 MiB freed before the reset (kept in the heap) is returned by it, so the kept process's
    # RSS is not 288 MiB above the default one's.
    assert kept["rss"] < default["rss"] + (128 << 20), (kept, default)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_the_setting_can_be_switched_off():
    off = _probe("keep", {"UNLEARN_KEEP_FREED_MEMORY": "0"})
    assert off["made"] is False
    assert off["faults"] > 400_000, off


def test_the_command_line_makes_the_setting_at_start(monkeypatch):
    import unlearn.cli as cli
    import unlearn.memory as memory

    calls = []
    monkeypatch.setattr(memory, "keep_freed_memory", lambda: calls.append(1) or True)
    monkeypatch.setattr(cli, "app", lambda: None)
    cli.main()
    assert calls == [1]
