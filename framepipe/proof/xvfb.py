"""A virtual X screen: one Xvfb server on a free display number, as a context manager.

Readiness is checked without x11-utils: the lock file must name our server's pid and
``XOpenDisplay`` (libX11 through ctypes) must succeed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO

from pipeline.errors import FramepipeError
from pipeline.shm import pid_alive

#: First display number tried; numbers below are left to people's own servers.
FIRST_DISPLAY = 90
#: How many display numbers are tried before giving up.
DISPLAY_TRIES = 100
#: Seconds to wait for one server to accept connections.
START_TIMEOUT_S = 10.0
#: Seconds to wait for a terminated server before killing it.
STOP_TIMEOUT_S = 5.0

_SOCKET_DIR = Path("/tmp/.X11-unix")


class XvfbError(FramepipeError, RuntimeError):
    """The virtual screen could not be started; the message says what to do."""


class XvfbNotInstalled(XvfbError):
    """The ``Xvfb`` binary is not on PATH."""


_xlib: ctypes.CDLL | None = None


def load_xlib() -> ctypes.CDLL:
    """libX11 through ctypes, loaded once, with XOpenDisplay/XCloseDisplay typed."""
    global _xlib
    if _xlib is None:
        name = ctypes.util.find_library("X11") or "libX11.so.6"
        try:
            lib = ctypes.CDLL(name)
        except OSError as exc:
            raise XvfbError(f"cannot load libX11 ({exc}); install libx11-6") from exc
        lib.XOpenDisplay.argtypes = [ctypes.c_char_p]
        lib.XOpenDisplay.restype = ctypes.c_void_p
        lib.XCloseDisplay.argtypes = [ctypes.c_void_p]
        lib.XCloseDisplay.restype = ctypes.c_int
        _xlib = lib
    return _xlib


def can_connect(display: str) -> bool:
    """True if an X client can open ``display`` now."""
    lib = load_xlib()
    handle = lib.XOpenDisplay(display.encode())
    if not handle:
        return False
    lib.XCloseDisplay(handle)
    return True


def _lock_path(number: int) -> Path:
    return Path(f"/tmp/.X{number}-lock")


def _lock_pid(number: int) -> int | None:
    """The pid written in display ``number``'s lock file, or None if absent or unreadable."""
    try:
        return int(_lock_path(number).read_text().strip())
    except (OSError, ValueError):
        return None


def display_in_use(number: int) -> bool:
    """True if display ``number`` seems taken (a live lock, or a socket without a lock)."""
    lock = _lock_path(number)
    if lock.exists():
        pid = _lock_pid(number)
        return pid is None or pid_alive(pid)
    return (_SOCKET_DIR / f"X{number}").exists()


class VirtualScreen:
    """An Xvfb server of ``width`` x ``height`` x 24 on the first free display from ``first_display``."""

    def __init__(self, width: int = 1920, height: int = 1080, first_display: int = FIRST_DISPLAY,
                 timeout_s: float = START_TIMEOUT_S) -> None:
        self.width = width
        self.height = height
        self.first_display = first_display
        self.timeout_s = timeout_s
        self.number: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def display(self) -> str:
        """The X display name, e.g. ``":91"``."""
        if self.number is None:
            raise XvfbError("virtual screen is not started")
        return f":{self.number}"

    @property
    def pid(self) -> int | None:
        """The Xvfb server's pid while it runs."""
        return self._proc.pid if self._proc is not None else None

    def start(self) -> VirtualScreen:
        """Start the server and wait until it accepts connections."""
        if self._proc is not None:
            return self
        binary = shutil.which("Xvfb")
        if binary is None:
            raise XvfbNotInstalled("Xvfb is not installed; install the xvfb package (apt-get install xvfb)")
        load_xlib()
        last_error = "no free display number"
        for number in range(self.first_display, self.first_display + DISPLAY_TRIES):
            if display_in_use(number):
                continue
            error = self._try_start(binary, number)
            if error is None:
                return self
            last_error = error
        raise XvfbError(f"could not start Xvfb: {last_error}")

    def _try_start(self, binary: str, number: int) -> str | None:
        """Start Xvfb on ``number``; None when ready, else why it failed."""
        args = [binary, f":{number}", "-screen", "0", f"{self.width}x{self.height}x24",
                "-nolisten", "tcp", "-noreset"]
        with tempfile.TemporaryFile() as log:
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    start_new_session=True)
            deadline = time.monotonic() + self.timeout_s
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    return f"Xvfb :{number} exited with code {proc.returncode}: {_last_line(log)}"
                if (_lock_pid(number) == proc.pid and (_SOCKET_DIR / f"X{number}").exists()
                        and can_connect(f":{number}")):
                    self._proc, self.number = proc, number
                    return None
                time.sleep(0.02)
            stop_process(proc)
            return f"Xvfb :{number} did not accept connections within {self.timeout_s:g} s"

    def stop(self) -> None:
        """Stop the server: terminate, wait, then kill."""
        if self._proc is not None:
            stop_process(self._proc)
            self._proc = None

    def __enter__(self) -> VirtualScreen:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _last_line(log: IO[bytes]) -> str:
    """The server's fatal error line if it printed one, else its last meaningful line."""
    log.seek(0)
    lines = [line.replace("(EE)", "").strip() for line in log.read().decode(errors="replace").splitlines()]
    lines = [line for line in lines if line]
    for i, line in enumerate(lines[:-1]):
        if line.startswith("Fatal server error"):
            return lines[i + 1]
    return lines[-1] if lines else "no output"
