"""The stage lifecycle and the process runner every stage runs under.

A stage is a small class: ``open()`` (devices, rings, files), ``run()``
(until stopped or end of stream), ``close()``. The supervisor starts each in
its own process (spawn) through ``run_stage``, which names the process
``fp-<stage>``, applies placement before any thread starts, and turns every
failure into an ``Error`` message: a stage never dies silently.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import os
import resource
import signal
import sys
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from pipeline import messages as msg
from pipeline.clock import now_ns
from pipeline.config import StageConfig
from pipeline.errors import FramepipeError
from pipeline.shm import unlink_segments

STATS_INTERVAL_NS = 500_000_000
GROUP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # what a terminal or a service manager sends


@dataclass
class StageContext:
    """What a stage process gets: its name, config and connections (child side)."""

    name: str
    config: Any
    control: Connection  # to and from the supervisor
    inputs: dict[str, Connection] = field(default_factory=dict)  # data paths in, by upstream name
    outputs: dict[str, Connection] = field(default_factory=dict)  # data paths out, by downstream name
    extra: dict[str, Any] = field(default_factory=dict)  # stage-specific: ring names, output path
    rings: tuple[str, ...] = ()  # the shared-memory segments this stage maps
    supervisor_pid: int = 0  # our parent while it lives
    _last_stats: int = 0

    def report(self, message: msg.Message) -> None:
        """Send a message to the supervisor; a gone supervisor is ignored (we finish anyway)."""
        with contextlib.suppress(BrokenPipeError, OSError):
            self.control.send_bytes(msg.encode(message))

    def warn(self, text: str) -> None:
        self.report(msg.Warning(self.name, text))

    def send(self, downstream: str, message: msg.Message) -> None:
        """Send on a data path; a stage that has gone raises DownstreamGone."""
        try:
            self.outputs[downstream].send_bytes(msg.encode(message))
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise DownstreamGone(downstream) from exc

    def stats_due(self) -> bool:
        """True about twice a second: time to send periodic stats."""
        now = now_ns()
        if now - self._last_stats >= STATS_INTERVAL_NS:
            self._last_stats = now
            return True
        return False


class DownstreamGone(FramepipeError, ConnectionError):
    """The next stage has ended (its failure is reported by itself or the supervisor): stop quietly."""


class Stage:
    """Base of every stage; subclasses set ``name`` and override the lifecycle."""

    name = "stage"

    def __init__(self, ctx: StageContext) -> None:
        self.ctx = ctx

    def open(self) -> dict[str, Any]:
        """Open devices, rings and files; return info for the supervisor."""
        return {}

    def run(self, base_time: int) -> None:
        """Work until stopped or end of stream."""

    def close(self) -> None:
        """Release everything open() took; safe after a partial open()."""

    def stats(self) -> dict[str, Any]:
        """Counters so far."""
        return {}


def set_process_name(name: str) -> None:
    """Name this process where people look (ps, top): Linux comm, max 15 bytes."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)  # the C library this process already runs on
        libc.prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME


def apply_placement(config: StageConfig) -> list[str]:
    """Set CPU affinity and nice first thing in the child; return warnings."""
    warnings = []
    if config.affinity:
        if not hasattr(os, "sched_setaffinity"):
            warnings.append("CPU affinity is not supported on this platform; ignored")
        else:
            try:
                os.sched_setaffinity(0, config.affinity)
            except (ValueError, OSError) as exc:
                warnings.append(f"cannot set affinity {list(config.affinity)}: {exc}")
    if config.nice:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, config.nice)
        except OSError as exc:
            warnings.append(f"cannot set nice {config.nice} (negative needs privileges): {exc}")
    return warnings


def usage() -> dict[str, float]:
    """CPU seconds (all threads) and peak RSS of this process."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {"cpu_s": ru.ru_utime + ru.ru_stime, "peak_rss_mb": ru.ru_maxrss / 1024}


def wait_start(ctx: StageContext) -> int | None:
    """Block until the supervisor says Start (its base time) or Stop/EOF (None)."""
    while True:
        try:
            message = msg.decode(ctx.control.recv_bytes())
        except (EOFError, OSError):
            return None
        if isinstance(message, msg.Start):
            return message.base_time
        if isinstance(message, msg.Stop):
            return None


def stage_class(target: str) -> type[Stage]:
    """The stage class named ``"package.module:Class"`` (imported in the stage's own process)."""
    module, _, name = target.partition(":")
    cls: type[Stage] = getattr(importlib.import_module(module), name)
    return cls


def run_stage(target: str, ctx: StageContext) -> None:
    """Entry point of a stage process (spawned by the supervisor); ``target`` names the stage class.

    The class is imported here, after placement: only this process loads its libraries (numpy,
    PyAV, PortAudio), and with one OpenBLAS thread unless asked otherwise (no stage does algebra).
    """
    set_process_name(f"fp-{ctx.name}")
    for sig in GROUP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)  # signals to the whole group: the supervisor decides, we drain
    signal.pthread_sigmask(signal.SIG_UNBLOCK, GROUP_SIGNALS)  # blocked since the spawn; pending ones are dropped
    for text in apply_placement(ctx.config):
        ctx.warn(text)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    try:
        stage = stage_class(target)(ctx)
    except Exception as exc:
        ctx.report(msg.Error(ctx.name, f"cannot load stage {target}: {exc}", fatal=True))
        ctx.report(msg.State(ctx.name, "done", {}))
        return
    try:
        ctx.report(msg.State(ctx.name, "ready", stage.open()))
        base_time = wait_start(ctx)
        if base_time is not None:
            ctx.report(msg.State(ctx.name, "running", {}))
            stage.run(base_time)
    except DownstreamGone as exc:
        ctx.warn(f"stopped: {exc} has ended")
    except FramepipeError as exc:
        ctx.report(msg.Error(ctx.name, str(exc), fatal=True))
    except Exception as exc:  # reported, never silent
        detail = "".join(traceback.format_exception_only(exc)).strip()
        ctx.report(msg.Error(ctx.name, detail, fatal=True))
        if os.environ.get("FRAMEPIPE_DEBUG"):
            traceback.print_exc()
    finally:
        final = stage.stats()
        try:
            stage.close()
        finally:
            if ctx.supervisor_pid and os.getppid() != ctx.supervisor_pid:
                unlink_segments(ctx.rings)  # orphaned: nobody else will (mappings still open stay valid)
            ctx.report(msg.Stats(ctx.name, {**final, **usage()}))
            ctx.report(msg.State(ctx.name, "done", {}))
