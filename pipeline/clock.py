"""The one clock of the pipeline: integer nanoseconds on a monotonic source.

Every process stamps with ``now_ns()``; the supervisor fixes ``base_time`` at
start and stages stamp ``running_time = now_ns() - base_time`` (GStreamer's
rule for live sources). Float seconds are only for people.
"""

from __future__ import annotations

import sys
import time

NS_PER_S = 1_000_000_000

#: The clock function: monotonic on Linux and macOS, perf_counter on Windows.
_source = time.perf_counter_ns if sys.platform == "win32" else time.monotonic_ns


def now_ns() -> int:
    """Current time of the pipeline clock, in nanoseconds (any process)."""
    return _source()


def sleep_until(deadline_ns: int) -> int:
    """Sleep until the clock reaches ``deadline_ns``; return the lateness in ns.

    Sleeps in one call (the kernel's timer slack is ~50 us), then spins
    briefly only if woken early.
    """
    while True:
        left = deadline_ns - _source()
        if left <= 0:
            return -left
        time.sleep(left / NS_PER_S)


def seconds(ns: int) -> float:
    """Nanoseconds as float seconds, for people."""
    return ns / NS_PER_S
