"""Choose what to record with the mouse (supervisor process, before planning): ``record --select``.

A full-screen overlay (Tk, standard library) shows a dimmed screenshot of every monitor. A drag selects an
area (the rectangle and its size drawn while dragging), a click without a drag the whole monitor under the
pointer, Esc cancels (``Cancelled``: `record` exits 1, nothing written); the recording starts on release.
``--select window`` outlines the window under the pointer and a click chooses it (then recorded as
``--window``). The area is rounded down to even sizes for the encoder.

``select(mode)`` returns a ``Selection``; ``select_into(config, mode)`` the pipeline config that records
it. A GUI (the recording bar) runs ``framepipe record ... --select [window]`` and gets the same.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from pipeline.config import PipelineConfig
from pipeline.errors import Cancelled, SetupError
from stages.video.x11windows import WindowInfo

CLICK_PX = 4  # a press and release closer than this is a click, not a drag
MIN_SIZE = 16  # the smallest area the screen stage records
DIM = bytes(v * 45 // 100 for v in range(256))  # the screenshot behind the overlay, dimmed
TITLE = "framepipe select"  # the overlay's window title (tests wait for it)


@dataclass(frozen=True)
class Selection:
    """What was chosen: an area of monitor 0's space (all monitors), a whole monitor, or a window."""

    region: tuple[int, int, int, int] | None = None  # x, y, width, height, relative to monitor 0
    monitor: int | None = None  # an mss monitor number (1 the first)
    window: WindowInfo | None = None

    def line(self) -> str:
        if self.window is not None:
            return f"selected {self.window.line()}"
        if self.monitor is not None:
            return f"selected monitor {self.monitor}"
        x, y, w, h = self.region or (0, 0, 0, 0)
        return f"selected {w}x{h} at {x},{y}"


def area(press: tuple[int, int], release: tuple[int, int], monitors: list[dict[str, int]]) -> Selection:
    """The selection a press and a release make (monitor-0 coordinates): a drag's rectangle, clamped to the
    screen and rounded down to even sizes, or for a click the monitor under it."""
    (x0, y0), (x1, y1) = press, release
    if abs(x1 - x0) < CLICK_PX and abs(y1 - y0) < CLICK_PX:
        for i, m in enumerate(monitors[1:], start=1):
            if m["left"] <= monitors[0]["left"] + x0 < m["left"] + m["width"] and \
                    m["top"] <= monitors[0]["top"] + y0 < m["top"] + m["height"]:  # fmt: skip
                return Selection(monitor=i)
        return Selection(monitor=1)
    all_w, all_h = monitors[0]["width"], monitors[0]["height"]
    left, top = max(0, min(x0, x1)), max(0, min(y0, y1))
    right, bottom = min(all_w, max(x0, x1)), min(all_h, max(y0, y1))
    w, h = (right - left) & ~1, (bottom - top) & ~1
    if w < MIN_SIZE or h < MIN_SIZE:
        raise SetupError(f"the area dragged ({w}x{h}) is too small to record: drag at least {MIN_SIZE}x{MIN_SIZE}")
    return Selection(region=(left, top, w, h))


def window_at(windows: list[WindowInfo], x: int, y: int) -> WindowInfo | None:
    """The topmost of ``windows`` (listed bottom to top) under x, y (root coordinates)."""
    for w in reversed(windows):
        if w.x <= x < w.x + w.width and w.y <= y < w.y + w.height:
            return w
    return None


def _screenshot(monitor: dict[str, int]) -> bytes:
    """Monitor 0 as a dimmed binary PPM (no numpy: slices and a byte table)."""
    import mss

    with mss.MSS() as sct:
        shot = sct.grab(monitor)
    raw, w, h = shot.raw, shot.width, shot.height
    rgb = bytearray(w * h * 3)
    rgb[0::3], rgb[1::3], rgb[2::3] = raw[2::4], raw[1::4], raw[0::4]
    return b"P6 %d %d 255\n" % (w, h) + bytes(rgb).translate(DIM)


def select(mode: str = "area") -> Selection:
    """Show the overlay until people choose (``mode`` area or window); Cancelled on Esc, SetupError when
    there is no display or the pointer cannot be taken."""
    import mss

    try:
        with mss.MSS() as sct:
            monitors = [dict(m) for m in sct.monitors]
    except mss.ScreenShotError as exc:
        raise SetupError(f"--select needs a display ({exc}): set DISPLAY, or give --region or --window") from None
    windows: list[WindowInfo] = []
    if mode == "window":
        from stages.video.x11windows import Display

        with Display() as d:
            windows = d.shown()
    return _Overlay(monitors, windows, mode).run()


class _Overlay:
    """The Tk overlay over monitor 0, and what a press, a motion and a release do on it."""

    def __init__(self, monitors: list[dict[str, int]], windows: list[WindowInfo], mode: str) -> None:
        import tkinter as tk

        self.monitors, self.windows, self.mode = monitors, windows, mode
        self.all = monitors[0]
        self.result: Selection | None = None
        self.error: SetupError | None = None
        self.press: tuple[int, int] | None = None
        try:
            self.tk = tk.Tk(className="framepipe-select")
        except tk.TclError as exc:
            raise SetupError(f"--select cannot open a window ({exc}): give --region or --window") from None
        self.tk.title(TITLE)
        self.tk.overrideredirect(True)
        m = self.all
        self.tk.geometry(f"{m['width']}x{m['height']}+{m['left']}+{m['top']}")
        self.photo = tk.PhotoImage(master=self.tk, data=_screenshot(m), format="ppm")
        self.canvas = tk.Canvas(self.tk, width=m["width"], height=m["height"], highlightthickness=0,
                                cursor="crosshair")  # fmt: skip
        self.canvas.pack()
        self.canvas.create_image(0, 0, image=self.photo, anchor="nw")
        hint = "click a window to record it; Esc cancels" if mode == "window" else \
            "drag an area to record (a click: the whole monitor); Esc cancels"  # fmt: skip
        self.canvas.create_text(m["width"] // 2, 24, text=hint, fill="white", font=("TkDefaultFont", 14))
        self.box = self.canvas.create_rectangle(0, 0, 0, 0, outline="#4aa3ff", width=2, state="hidden")
        self.label = self.canvas.create_text(0, 0, text="", fill="white", anchor="sw", font=("TkDefaultFont", 12),
                                             state="hidden")  # fmt: skip
        self.tk.bind("<Escape>", self._cancel)
        self.canvas.bind("<ButtonPress-1>", self._press)
        self.canvas.bind("<B1-Motion>", self._drag)
        self.canvas.bind("<Motion>", self._hover)
        self.canvas.bind("<ButtonRelease-1>", self._release)

    def run(self) -> Selection:
        import tkinter as tk

        try:
            self.tk.update()  # mapped now (no window manager), or soon: wait for it then
            if not self.tk.winfo_viewable():
                self.tk.wait_visibility()
            self.tk.focus_force()
            try:
                self.tk.grab_set_global()  # the pointer and keyboard are ours until a choice (or Esc)
            except tk.TclError as exc:
                raise SetupError(f"--select cannot take the pointer ({exc}): another program holds it, or there is "
                                 "no pointer device; give --region or --window") from None
            self.tk.mainloop()
        finally:
            self._close()
        if self.error is not None:
            raise self.error
        if self.result is None:
            raise Cancelled("selection cancelled: nothing recorded")
        return self.result

    def _close(self) -> None:
        try:
            self.tk.grab_release()
            self.tk.withdraw()
            self.tk.update()  # the overlay is off the screen before the recording's first grab
            self.tk.destroy()
        except tkinter_error():  # already gone
            pass

    def _show(self, x0: int, y0: int, x1: int, y1: int, text: str) -> None:
        self.canvas.coords(self.box, x0, y0, x1, y1)
        self.canvas.coords(self.label, min(x0, x1) + 4, max(min(y0, y1) - 4, 18))
        self.canvas.itemconfigure(self.label, text=text, state="normal")
        self.canvas.itemconfigure(self.box, state="normal")

    def _cancel(self, _event: Any) -> None:
        self.result = None
        self.tk.quit()

    def _press(self, event: Any) -> None:
        self.press = (event.x, event.y)

    def _drag(self, event: Any) -> None:
        if self.press is None or self.mode == "window":
            return
        x0, y0 = self.press
        w, h = abs(event.x - x0) & ~1, abs(event.y - y0) & ~1
        self._show(x0, y0, event.x, event.y, f"{w} x {h}")

    def _hover(self, event: Any) -> None:
        if self.mode != "window":
            return
        w = window_at(self.windows, event.x + self.all["left"], event.y + self.all["top"])
        if w is None:
            self.canvas.itemconfigure(self.box, state="hidden")
            self.canvas.itemconfigure(self.label, state="hidden")
            return
        x, y = w.x - self.all["left"], w.y - self.all["top"]
        self._show(x, y, x + w.width, y + w.height, f"{w.title or w.cls or hex(w.id)}  {w.width} x {w.height}")

    def _release(self, event: Any) -> None:
        if self.press is None:
            return
        if self.mode == "window":
            w = window_at(self.windows, event.x + self.all["left"], event.y + self.all["top"])
            if w is None:
                return  # the desktop: keep waiting for a window (or Esc)
            self.result = Selection(window=w)
        else:
            try:
                self.result = area(self.press, (event.x, event.y), self.monitors)
            except SetupError as exc:  # a Tk callback cannot raise through mainloop: kept for run()
                self.error = exc
        self.tk.quit()


def tkinter_error() -> type[Exception]:
    import tkinter

    return tkinter.TclError


def select_into(config: PipelineConfig, mode: str) -> PipelineConfig:
    """``config`` recording what people choose now on the overlay; one line on stderr says what."""
    import sys

    chosen = select(mode)
    print(f"framepipe: {chosen.line()}", file=sys.stderr)
    screen = config.screen
    if chosen.window is not None:
        screen = replace(screen, window=f"{chosen.window.id:#x}", region=())
    elif chosen.monitor is not None:
        screen = replace(screen, monitor=chosen.monitor, region=(), window="")
    else:
        screen = replace(screen, monitor=0, region=chosen.region or (), window="")
    return replace(config, screen=screen)
