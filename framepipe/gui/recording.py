"""The bar's recording controller: runs ``framepipe record`` in a session of its own and steers it.

The bar's process calls ``Controller.start``/``attach``/``toggle_pause``/``stop``/``cancel`` from Tk's
thread; one worker thread does everything that may block (the control socket, waiting for the files
to close) and publishes ``Snapshot``\\ s that Tk reads with ``latest()``. The recording is a client-less
``framepipe record`` like any other (``framepipe ctl`` sees and steers it): if the bar crashes or is
killed, it goes on; a new bar attaches to it.

Not ``framepipe.api.Recorder``: its ``start()`` waits (30 s at most) until the recording says
"recording", while an area or window chosen on the recorder's overlay waits on the person.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from pipeline.config import AudioConfig
from pipeline.control import ControlError, request, running
from pipeline.shm import pid_alive

POLL_S = 0.2  # status is asked this often while recording
STATUS_TIMEOUT_S = 2.0
STOP_TIMEOUT_S = 90.0


class Phase(StrEnum):
    IDLE = "idle"  # nothing recorded yet in this bar
    STARTING = "starting"  # the recorder runs but does not record yet (loading, or its overlay is up)
    RECORDING = "recording"
    PAUSED = "paused"
    STOPPING = "stopping"  # stop asked; the files are closing
    SAVED = "saved"  # the recording ended; ``path`` holds it
    FAILED = "failed"  # it ended without a file; ``message`` says why


CALL_SOURCES = AudioConfig().sources  # the microphone and the sound of the computer


@dataclass(frozen=True)
class Choice:
    """What to record, as the bar's menus say it."""

    output: Path
    target: str = "screen"  # "screen", "area" (dragged on the recorder's overlay) or "window" (clicked)
    monitor: int = 1
    sources: tuple[str, ...] = ()  # audio sources for --audio; none: --no-audio


@dataclass(frozen=True)
class Snapshot:
    """The recording as the bar shows it."""

    phase: Phase = Phase.IDLE
    pid: int | None = None
    target: str = "screen"
    recorded_s: float = 0.0
    dropped: int = 0
    path: str = ""
    message: str = ""  # a failure's one line, or what the recorder warned
    status: dict[str, Any] = field(default_factory=dict)  # the last `ctl status` answer


def record_argv(choice: Choice) -> list[str]:
    """The recorder's command line for ``choice``."""
    argv = [sys.executable, "-m", "framepipe", "record", os.fspath(choice.output), "--quiet"]
    if choice.target == "area":
        argv.append("--select")
    elif choice.target == "window":
        argv += ["--select", "window"]
    else:
        argv += ["--monitor", str(choice.monitor)]
    if choice.sources == CALL_SOURCES:  # the recorder's default: either left out, in one line, where missing
        return argv
    for source in choice.sources:
        argv += ["--audio", source]
    return argv + ([] if choice.sources else ["--no-audio"])


def last_line(log: Path) -> str:
    """The log's last non-empty line: the recorder's one-line error."""
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    return next((line.strip() for line in reversed(lines) if line.strip()), "")


class Controller:
    """One recording at a time, started here or found running (``attach``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshot = Snapshot()
        self._commands: queue.Queue[str] = queue.Queue()
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Path | None = None
        self._thread: threading.Thread | None = None

    # --- Tk's thread ---------------------------------------------------------------------------

    def latest(self) -> Snapshot:
        with self._lock:
            return self._snapshot

    @property
    def busy(self) -> bool:
        """A recording is starting, running or closing."""
        return self.latest().phase in (Phase.STARTING, Phase.RECORDING, Phase.PAUSED, Phase.STOPPING)

    def start(self, choice: Choice) -> None:
        """Spawn the recorder (in its own session: the bar's end is not its end) and watch it."""
        if self.busy:
            return
        fd, name = tempfile.mkstemp(prefix="framepipe-gui-", suffix=".log")
        self._log = Path(name)
        with os.fdopen(fd, "wb") as log:
            self._proc = subprocess.Popen(record_argv(choice), stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
        self._publish(Snapshot(Phase.STARTING, self._proc.pid, choice.target, path=os.fspath(choice.output)))
        self._watch(self._proc.pid)

    def attach(self) -> bool:
        """Watch the one recording already running (a bar that was closed or crashed started it); False if none."""
        try:
            pids = running()
        except ControlError:
            return False
        if len(pids) != 1 or self.busy:
            return False
        self._proc = None
        self._publish(Snapshot(Phase.STARTING, pids[0]))
        self._watch(pids[0])
        return True

    def toggle_pause(self) -> None:
        if self.latest().phase in (Phase.RECORDING, Phase.PAUSED):
            self._commands.put("toggle-pause")

    def stop(self) -> None:
        if self.latest().phase in (Phase.RECORDING, Phase.PAUSED, Phase.STARTING):
            self._commands.put("stop")

    def cancel(self) -> None:
        """Esc while the recorder still waits (its overlay, or loading): end it; nothing is recorded."""
        snap = self.latest()
        if snap.phase is Phase.STARTING and snap.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(snap.pid, signal.SIGTERM)

    def wait(self, timeout: float | None = None) -> None:
        """Until the watched recording ended (the bar closing after a stop)."""
        if self._thread is not None:
            self._thread.join(timeout)

    # --- the worker thread ---------------------------------------------------------------------

    def _publish(self, snapshot: Snapshot) -> None:
        with self._lock:
            self._snapshot = snapshot

    def _watch(self, pid: int) -> None:
        self._commands = queue.Queue()
        self._thread = threading.Thread(target=self._run, args=(pid, self._commands), name="fp-gui-watch",
                                        daemon=True)  # fmt: skip
        self._thread.start()

    def _alive(self, pid: int) -> bool:
        if self._proc is not None and self._proc.pid == pid:
            return self._proc.poll() is None
        return pid_alive(pid)

    def _run(self, pid: int, commands: queue.Queue[str]) -> None:
        while self._alive(pid):
            try:
                verb = commands.get(timeout=POLL_S)
            except queue.Empty:
                verb = "status"
            if verb == "stop":
                self._publish(replace(self.latest(), phase=Phase.STOPPING))
            try:
                answer = request(verb, pid=pid, timeout_s=STOP_TIMEOUT_S if verb == "stop" else STATUS_TIMEOUT_S)
            except ControlError as exc:
                if verb == "stop" and self.latest().phase is Phase.STOPPING and self._alive(pid):
                    with contextlib.suppress(ProcessLookupError):  # not listening yet: a SIGTERM stops it cleanly
                        os.kill(pid, signal.SIGTERM)
                if verb != "status":
                    self._publish(replace(self.latest(), message=str(exc)))
                continue
            if verb == "status":
                self._take_status(answer)
            elif verb == "toggle-pause":
                state = answer.get("state")
                self._publish(replace(self.latest(), phase=Phase.PAUSED if state == "paused" else Phase.RECORDING))
        self._ended(pid)

    def _take_status(self, status: dict[str, Any]) -> None:
        snap = self.latest()
        state = status.get("state")
        phase = {"recording": Phase.RECORDING, "paused": Phase.PAUSED}.get(str(state), snap.phase)
        if snap.phase is Phase.STOPPING:
            phase = Phase.STOPPING
        outputs = status.get("outputs") or []
        self._publish(replace(
            snap, phase=phase, recorded_s=float(status.get("recorded_s", 0.0)),
            dropped=int(status.get("frames", {}).get("dropped", 0)),
            path=str(outputs[0]) if outputs else snap.path, status=status,
        ))  # fmt: skip

    def _ended(self, pid: int) -> None:
        snap = self.latest()
        code = self._proc.wait() if self._proc is not None and self._proc.pid == pid else None
        line = last_line(self._log) if self._log is not None and self._proc is not None else ""
        saved = bool(snap.path) and Path(snap.path).is_file() and Path(snap.path).stat().st_size > 0
        if saved and (snap.phase is not Phase.STARTING or code == 0):  # a stop from elsewhere may beat our poll
            self._publish(replace(snap, phase=Phase.SAVED, message=line if code else ""))
        else:
            self._publish(replace(snap, phase=Phase.FAILED, message=line or "the recording ended before it started"))
        if self._log is not None and not code:
            self._log.unlink(missing_ok=True)
