"""The stage lifecycle and the process runner every stage runs under.

A stage is a small class: ``open()`` (devices, rings, files), then the loop its
base owns (``Stage`` for stages with inputs, ``Source`` for live sources), which
calls the stage's hooks for each buffer and at the end, then ``close()``. The supervisor starts each in
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
import threading
import traceback
from dataclasses import dataclass, field
from enum import StrEnum
from multiprocessing.connection import Connection, wait
from typing import Any

from pipeline import messages as msg
from pipeline.clock import now_ns
from pipeline.config import StageConfig
from pipeline.errors import FramepipeError
from pipeline.shm import unlink_segments

STATS_INTERVAL_NS = 500_000_000
_REPORT_LOCK = threading.Lock()  # a stage's threads (its outputs) report on the one control pipe
GROUP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # what a terminal or a service manager sends
QUIET_SIGNALS = (*GROUP_SIGNALS, signal.SIGUSR1, signal.SIGUSR2)  # stages ignore these: the supervisor acts


class StageState(StrEnum):
    """A stage's lifecycle, as it reports it (``State`` messages carry the value)."""

    STARTING = "starting"  # spawned, opening its devices (the supervisor's view until the first report)
    READY = "ready"  # open, waiting for Start
    RUNNING = "running"
    DONE = "done"  # closed; its last Stats came before this


@dataclass
class StageContext:
    """What a stage process gets: its name, config and connections (child side)."""

    name: str
    config: Any
    control: Connection  # to and from the supervisor
    inputs: dict[str, Connection] = field(default_factory=dict)  # data in, by input port
    outputs: dict[str, list[Connection]] = field(default_factory=dict)  # data out, by output port (fan-out)
    extra: dict[str, Any] = field(default_factory=dict)  # stage-specific: ring names, outputs, fps
    rings: tuple[str, ...] = ()  # the shared-memory segments this stage maps
    supervisor_pid: int = 0  # our parent while it lives
    ended: bool = False  # end of stream sent downstream
    _last_stats: int = 0

    def report(self, message: msg.Message) -> None:
        """Send a message to the supervisor (any thread); a gone supervisor is ignored (we finish anyway)."""
        with _REPORT_LOCK, contextlib.suppress(BrokenPipeError, OSError):
            self.control.send_bytes(msg.encode(message))

    def warn(self, text: str) -> None:
        self.report(msg.Warning(self.name, text))

    def send(self, port: str, message: msg.Message) -> None:
        """Send on every link of an output port; a stage that has gone raises DownstreamGone."""
        data = msg.encode(message)
        for conn in self.outputs.get(port, ()):
            try:
                conn.send_bytes(data)
            except (BrokenPipeError, ConnectionResetError) as exc:
                raise DownstreamGone(f"the stage after {self.name}.{port}") from exc

    def end_streams(self, end_ns: int = 0) -> None:
        """End of stream on every output port (the last thing a stage sends downstream), once."""
        if self.ended:
            return
        self.ended = True
        for port in self.outputs:
            with contextlib.suppress(DownstreamGone):
                self.send(port, msg.EndOfStream(self.name, end_ns))

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
    """Base of every stage that has inputs: the loop is here, the stage says what one buffer does.

    ``run`` waits on the inputs and the control pipe; control comes first (Stop, Pause, Resume go to
    ``on_stop`` and ``on_control``), each data message goes to ``on_buffer(port, message)``, an
    input's end of stream to ``on_end``; when every input has ended, ``finish`` drains and the base
    sends end of stream downstream. Periodic stats are sent by the base. A fast Stop skips the drain
    (``finish(flush=False)``). Subclasses set ``name`` and override the hooks (GStreamer's base
    transform; the Disruptor's batch processor).
    """

    name = "stage"

    def __init__(self, ctx: StageContext) -> None:
        self.ctx = ctx
        self.base_time = 0
        self.fast = False

    # --- lifecycle ------------------------------------------------------------------------

    @classmethod
    def preload(cls) -> None:
        """Import the libraries ``open()`` needs, touching no device or file (a process started before the
        plan calls it while the plan is made: ``host_stage``); a failure here is left to ``open()``."""

    def open(self) -> dict[str, Any]:
        """Open devices, rings and files; return info for the supervisor."""
        return {}

    def close(self) -> None:
        """Release everything open() took; safe after a partial open()."""

    def stats(self) -> dict[str, Any]:
        """Counters so far."""
        return {}

    # --- hooks the loop calls ----------------------------------------------------------------

    def start(self) -> None:
        """Called once, after Start fixed ``self.base_time``, before the first buffer."""

    def on_buffer(self, port: str, message: msg.Message) -> None:
        """One data message from input ``port``."""

    def on_end(self, port: str, message: msg.EndOfStream) -> None:
        """Input ``port`` ended (``message.end_ns``: the running time it covers up to)."""

    def on_control(self, message: msg.Message) -> None:
        """A control message other than Stop (Pause, Resume); ignored by default."""

    def on_stop(self, message: msg.Stop) -> None:
        """Stop: a stage with inputs waits for its sources' end of stream, unless the stop is fast."""
        self.fast = self.fast or message.fast

    def finish(self, flush: bool = True) -> None:
        """Every input ended (or a fast stop): drain what is held; ``end_ns`` for downstream in ``self.end_ns``."""

    end_ns = 0

    # --- the loop ---------------------------------------------------------------------------

    def run(self, base_time: int) -> None:
        self.base_time = base_time
        self.start()
        ports = {conn: port for port, conn in self.ctx.inputs.items()}
        control: Connection | None = self.ctx.control
        while ports and not self.fast:
            ready = wait([*ports, *([control] if control is not None else [])])
            if control is not None and control in ready and not self._take_control():
                control = None  # the supervisor is gone: drain to end of stream all the same
            for conn in [c for c in ready if c in ports]:
                if self.fast:
                    break
                port = ports[conn]
                try:
                    message = msg.decode(conn.recv_bytes())
                except (EOFError, OSError):
                    self.ctx.warn(f"{port} ended without end of stream; finishing with what came")
                    message = msg.EndOfStream(port)
                if isinstance(message, msg.EndOfStream):
                    del ports[conn]
                    self.on_end(port, message)
                else:
                    self.on_buffer(port, message)
                if control is not None and control.poll() and not self._take_control():
                    control = None  # control first: a Pause sent before a frame was grabbed applies to it
            if self.ctx.stats_due():
                self.ctx.report(msg.Stats(self.name, self.stats()))
        self.finish(flush=not self.fast)
        self.ctx.end_streams(self.end_ns)

    def _take_control(self) -> bool:
        """Handle every waiting control message; False when the supervisor has gone."""
        try:
            while self.ctx.control.poll():
                message = msg.decode(self.ctx.control.recv_bytes())
                if isinstance(message, msg.Stop):
                    self.on_stop(message)
                else:
                    self.on_control(message)
        except (EOFError, OSError):
            return False
        return True


class Source(Stage):
    """Base of a live source (no inputs): the loop calls ``create`` until it says the stream is over.

    A Stop sets ``stop_at`` (running time ns: the one it names, else now) for ``create`` to honour
    on its own grid; a fast stop, or the supervisor gone, ends at once. At the end the base sends
    end of stream with ``end_ns`` (GStreamer's base source).
    """

    stop_at: int | None = None

    def create(self) -> bool:
        """Produce what is due (block until then); False once the stream is over."""
        return False

    def on_stop(self, message: msg.Stop) -> None:
        super().on_stop(message)
        self.stop_at = message.at if message.at and not message.fast else max(0, now_ns() - self.base_time)

    def run(self, base_time: int) -> None:
        self.base_time = base_time
        self.start()
        while not self.fast:
            if not self._take_control():
                self.fast = True  # the supervisor is gone: end now, the file is closed downstream
                break
            if not self.create():
                break
            if self.ctx.stats_due():
                self.ctx.report(msg.Stats(self.name, self.stats()))
        self.finish(flush=not self.fast)
        self.ctx.end_streams(self.end_ns)


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


def host_stage(target: str, control: Connection) -> None:
    """Entry point of a stage process started before its plan (``pipeline.hosts``): import the stage's
    module and its libraries now (``Stage.preload``), then run it with the context that comes down
    ``control`` (none: it was not needed)."""
    for sig in QUIET_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, QUIET_SIGNALS)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    with contextlib.suppress(Exception):  # a failing import is reported by run_stage, in words
        stage_class(target).preload()
    try:
        ctx = control.recv()
    except (EOFError, OSError):
        return
    control.close()
    run_stage(target, ctx)


def run_stage(target: str, ctx: StageContext) -> None:
    """Entry point of a stage process (spawned by the supervisor); ``target`` names the stage class.

    The class is imported here, after placement: only this process loads its libraries (numpy,
    PyAV, PortAudio), and with one OpenBLAS thread unless asked otherwise (no stage does algebra).
    """
    set_process_name(f"fp-{ctx.name}")
    for sig in QUIET_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)  # signals to the whole group: the supervisor decides, we drain
    signal.pthread_sigmask(signal.SIG_UNBLOCK, QUIET_SIGNALS)  # blocked since the spawn; pending ones are dropped
    for text in apply_placement(ctx.config):
        ctx.warn(text)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    try:
        stage = stage_class(target)(ctx)
    except Exception as exc:
        ctx.report(msg.Error(ctx.name, f"cannot load stage {target}: {exc}", fatal=True))
        ctx.report(msg.State(ctx.name, StageState.DONE.value, {}))
        return
    try:
        ctx.report(msg.State(ctx.name, StageState.READY.value, stage.open()))
        base_time = wait_start(ctx)
        if base_time is not None:
            ctx.report(msg.State(ctx.name, StageState.RUNNING.value, {}))
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
        ctx.end_streams()  # after a failure too: downstream finishes in order, not on a closed pipe
        final = stage.stats()
        try:
            stage.close()
        finally:
            if ctx.supervisor_pid and os.getppid() != ctx.supervisor_pid:
                unlink_segments(ctx.rings)  # orphaned: nobody else will (mappings still open stay valid)
            ctx.report(msg.Stats(ctx.name, {**final, **usage()}))
            ctx.report(msg.State(ctx.name, StageState.DONE.value, {}))
