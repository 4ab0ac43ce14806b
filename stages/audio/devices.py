"""Audio inputs by name (process fp-audio, or a short-lived probe for ``framepipe devices``).

sounddevice is imported only in these processes (PortAudio initialises at import and does not
survive a fork), with its ALSA probing chatter kept off stderr. A source is named ``default``
(the default input), ``system`` (what the machine plays: on Linux the monitor of the default
PulseAudio/PipeWire sink, opened through ALSA's ``pulse`` device with ``PULSE_SOURCE``),
``pulse:NAME`` (any PulseAudio source), a PortAudio device index, or a device or PulseAudio
source name.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import SetupError

PULSE_DEVICE = "pulse"  # ALSA's PulseAudio plugin, as PortAudio lists it
DEFAULT_MONITOR = "@DEFAULT_MONITOR@"  # PulseAudio's name for the default sink's monitor
PROBE_TIMEOUT_S = 20.0
LOOPBACK_HINTS = {
    "darwin": "macOS has no system-audio input of its own: install a loopback device such as BlackHole, "
    "send the output to it, and pass --audio 'BlackHole 2ch'",
    "win32": "on Windows choose a loopback input from `framepipe devices` ('Stereo Mix', or a WASAPI "
    "loopback device) and pass --audio NAME",
}


class NoDefaultInput(SetupError):
    """There is no default audio input on this machine."""


@dataclass(frozen=True)
class DeviceChoice:
    """How to open one source (fp-audio)."""

    source: str  # as people named it; also the track's name
    device: int  # PortAudio device index
    label: str  # what it is, for people
    channels: int  # input channels the device has
    rate: float  # its default sample rate
    env: dict[str, str] = field(default_factory=dict)  # set while opening (PULSE_SOURCE)


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Keep C libraries' chatter (ALSA probing, PortAudio asserts) off this process's stderr."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class LibraryChatter:
    """The audio process's C-level stderr, kept out of the terminal for the stage's life: PortAudio's and
    ALSA's own lines (``Expression '...' failed`` when a device goes away) are counted and the last ones
    kept for the stats; the stage says what happened in words instead (fp-audio)."""

    KEEP = 20  # last lines kept

    def __init__(self) -> None:
        sys.stderr.flush()
        self.lines: deque[str] = deque(maxlen=self.KEEP)
        self.count = 0
        self._saved = os.dup(2)
        read, write = os.pipe()
        os.dup2(write, 2)
        os.close(write)
        self._thread = threading.Thread(target=self._read, args=(read,), name="fp-audio-stderr", daemon=True)
        self._thread.start()

    def _read(self, fd: int) -> None:
        with open(fd, "rb", buffering=0) as pipe:
            for raw in iter(pipe.readline, b""):
                text = raw.decode("utf-8", "replace").strip()
                if text:
                    self.count += 1
                    self.lines.append(text[:200])

    def stats(self) -> dict[str, Any]:
        return {"library_lines": self.count, "library_last": list(self.lines)}

    def close(self) -> None:
        """Put stderr back (the reader ends when the pipe's last writer is gone)."""
        sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._thread.join(1.0)


def portaudio() -> Any:
    """The sounddevice module (imports and initialises PortAudio on first use); SetupError without it."""
    try:
        with quiet_stderr():
            import sounddevice
    except OSError as exc:
        raise SetupError(f"PortAudio is not available ({exc}): install libportaudio2") from None
    return sounddevice


def pulse_sources() -> list[dict[str, Any]]:
    """PulseAudio sources (pactl), or [] without pactl or a server."""
    if shutil.which("pactl") is None:
        return []
    try:
        done = subprocess.run(["pactl", "-f", "json", "list", "sources"], capture_output=True, text=True,
                              timeout=5, check=False)  # fmt: skip
        rows = json.loads(done.stdout) if done.returncode == 0 else []
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return []
    return [{"name": r.get("name", ""), "description": r.get("description", ""),
             "monitor_of": r.get("monitor_source") or None} for r in rows]  # fmt: skip


def list_inputs() -> dict[str, Any]:
    """Audio inputs: PortAudio's, and PulseAudio's sources (run in an audio process)."""
    sd = portaudio()
    with quiet_stderr():
        devices = sd.query_devices()
        apis = sd.query_hostapis()
        default_in = sd.default.device[0]
    inputs = [
        {"index": i, "name": d["name"], "hostapi": apis[d["hostapi"]]["name"], "channels": d["max_input_channels"],
         "rate": d["default_samplerate"], "default": i == default_in}
        for i, d in enumerate(devices) if d["max_input_channels"] > 0
    ]  # fmt: skip
    return {"inputs": inputs, "pulse_sources": pulse_sources()}


def _child(conn: Any, name: str, args: tuple[Any, ...]) -> None:
    """Body of ``in_audio_process``: run a function of this module, send back its result or its error."""
    try:
        conn.send(("ok", globals()[name](*args)))
    except SetupError as exc:
        conn.send(("setup", str(exc)))
    except Exception as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))


def in_audio_process(name: str, *args: Any) -> Any:
    """Run ``name(*args)``, a function of this module, in a fresh process (so the caller never loads
    PortAudio); its result, or its SetupError raised here (supervisor, CLI)."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, name, args), name="fp-audio-probe", daemon=True)
    proc.start()
    child.close()
    try:
        if not parent.poll(PROBE_TIMEOUT_S):
            raise SetupError("asking PortAudio for audio inputs took too long: is the sound server hanging?")
        kind, value = parent.recv()
    except EOFError:
        raise SetupError("asking PortAudio for audio inputs failed: the probe process died") from None
    finally:
        proc.join(1)
        if proc.is_alive():
            proc.kill()
    if kind != "ok":
        raise SetupError(value)
    return value


def probe_inputs() -> dict[str, Any]:
    """``list_inputs`` in a fresh process (``framepipe devices``, tune)."""
    result: dict[str, Any] = in_audio_process("list_inputs")
    return result


def pulse_answers() -> bool:
    """Whether a PulseAudio server (or PipeWire's) answers on its Unix socket (no PortAudio, no process);
    a TCP server is taken as answering (the stage finds out)."""
    server = os.environ.get("PULSE_SERVER", "")
    if server and not server.startswith(("unix:", "/")):
        return True
    path = server.removeprefix("unix:") or os.path.join(
        os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}", "pulse", "native")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        try:
            sock.connect(path)
        except OSError:
            return False
    return True


def check_sources(sources: tuple[str, ...], missing: str = "fail") -> list[str]:
    """Resolve every source (in an audio process); SetupError for a wrong one, warnings for a missing default
    (and for any missing source when ``missing`` is "leave-out": the stage leaves it out and says so)."""
    warnings = []
    for source in sources:
        try:
            resolve(source)
        except SetupError as exc:
            if not isinstance(exc, NoDefaultInput) and missing == "fail":
                raise
            warnings.append(str(exc))
    return warnings


def _input_devices(sd: Any) -> list[tuple[int, dict[str, Any]]]:
    with quiet_stderr():
        return [(i, d) for i, d in enumerate(sd.query_devices()) if d["max_input_channels"] > 0]


def _choice(source: str, index: int, d: dict[str, Any], label: str, env: dict[str, str] | None = None) -> DeviceChoice:
    return DeviceChoice(source, index, label, int(d["max_input_channels"]), float(d["default_samplerate"]), env or {})


def _pulse(sd: Any, source: str, pulse_name: str) -> DeviceChoice:
    for index, d in _input_devices(sd):
        if d["name"] == PULSE_DEVICE:
            return _choice(source, index, d, f"PulseAudio source {pulse_name}", {"PULSE_SOURCE": pulse_name})
    raise SetupError(
        f"audio source {source!r} needs PulseAudio (or PipeWire's pulse server) and ALSA's pulse plugin "
        "(libasound2-plugins), and none answers here"
    )


def resolve(source: str) -> DeviceChoice:
    """The device for a source name (fp-audio); SetupError (NoDefaultInput for ``default``) if none."""
    sd = portaudio()
    inputs = _input_devices(sd)
    if source == "default":
        with quiet_stderr():
            index = sd.default.device[0]
        if index is None or index < 0:
            raise NoDefaultInput("no default audio input")
        return _choice(source, index, sd.query_devices(index), "default input")
    if source == "system":
        if sys.platform in LOOPBACK_HINTS:
            raise SetupError(LOOPBACK_HINTS[sys.platform])
        return _pulse(sd, source, DEFAULT_MONITOR)
    if source.startswith("pulse:"):
        return _pulse(sd, source, source.removeprefix("pulse:"))
    if source.isdigit():
        for index, d in inputs:
            if index == int(source):
                return _choice(source, index, d, d["name"])
        raise SetupError(f"audio device {source} is not an input: see `framepipe devices`")
    exact = [(i, d) for i, d in inputs if d["name"] == source]
    partial = exact or [(i, d) for i, d in inputs if source.lower() in d["name"].lower()]
    if len(partial) == 1:
        return _choice(source, partial[0][0], partial[0][1], partial[0][1]["name"])
    if len(partial) > 1:
        names = ", ".join(repr(d["name"]) for _, d in partial)
        raise SetupError(f"audio source {source!r} matches several inputs ({names}): give the whole name or index")
    if any(s["name"] == source for s in pulse_sources()):
        return _pulse(sd, source, source)
    raise SetupError(
        f"unknown audio source {source!r}: use default, system, pulse:NAME, or an input from `framepipe devices`"
    )
