"""A private PulseAudio server with null sinks, as a context manager (tests, benchmarks).

It runs ``pulseaudio --daemonize=no -n`` with only what is asked for: the native protocol on a socket
in its own runtime folder (anonymous auth) and one ``module-null-sink`` per sink, so it touches no
sound card and no other server. As root it runs without ``--system`` (a warning, no harm): its home,
runtime and state folders all point into a temporary folder. Clients reach it through
``PULSE_SERVER`` (``env()``); the monitor of sink ``X`` is the source ``X.monitor``. Nothing else is
loaded, so unloading a sink kills the streams on it (no stream is rescued to another device).

A null sink renders ahead of its clock by the smallest latency its clients ask for, so a client
that joins (the recorder under test) can move a test tone under its player. ``hold_latency_ms``
pins it: a ``parec`` on every sink's monitor asks for that latency from the start.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from pipeline.errors import FramepipeError

#: Seconds to wait for the server to answer.
START_TIMEOUT_S = 10.0
#: Seconds to wait for a terminated server before killing it.
STOP_TIMEOUT_S = 5.0
#: Sample rate of every null sink.
RATE = 48_000
#: Latency (ms) a listener on every sink's monitor asks for, so later clients do not change it.
HOLD_LATENCY_MS = 10


def sink_args(name: str) -> list[str]:
    """A null sink's module arguments: 48 kHz, and no rewinds (a rewind would re-render what the
    monitor already carried, and clients that join would move the test tone under its player)."""
    return [f"sink_name={name}", f"rate={RATE}", "norewinds=1"]


class PulseError(FramepipeError, RuntimeError):
    """The PulseAudio server could not be started or asked; the message says what to do."""


class PulseServer:
    """A PulseAudio server with a null sink for each name in ``sinks`` (the first is the default)."""

    def __init__(
        self,
        sinks: tuple[str, ...] = ("fp_out",),
        hold_latency_ms: int | None = HOLD_LATENCY_MS,
        timeout_s: float = START_TIMEOUT_S,
    ) -> None:
        self.sinks = sinks
        self.hold_latency_ms = hold_latency_ms
        self.timeout_s = timeout_s
        self._holders: list[subprocess.Popen[bytes]] = []
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Path | None = None

    @property
    def server(self) -> str:
        """The ``PULSE_SERVER`` value that reaches this server."""
        if self._dir is None:
            raise PulseError("PulseAudio server is not started")
        return f"unix:{self._dir.name}/native"

    def env(self) -> dict[str, str]:
        """Environment entries for clients (pactl, PortAudio's pulse device, the tone player)."""
        return {"PULSE_SERVER": self.server}

    def start(self) -> PulseServer:
        """Start the server and wait until it answers with every sink loaded."""
        if self._proc is not None:
            return self
        binary = shutil.which("pulseaudio")
        if binary is None or shutil.which("pactl") is None:
            raise PulseError("PulseAudio is not installed; install pulseaudio and pulseaudio-utils")
        self._dir = tempfile.TemporaryDirectory(prefix="framepipe-pulse-")
        home = self._dir.name
        self._log = Path(home) / "pulse.log"
        env = dict(os.environ, HOME=home, XDG_RUNTIME_DIR=home, XDG_CONFIG_HOME=home,
                   PULSE_RUNTIME_PATH=home, PULSE_STATE_PATH=home)  # fmt: skip
        env.pop("PULSE_SERVER", None)
        args = [binary, "--daemonize=no", "--exit-idle-time=-1", "-n", "--use-pid-file=no", "--log-target=stderr",
                "-L", f"module-native-protocol-unix socket={home}/native auth-anonymous=1"]  # fmt: skip
        for sink in self.sinks:
            args += ["-L", " ".join(["module-null-sink", *sink_args(sink)])]
        with open(self._log, "wb") as log:  # the server keeps its own descriptor
            self._proc = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                          start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                why = self._last_line()
                self.stop()
                raise PulseError(f"pulseaudio exited with code {code}: {why}")
            if self._answers():
                if self.sinks:
                    self.pactl("set-default-sink", self.sinks[0])
                for sink in self.sinks:
                    self.hold(sink)
                return self
            time.sleep(0.05)
        self.stop()
        raise PulseError(f"pulseaudio did not answer within {self.timeout_s:g} s")

    def _answers(self) -> bool:
        done = subprocess.run(["pactl", "list", "short", "sinks"], env=dict(os.environ, **self.env()),
                              capture_output=True, text=True, check=False)  # fmt: skip
        names = {line.split("\t")[1] for line in done.stdout.splitlines() if "\t" in line}
        return done.returncode == 0 and set(self.sinks) <= names

    def pactl(self, *args: str) -> str:
        """Run pactl against this server; its output (PulseError if it fails)."""
        done = subprocess.run(["pactl", *args], env=dict(os.environ, **self.env()), capture_output=True, text=True,
                              timeout=10, check=False)  # fmt: skip
        if done.returncode != 0:
            raise PulseError(f"pactl {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    def hold(self, sink: str) -> None:
        """Pin ``sink``'s latency with a listener on its monitor (see the module notes); no-op without a hold."""
        if self.hold_latency_ms is None or shutil.which("parec") is None:
            return
        self._holders.append(subprocess.Popen(
            ["parec", "-d", f"{sink}.monitor", f"--latency-msec={self.hold_latency_ms}"],
            env=dict(os.environ, **self.env()), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ))  # fmt: skip

    def load_sink(self, name: str) -> int:
        """Add a null sink; its module index."""
        return int(self.pactl("load-module", "module-null-sink", *sink_args(name)).strip())

    def unload_sink(self, name: str) -> None:
        """Remove the null sink ``name`` (streams on it and its monitor end)."""
        for line in self.pactl("list", "short", "modules").splitlines():
            index, module, *rest = line.split("\t")
            if module == "module-null-sink" and f"sink_name={name}" in (rest[0] if rest else "").split():
                self.pactl("unload-module", index)
                return
        raise PulseError(f"no null sink {name} to unload")

    def stop(self) -> None:
        """Stop the server: terminate, wait, then kill; remove its folder."""
        for holder in self._holders:
            holder.terminate()
            holder.wait(STOP_TIMEOUT_S)
        self._holders = []
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
            self._proc = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def _last_line(self) -> str:
        """The server's last error line."""
        text = self._log.read_text(errors="replace") if self._log is not None and self._log.exists() else ""
        lines = [line.strip() for line in text.splitlines() if line.startswith("E:")]
        return lines[-1] if lines else "no error line"

    def __enter__(self) -> PulseServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def have_pulseaudio() -> bool:
    """True when the pulseaudio server and pactl are installed."""
    return shutil.which("pulseaudio") is not None and shutil.which("pactl") is not None
