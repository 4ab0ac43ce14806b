"""The supervisor (process framepipe): starts stages, forwards control, gathers stats.

It creates the rings, hands each stage its context (to a process started before the plan,
``pipeline.hosts``, or a new one: ``spawn``, no fork of X, PortAudio or x264 state), waits until the
awaited ones are ready, fixes ``base_time`` and starts them; audio joins when it is ready.
Stop goes to the sources only: their end of stream flows down the data
path, so the timestamper and encoder drain and the file is closed in order.
SIGINT/SIGTERM start that clean stop; a second one forces a fast stop that
still closes the file. A stage that dies is reported in one line; the others
finish (its pipes close, downstream sees end of stream).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from pipeline import messages as msg
from pipeline.clock import NS_PER_S, now_ns
from pipeline.errors import StageError
from pipeline.graph import RingSpec, StageSpec
from pipeline.hosts import StageHosts, start_quietly
from pipeline.ring import Ring, ring_bytes, upfront_bytes
from pipeline.shm import check_free, segment_name, sweep_stale
from pipeline.stage import GROUP_SIGNALS, StageContext, StageState, run_stage, set_process_name
from pipeline.steering import STEER_SIGNALS, Steering

START_LEAD_NS = 25_000_000  # base time lies this far after the go, so every stage starts on time (a stage
# wakes from its control pipe within a few ms; a late one counts the ticks it missed)
READY_TIMEOUT_S = 30.0
DRAIN_TIMEOUT_S = 15.0  # after Stop: how long the stages may drain before a fast stop
KILL_TIMEOUT_S = 5.0  # after a fast stop: how long before stages are killed
SAMPLE_INTERVAL_NS = 500_000_000  # how often stage memory and CPU are sampled
PUMP_S = 0.25  # longest wait for a message before the supervisor looks at the clock again


@dataclass
class StageRecord:
    """What the supervisor knows of one running stage."""

    spec: StageSpec
    process: Any
    control: Connection
    state: str = StageState.STARTING.value
    info: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    stats_ns: int = 0  # when its last stats came (the clock's ns): rates are taken between these
    started: bool = False  # Start was sent
    peak_private_mb: float = 0.0
    cpu_s: float = 0.0
    exitcode: int | None = None


@dataclass
class Outcome:
    """What happened, for the summary and the stats file."""

    base_time: int = 0
    started_ns: int = 0
    stopped_ns: int = 0
    stages: dict[str, StageRecord] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    swept: list[str] = field(default_factory=list)
    shm_bytes: int = 0
    fast_stop: bool = False


def private_rss_mb(pid: int) -> float:
    """Resident memory of a process without its shared-memory pages (the rings)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            fields_ = dict(line.split(":", 1) for line in f if line.startswith("Rss"))
        return (int(fields_["RssAnon"].split()[0]) + int(fields_["RssFile"].split()[0])) / 1024
    except (OSError, KeyError, ValueError):
        import psutil  # not on the start's path: 17 ms

        try:
            return float(psutil.Process(pid).memory_info().rss) / 2**20
        except psutil.Error:
            return 0.0


class Supervisor:
    """Runs one pipeline plan to the end (main process)."""

    def __init__(
        self,
        stages: list[StageSpec],
        rings: list[RingSpec],
        duration_s: float | None = None,
        on_tick: Callable[[Supervisor], None] | None = None,
        on_message: Callable[[str], None] | None = None,
        grid_ns: int = 1,
        status_of: Callable[[Supervisor], dict[str, Any]] | None = None,
        period_ns: float = 0.0,
        outputs: tuple[str, ...] = (),
        listen: bool = True,
        replay: bool = False,
        hosts: StageHosts | None = None,
    ) -> None:
        self.specs = stages
        self.ring_specs = rings
        self.duration_s = duration_s
        self.grid_ns = grid_ns  # base time falls on a multiple of this (one frame): runs line up on the clock
        self.on_tick = on_tick
        self.on_message = on_message or (lambda line: print(line, file=sys.stderr))
        self.outcome = Outcome()
        self.signals = 0
        self.rings: list[Ring] = []
        self._sampled_ns = 0
        self._wake: socket.socket | None = None
        self.status_of = status_of or (lambda sup: {})
        self.period_ns = period_ns or float(grid_ns)
        self.outputs = list(outputs)  # what the recording writes (for the control plane's answers)
        self.listen = listen
        self.replay = replay
        self.steering: Steering | None = None
        self.hosts = hosts  # stage processes already started (pipeline.hosts); the rest are spawned

    # --- the whole run ----------------------------------------------------------------

    def run(self) -> Outcome:
        set_process_name("framepipe")
        self.outcome.swept = sweep_stale()
        if self.outcome.swept:
            self.on_message(f"framepipe: removed {len(self.outcome.swept)} shared-memory segment(s) left by a crash")
        check_free(sum(upfront_bytes(r.geometry, r.slots) for r in self.ring_specs))  # the rest as they grow
        self.outcome.shm_bytes = sum(ring_bytes(r.geometry, r.slots) for r in self.ring_specs)
        try:
            self.steering = Steering(self, self.status_of, self.period_ns, self.listen, self.replay)
        except OSError as exc:  # ControlError too: a folder not ours, a path too long; record all the same
            self.on_message(f"framepipe: warning: no control socket ({exc}); `framepipe ctl` cannot reach this "
                            "recording (Ctrl+C still stops it)")  # fmt: skip
            self.steering = Steering(self, self.status_of, self.period_ns, False, self.replay)
        previous = {s: signal.signal(s, self._on_signal) for s in (*GROUP_SIGNALS, *STEER_SIGNALS)}
        wake_r, wake_w = socket.socketpair()  # a signal wakes the message loop at once
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        previous_wakeup = signal.set_wakeup_fd(wake_w.fileno())
        self._wake = wake_r
        try:
            extra = {r.key: self._create_ring(r) for r in self.ring_specs}
            for ring in self.rings:  # before any stage (or the X server, for it) writes a page
                ring.allocate()
            self._spawn(extra)
            if self.hosts is not None:
                self.hosts.close()  # what the plan did not need
            self._wait_ready()
            base = -(-(now_ns() + START_LEAD_NS) // self.grid_ns) * self.grid_ns
            self.outcome.base_time = base
            for record in self.outcome.stages.values():
                if record.state == StageState.READY:
                    self._go(record)
            self.steering.started()
            self._watch(base)
        finally:
            self._shutdown()
            self.steering.finish(self.outputs, ok=not self.outcome.errors, error="; ".join(self.outcome.errors[:3]))
            signal.set_wakeup_fd(previous_wakeup)
            wake_r.close()
            wake_w.close()
            for s, handler in previous.items():
                signal.signal(s, handler)
        return self.outcome

    def _go(self, record: StageRecord) -> None:
        """Start a ready stage on the base time (a late one, such as audio, joins the running recording)."""
        record.started = True
        self._send(record, msg.Start(self.outcome.base_time))
        if self.duration_s and record.spec.source:  # sources stop on the exact frame; ours is a backstop
            self._send(record, msg.Stop(at=int(self.duration_s * NS_PER_S)))
        elif self.outcome.stopped_ns and record.spec.source:  # the recording is already stopping
            self._send(record, msg.Stop())

    def _on_signal(self, signum: int, frame: Any) -> None:
        if signum in STEER_SIGNALS:
            if self.steering is not None:
                self.steering.on_signal(signum)
            return
        self.signals += 1

    def broadcast(self, message: msg.Message) -> None:
        """A control message to every live stage (Pause, Resume)."""
        for record in self._live():
            self._send(record, message)

    def _create_ring(self, spec: RingSpec) -> str:
        name = segment_name(spec.key)
        self.rings.append(Ring.create(name, spec.geometry, spec.slots))
        return name

    def _spawn(self, ring_names: dict[str, str]) -> None:
        ctx = mp.get_context("spawn")
        pipes: dict[tuple[str, str, str], tuple[Connection, Connection]] = {}  # (upstream, out port, stage.in port)
        for spec in self.specs:
            for upstream, out_port, in_port in spec.links():
                pipes[(upstream, out_port, f"{spec.name}.{in_port}")] = ctx.Pipe(duplex=False)
        for spec in reversed(self.specs):  # downstream first: it is ready when data comes
            parent, child = ctx.Pipe()
            outputs: dict[str, list[Connection]] = {}
            for (upstream, out_port, _), (_, writer) in pipes.items():
                if upstream == spec.name:
                    outputs.setdefault(out_port, []).append(writer)
            sctx = StageContext(
                spec.name,
                spec.config,
                child,
                inputs={port: pipes[(up, out, f"{spec.name}.{port}")][0] for up, out, port in spec.links()},
                outputs=outputs,
                extra={**spec.extra, **{key: ring_names[ring] for key, ring in spec.rings.items()}},
                rings=tuple(ring_names[ring] for ring in spec.rings.values()),
                supervisor_pid=os.getpid(),
            )
            host = self.hosts.take(spec.stage) if self.hosts is not None else None
            if host is not None:  # started before the plan, its libraries imported: it gets its context now
                process = host.process
                host.control.send(sctx)
                host.control.close()
            else:
                process = ctx.Process(target=run_stage, args=(spec.stage, sctx), name=f"fp-{spec.name}",
                                      daemon=False)  # fmt: skip
                start_quietly(process)
            child.close()
            self.outcome.stages[spec.name] = StageRecord(spec, process, parent)
        for reader, writer in pipes.values():  # only the stages hold data pipes: EOF means a stage ended
            reader.close()
            writer.close()

    def _wait_ready(self) -> None:
        """Until every awaited stage is ready (audio is not: it joins the running recording when it is)."""
        deadline = now_ns() + int(READY_TIMEOUT_S * NS_PER_S)
        while any(r.state == StageState.STARTING and r.spec.awaited for r in self.outcome.stages.values()):
            self._pump(0.2)
            if self.on_tick:
                self.on_tick(self)
            if self.outcome.errors:
                raise StageError(self.outcome.errors[0])
            if self.signals or (self.steering is not None and self.steering.stop_requested):
                raise StageError("stopped before recording started")
            if now_ns() > deadline:
                slow = [n for n, r in self.outcome.stages.items() if r.state == StageState.STARTING]
                raise StageError(f"stage(s) {', '.join(slow)} did not start within {READY_TIMEOUT_S:.0f} s")

    def _watch(self, base: int) -> None:
        """Record until the duration, a signal, or the end of every stage."""
        stop_at = base + int((self.duration_s + 0.5) * NS_PER_S) if self.duration_s else None
        stopping_since: int | None = None
        fast_since: int | None = None
        while any(r.exitcode is None for r in self.outcome.stages.values()):
            self._pump(PUMP_S)
            now = now_ns()
            steering = self.steering
            asked = steering is not None and steering.stop_requested
            due = (stop_at is not None and now >= stop_at) or self.signals > 0 or asked or self._source_failed()
            if due and stopping_since is None:
                stopping_since = now
                if steering is not None:
                    steering.stopping()
                self.outcome.stopped_ns = now
                for record in self._live(source=True):
                    self._send(record, msg.Stop())
            drain_over = stopping_since is not None and now - stopping_since > DRAIN_TIMEOUT_S * NS_PER_S
            if (self.signals > 1 or drain_over) and fast_since is None:
                fast_since = now
                self.outcome.fast_stop = True
                for record in self._live():
                    self._send(record, msg.Stop(fast=True))
            if fast_since is not None and now - fast_since > KILL_TIMEOUT_S * NS_PER_S:
                for record in self._live():
                    self.outcome.errors.append(f"{record.spec.name} did not stop; killed it")
                    record.process.kill()
                fast_since = now
            if self.on_tick:
                self.on_tick(self)
        if self.outcome.stopped_ns == 0:
            self.outcome.stopped_ns = now_ns()

    def _source_failed(self) -> bool:
        """An essential stage ended on its own (one downstream died, a window closed): stop the sources."""
        return any(r.exitcode is not None and r.spec.essential for r in self.outcome.stages.values())

    def _live(self, source: bool = False) -> list[StageRecord]:
        return [r for r in self.outcome.stages.values() if r.exitcode is None and (r.spec.source or not source)]

    # --- messages and processes ----------------------------------------------------------

    def _pump(self, timeout: float) -> None:
        """Handle every control message and process exit that arrives within ``timeout``."""
        records = {r.control: r for r in self.outcome.stages.values() if not r.control.closed}
        sentinels = {r.process.sentinel: r for r in self.outcome.stages.values() if r.exitcode is None}
        wake = [self._wake] if self._wake is not None else []
        steering = self.steering.waitables() if self.steering is not None else []
        readies = wait([*records, *sentinels, *wake, *steering], timeout)
        if self.steering is not None:
            self.steering.ready([r for r in readies if r in steering])
            self.steering.tick()
        for ready in readies:
            if ready is self._wake:
                with contextlib.suppress(OSError):
                    self._wake.recv(64)  # the signal handler already counted it
            elif ready in records:
                self._receive(records[ready])
            elif ready in sentinels:
                self._exited(sentinels[ready])
        now = now_ns()
        if self.outcome.base_time and now - self._sampled_ns >= SAMPLE_INTERVAL_NS:  # from the start on
            self._sampled_ns = now
            for record in self.outcome.stages.values():
                if record.exitcode is None:
                    self._sample(record)

    def _sample(self, record: StageRecord) -> None:
        """Peak private memory and CPU so far of a live stage (a stage killed -9 reports nothing itself)."""
        import psutil  # here, not on the start's path (17 ms)

        record.peak_private_mb = max(record.peak_private_mb, private_rss_mb(record.process.pid))
        try:
            cpu = psutil.Process(record.process.pid).cpu_times()
            record.cpu_s = max(record.cpu_s, cpu.user + cpu.system)
        except psutil.Error:
            pass

    def _receive(self, record: StageRecord) -> None:
        try:
            while record.control.poll():
                self._handle(record, msg.decode(record.control.recv_bytes()))
        except (EOFError, OSError):
            record.control.close()

    def _handle(self, record: StageRecord, message: msg.Message) -> None:
        name = record.spec.name
        if isinstance(message, msg.State):
            record.state = message.state
            record.info.update(message.info)
            if message.state == StageState.READY and self.outcome.base_time and not record.started:
                self._go(record)
        elif isinstance(message, msg.Stats):
            record.stats.update(message.values)
            record.stats_ns = now_ns()
        elif isinstance(message, msg.Warning):
            self.outcome.warnings.append(f"{name}: {message.text}")
            self.on_message(f"framepipe: warning: {name}: {message.text}")
        elif isinstance(message, msg.Saved) and self.steering is not None:
            self.steering.saved(message)
        elif isinstance(message, msg.Error):
            self.outcome.errors.append(f"{name}: {message.text}")
            if self.outcome.base_time:  # before the start it is raised, and said once (a camera that does not answer)
                self.on_message(f"framepipe: error in {name}: {message.text}")

    def _exited(self, record: StageRecord) -> None:
        self._receive(record)  # its last words
        record.process.join(1)
        record.exitcode = record.process.exitcode if record.process.exitcode is not None else -1
        if record.state != StageState.DONE or record.exitcode != 0:
            how = f"signal {-record.exitcode}" if record.exitcode < 0 else f"exit status {record.exitcode}"
            text = f"stage {record.spec.name} died ({how})"
            self.outcome.errors.append(text)
            self.on_message(f"framepipe: {text}; the other stages finish and keep what was recorded")

    def _send(self, record: StageRecord, message: msg.Message) -> None:
        with contextlib.suppress(OSError, ValueError):  # it is gone; its exit is handled on its own
            record.control.send_bytes(msg.encode(message))

    def _shutdown(self) -> None:
        """Make sure no stage outlives us, then unmap and unlink every ring."""
        for record in self.outcome.stages.values():
            if record.process.is_alive():
                self._send(record, msg.Stop(fast=True))
        for record in self.outcome.stages.values():
            record.process.join(KILL_TIMEOUT_S)
            if record.process.is_alive():
                record.process.kill()
                record.process.join()
            if record.exitcode is None:
                record.exitcode = record.process.exitcode
            if not record.control.closed:
                self._receive(record)
                record.control.close()
        for ring in self.rings:
            ring.close()
        self.rings = []
