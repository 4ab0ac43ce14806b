"""Stage processes started before their plan exists: the supervisor's head start (supervisor process).

A spawned stage process spends most of its start-up in the interpreter, multiprocessing's spawn bootstrap
and its libraries (numpy, PyAV, mss: 0.1-0.3 s each), and the supervisor spends as long again importing and
planning. ``StageHosts`` starts one process per likely stage at once (forked on Linux: ``START_METHOD``);
each imports its stage's module and the libraries its ``open()`` needs (``pipeline.stage.host_stage``,
``Stage.preload``) and waits. When the plan is made, the supervisor hands each its
``StageContext`` (pipes included: multiprocessing passes their descriptors) instead of spawning; hosts
the plan did not need are closed, and exit without having touched a device or a file.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import signal
import sys
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from types import TracebackType
from typing import Any

from pipeline.stage import QUIET_SIGNALS, host_stage

JOIN_S = 1.0  # an unused host exits at once when its pipe closes; this long, then it is killed
# Hosts are forked on Linux: they start before the CLI has a thread, a display connection, PortAudio or any
# library but the standard one and ours (``framepipe.cli`` starts them first), so there is nothing a fork
# could break, and a fork skips the interpreter, multiprocessing's spawn bootstrap and the re-import of
# pipeline.stage (about 0.15 CPU-s a process) and the resource tracker. Elsewhere: spawn.
START_METHOD = "fork" if sys.platform.startswith("linux") else "spawn"


@dataclass
class Host:
    """One waiting stage process and the pipe its context goes down."""

    process: BaseProcess
    control: Connection


def start_quietly(process: BaseProcess) -> None:
    """Start ``process`` with the group signals blocked until it ignores them: a Ctrl+C while it imports
    must not kill it (the mask survives exec); ours stay pending, then arrive."""
    signal.pthread_sigmask(signal.SIG_BLOCK, QUIET_SIGNALS)
    try:
        process.start()
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, QUIET_SIGNALS)


class StageHosts:
    """Waiting stage processes, by stage target ("package.module:Class"); a context manager that closes
    whatever was not taken."""

    def __init__(self, targets: list[str]) -> None:
        ctx: Any = mp.get_context(START_METHOD)
        self.hosts: dict[str, list[Host]] = {}
        for target in targets:
            ours, theirs = ctx.Pipe()
            process = ctx.Process(target=host_stage, args=(target, theirs), name="fp-stage", daemon=False)
            start_quietly(process)
            theirs.close()
            self.hosts.setdefault(target, []).append(Host(process, ours))

    def take(self, target: str) -> Host | None:
        """A waiting process for ``target``, or None (the caller spawns one)."""
        waiting = self.hosts.get(target) or []
        return waiting.pop(0) if waiting else None

    def close(self) -> None:
        """Close every host not taken: each exits when its pipe closes."""
        left = [h for hosts in self.hosts.values() for h in hosts]
        self.hosts = {}
        for host in left:
            host.control.close()
        for host in left:
            host.process.join(JOIN_S)
            if host.process.is_alive():
                host.process.kill()
                host.process.join(JOIN_S)

    def __enter__(self) -> StageHosts:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        with contextlib.suppress(OSError):
            self.close()
