"""One X window from the tests' side: where it is, a screenshot of it, and a window manager's "close".

Called by the tests' process. The place comes from ``xdotool getwindowgeometry``; a screenshot is what the
screen shows there, grabbed with mss and written as PNG (on Xvfb without a window manager: the window
itself, no frame). ``close_window`` sends the WM_DELETE_WINDOW message a window manager sends when its
close button is clicked (Xlib through ctypes; xdotool 3.2016 has no such command).
"""

from __future__ import annotations

import ctypes
import os
import subprocess
from pathlib import Path

from framepipe.proof.xvfb import load_xlib


def window_rect(display: str, window: str) -> tuple[int, int, int, int]:
    """(x, y, width, height) of ``window`` (an X id) on ``display``."""
    done = subprocess.run(["xdotool", "getwindowgeometry", "--shell", window], capture_output=True, text=True,
                          check=True, env={**os.environ, "DISPLAY": display}, timeout=10)  # fmt: skip
    values = dict(line.split("=", 1) for line in done.stdout.split() if "=" in line)
    return int(values["X"]), int(values["Y"]), int(values["WIDTH"]), int(values["HEIGHT"])


def grab_window(display: str, window: str, path: str | os.PathLike[str], margin: int = 0) -> Path:
    """Save what the screen shows of ``window`` (and ``margin`` pixels around it) to ``path`` as PNG."""
    import mss
    from PIL import Image

    x, y, w, h = window_rect(display, window)
    with mss.MSS(display=display) as sct:
        area = {"left": max(0, x - margin), "top": max(0, y - margin), "width": w + 2 * margin,
                "height": h + 2 * margin}  # fmt: skip
        shot = sct.grab(area)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    Image.frombytes("RGB", shot.size, shot.rgb).save(target, optimize=True)
    return target


class _ClientMessage(ctypes.Structure):
    """XClientMessageEvent, padded to the size of an XEvent (24 longs)."""

    _fields_ = [("type", ctypes.c_int), ("serial", ctypes.c_ulong), ("send_event", ctypes.c_int),
                ("display", ctypes.c_void_p), ("window", ctypes.c_ulong), ("message_type", ctypes.c_ulong),
                ("format", ctypes.c_int), ("data", ctypes.c_long * 5), ("pad", ctypes.c_long * 12)]  # fmt: skip


_CLIENT_MESSAGE = 33


def close_window(display: str, window: str) -> None:
    """Ask ``window`` to close as a window manager's close button does (WM_PROTOCOLS / WM_DELETE_WINDOW)."""
    lib = load_xlib()
    lib.XInternAtom.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    lib.XInternAtom.restype = ctypes.c_ulong
    lib.XSendEvent.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
    lib.XFlush.argtypes = [ctypes.c_void_p]
    handle = lib.XOpenDisplay(display.encode())
    if not handle:
        raise OSError(f"cannot open display {display}")
    try:
        event = _ClientMessage(type=_CLIENT_MESSAGE, send_event=1, display=handle, window=int(window), format=32,
                               message_type=lib.XInternAtom(handle, b"WM_PROTOCOLS", 0))  # fmt: skip
        event.data[0] = lib.XInternAtom(handle, b"WM_DELETE_WINDOW", 0)
        lib.XSendEvent(handle, int(window), 0, 0, ctypes.byref(event))
        lib.XFlush(handle)
    finally:
        lib.XCloseDisplay(handle)
