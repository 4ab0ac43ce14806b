"""Which windows there are and which one is meant (supervisor process, before rings exist; no numpy).

``list_windows`` names the shown top-level windows (under a window manager: the client window, the one
with WM_STATE inside its frame); ``find_window`` turns ``--window WHAT`` (an id, a title or class
substring, or ``pick``) into one of them, or one line saying why not; ``pick_window`` lets people click one
(a crosshair pointer grab). Xlib through ctypes; X errors are caught, never Xlib's exit.
"""

from __future__ import annotations

import ctypes
import os
from ctypes import POINTER, Structure, byref, c_char_p, c_int, c_long, c_uint, c_ulong, c_void_p
from dataclasses import dataclass
from typing import Any

from pipeline.errors import Cancelled, SetupError
from stages.video.xshm import load_library


@dataclass(frozen=True)
class WindowInfo:
    """A shown window: id, title, class (WM_CLASS's class part, else its instance), geometry on the root."""

    id: int
    title: str
    cls: str
    x: int
    y: int
    width: int
    height: int

    def line(self) -> str:
        return (f"window 0x{self.id:x}: {self.title!r} class {self.cls!r}, "
                f"{self.width}x{self.height} at {self.x},{self.y}")

    def as_dict(self) -> dict[str, Any]:
        return {"id": f"0x{self.id:x}", "title": self.title, "class": self.cls, "x": self.x, "y": self.y,
                "width": self.width, "height": self.height}  # fmt: skip


class _Attributes(Structure):
    _fields_ = [
        ("x", c_int), ("y", c_int), ("width", c_int), ("height", c_int), ("border_width", c_int),
        ("depth", c_int), ("visual", c_void_p), ("root", c_ulong), ("class_", c_int), ("bit_gravity", c_int),
        ("win_gravity", c_int), ("backing_store", c_int), ("backing_planes", c_ulong), ("backing_pixel", c_ulong),
        ("save_under", c_int), ("colormap", c_ulong), ("map_installed", c_int), ("map_state", c_int),
        ("all_event_masks", c_long), ("your_event_mask", c_long), ("do_not_propagate_mask", c_long),
        ("override_redirect", c_int), ("screen", c_void_p),
    ]  # fmt: skip


class _ErrorEvent(Structure):
    _fields_ = [("type", c_int), ("display", c_void_p), ("resourceid", c_ulong), ("serial", c_ulong),
                ("error_code", ctypes.c_ubyte), ("request_code", ctypes.c_ubyte), ("minor_code", ctypes.c_ubyte)]


_HANDLER = ctypes.CFUNCTYPE(c_int, c_void_p, POINTER(_ErrorEvent))
IS_VIEWABLE, BUTTON_PRESS, BUTTON_RELEASE, KEY_PRESS = 2, 4, 5, 2
XC_CROSSHAIR, XK_ESCAPE = 34, 0xFF1B


class Display:
    """An Xlib connection for looking windows up; X errors are counted, not fatal."""

    def __init__(self, name: str | None = None) -> None:
        name = name or os.environ.get("DISPLAY")
        if not name:
            raise SetupError("no X display: set DISPLAY (window capture and --select need one)")
        self.lib = _xlib()
        self.errors = 0
        self._handler = _HANDLER(self._on_error)  # kept: Xlib calls it later
        self.lib.XSetErrorHandler(self._handler)
        self.dpy = self.lib.XOpenDisplay(name.encode())
        if not self.dpy:
            raise SetupError(f"cannot open the X display {name}: check DISPLAY, or run under Xvfb")
        self.root = self.lib.XDefaultRootWindow(self.dpy)
        self._atoms: dict[str, int] = {}

    def _on_error(self, dpy: Any, event: Any) -> int:
        self.errors += 1
        return 0

    def atom(self, name: str) -> int:
        if name not in self._atoms:
            self._atoms[name] = self.lib.XInternAtom(self.dpy, name.encode(), 0)
        return self._atoms[name]

    def prop(self, window: int, name: str) -> bytes | None:
        """The window's property ``name`` as bytes (8-bit and 32-bit formats), or None."""
        actual, fmt, n, after, data = c_ulong(), c_int(), c_ulong(), c_ulong(), c_void_p()
        status = self.lib.XGetWindowProperty(self.dpy, window, self.atom(name), 0, 4096, 0, 0, byref(actual),
                                             byref(fmt), byref(n), byref(after), byref(data))  # fmt: skip
        if status != 0 or not data:
            return None
        size = {8: 1, 16: ctypes.sizeof(ctypes.c_short), 32: ctypes.sizeof(c_long)}.get(fmt.value, 1)
        value = ctypes.string_at(data, n.value * size)
        self.lib.XFree(data)
        return value if actual.value else None

    def attributes(self, window: int) -> _Attributes | None:
        attrs = _Attributes()
        before = self.errors
        ok = self.lib.XGetWindowAttributes(self.dpy, window, byref(attrs))
        return attrs if ok and self.errors == before else None

    def children(self, window: int) -> list[int]:
        """Children bottom to top (stacking order)."""
        root, parent, kids, n = c_ulong(), c_ulong(), POINTER(c_ulong)(), c_uint()
        if not self.lib.XQueryTree(self.dpy, window, byref(root), byref(parent), byref(kids), byref(n)):
            return []
        out = [kids[i] for i in range(n.value)]
        if kids:
            self.lib.XFree(kids)
        return out

    def client(self, window: int, depth: int = 0) -> int | None:
        """The window itself or the first descendant with WM_STATE (a window manager's client in its frame)."""
        if self.prop(window, "WM_STATE") is not None:
            return window
        if depth < 4:
            for child in self.children(window):
                found = self.client(child, depth + 1)
                if found is not None:
                    return found
        return None

    def info(self, window: int) -> WindowInfo | None:
        attrs = self.attributes(window)
        if attrs is None:
            return None
        title = self.prop(window, "_NET_WM_NAME") or self.prop(window, "WM_NAME") or b""
        parts = (self.prop(window, "WM_CLASS") or b"").split(b"\0")
        cls = parts[1] if len(parts) > 1 and parts[1] else parts[0]
        x, y, child = c_int(), c_int(), c_ulong()
        self.lib.XTranslateCoordinates(self.dpy, window, self.root, 0, 0, byref(x), byref(y), byref(child))
        return WindowInfo(window, title.decode(errors="replace"), cls.decode(errors="replace"), x.value, y.value,
                          attrs.width, attrs.height)  # fmt: skip

    def shown(self) -> list[WindowInfo]:
        """The shown top-level windows, bottom to top; under a window manager, the client in each frame."""
        out = []
        for top in self.children(self.root):
            attrs = self.attributes(top)
            if attrs is None or attrs.map_state != IS_VIEWABLE or attrs.class_ != 1:  # 1: InputOutput
                continue
            info = self.info(self.client(top) or top)
            if info is not None:
                out.append(info)
        return out

    def close(self) -> None:
        if self.dpy:
            self.lib.XCloseDisplay(self.dpy)
            self.dpy = None

    def __enter__(self) -> Display:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _xlib() -> ctypes.CDLL:
    lib = load_library("X11")
    if lib is None:
        raise SetupError("cannot load libX11: install libx11-6")
    vp, ul, i = c_void_p, c_ulong, c_int
    sig: dict[str, tuple[list[Any], Any]] = {
        "XOpenDisplay": ([c_char_p], vp), "XCloseDisplay": ([vp], i), "XSetErrorHandler": ([_HANDLER], vp),
        "XDefaultRootWindow": ([vp], ul), "XInternAtom": ([vp, c_char_p, i], ul), "XFree": ([vp], i),
        "XGetWindowProperty": ([vp, ul, ul, c_long, c_long, i, ul, vp, vp, vp, vp, vp], i),
        "XGetWindowAttributes": ([vp, ul, vp], i),
        "XQueryTree": ([vp, ul, vp, vp, vp, vp], i),
        "XTranslateCoordinates": ([vp, ul, ul, i, i, vp, vp, vp], i),
        "XCreateFontCursor": ([vp, c_uint], ul), "XFreeCursor": ([vp, ul], i),
        "XGrabPointer": ([vp, ul, i, c_uint, i, i, ul, ul, ul], i), "XUngrabPointer": ([vp, ul], i),
        "XGrabKeyboard": ([vp, ul, i, i, i, ul], i), "XUngrabKeyboard": ([vp, ul], i),
        "XNextEvent": ([vp, vp], i), "XLookupKeysym": ([vp, i], ul), "XSync": ([vp, i], i),
    }  # fmt: skip
    for fname, (args, res) in sig.items():
        func = getattr(lib, fname)
        func.argtypes, func.restype = args, res
    return lib


def list_windows(display: str | None = None) -> list[WindowInfo]:
    """The shown windows, top of the stack first."""
    with Display(display) as d:
        return d.shown()[::-1]


def parse_id(text: str) -> int | None:
    """A window id written as 0x... or in decimal, else None."""
    t = text.strip().lower()
    try:
        return int(t, 16) if t.startswith("0x") else int(t) if t.isdigit() else None
    except ValueError:
        return None


def find_window(what: str, display: str | None = None) -> WindowInfo:
    """The one window ``what`` names: an id, ``pick`` (click it), or a title or class substring
    (case-insensitive); SetupError when none or several match (several: listed)."""
    if what == "pick":
        return pick_window(display)
    with Display(display) as d:
        wid = parse_id(what)
        if wid is not None:
            info = d.info(wid)
            if info is None:
                raise SetupError(f"there is no window {what}: see `framepipe devices` for the windows shown")
            return info
        key = what.lower()
        found = [w for w in d.shown()[::-1] if key in w.title.lower() or key in w.cls.lower()]
    if not found:
        raise SetupError(f"no shown window has {what!r} in its title or class: see `framepipe devices`, "
                         "or pass --window pick and click it")  # fmt: skip
    if len(found) > 1:
        names = "; ".join(f"0x{w.id:x} {w.title!r} ({w.cls})" for w in found[:8])
        more = f" and {len(found) - 8} more" if len(found) > 8 else ""
        raise SetupError(f"{len(found)} windows match {what!r}: {names}{more}; pass one of the ids with --window")
    return found[0]


def pick_window(display: str | None = None) -> WindowInfo:
    """A crosshair until people click a window (its client window under a frame); Esc: Cancelled."""
    with Display(display) as d:
        lib = d.lib
        cursor = lib.XCreateFontCursor(d.dpy, XC_CROSSHAIR)
        mask = (1 << 2) | (1 << 3)  # ButtonPress, ButtonRelease
        if lib.XGrabPointer(d.dpy, d.root, 0, mask, 1, 1, 0, cursor, 0) != 0:
            raise SetupError("cannot take the pointer to pick a window (another program holds it, or there "
                             "is no pointer device): pass --window ID instead")  # fmt: skip
        lib.XGrabKeyboard(d.dpy, d.root, 0, 1, 1, 0)
        event = (ctypes.c_char * 192)()
        chosen = 0
        try:
            while True:
                lib.XNextEvent(d.dpy, event)
                kind = ctypes.c_int.from_buffer(event).value
                if kind == KEY_PRESS and lib.XLookupKeysym(event, 0) == XK_ESCAPE:
                    raise Cancelled("cancelled: no window picked, nothing recorded")
                if kind == BUTTON_PRESS:
                    chosen = ctypes.c_ulong.from_buffer(event, 48).value  # XButtonEvent.subwindow
                if kind == BUTTON_RELEASE:
                    break
        finally:
            lib.XUngrabPointer(d.dpy, 0)
            lib.XUngrabKeyboard(d.dpy, 0)
            lib.XFreeCursor(d.dpy, cursor)
            lib.XSync(d.dpy, 0)
        info = d.info(d.client(chosen) or chosen) if chosen else None
    if info is None:
        raise SetupError("no window was clicked (the click was on the desktop): pass --window pick again")
    return info
