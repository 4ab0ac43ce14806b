"""Screen capture stage (process fp-screen): grab on the clock's deadlines into the ring.

Paced on absolute deadlines ``base_time + k / fps``, never ``sleep(1/fps)``.
Each grab is written once into a staging slot (the "grab" ring) and converted
from there into an I420 ring slot (``stages.video.convert``: 0.375 of BGRA's
memory); without a libswscale to convert with, it is written into a BGRA ring
slot directly and the encoder converts. The slot is announced downstream with a
``Frame`` descriptor. A live source never blocks: when the ring is full the
frame is not grabbed, a drop is counted and the next frame carries DISCONT;
deadlines missed because the process ran late are counted too.

Before the start, every allocated slot is grabbed into once: a page is mapped on
its first write (by the X server, on the zero-copy path), and on a first lap
during the recording that made 1080p grabs 1-2 ms slower and 120 fps captures
miss ticks. The first slots' pages are allocated by the supervisor
(``Ring.allocate``); the ring allocates more, one ahead, as it reaches them.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from pipeline import messages as msg
from pipeline.clock import NS_PER_S, now_ns, sleep_until
from pipeline.config import ScreenConfig
from pipeline.errors import SetupError
from pipeline.ring import FLAG_DISCONT, PIXFMT_BGRA, PIXFMT_I420, Ring, SlotHeader
from pipeline.stage import Source
from stages.video.backend import is_wayland
from stages.video.convert import Converter
from stages.video.grab import Grabber, SourceGone
from stages.video.xshm import MAX_OFFSET, XshmGrabber, XshmUnavailable


def mss_backend(backend: str) -> str:
    """The mss backend name for one of our backend names."""
    return {"mss-xgetimage": "xgetimage", "mss-xlib": "xlib"}.get(backend, "default")


def monitor_rect(monitors: list[dict[str, int]], config: ScreenConfig) -> dict[str, int]:
    """The mss rectangle to grab: the chosen monitor, or a region within it."""
    if config.monitor >= len(monitors):
        raise SetupError(
            f"monitor {config.monitor} does not exist; this display has monitors 1 to {len(monitors) - 1} "
            "(0 is all of them): see `framepipe devices`"
        )
    mon = monitors[config.monitor]
    if not config.region:
        return {k: mon[k] for k in ("left", "top", "width", "height")}
    x, y, w, h = config.region
    if x + w > mon["width"] or y + h > mon["height"]:
        raise SetupError(
            f"region {x},{y},{w},{h} does not fit on monitor {config.monitor} "
            f"({mon['width']}x{mon['height']}): choose a region inside it"
        )
    return {"left": mon["left"] + x, "top": mon["top"] + y, "width": w, "height": h}


def screen_rect(config: ScreenConfig) -> dict[str, int]:
    """Resolve the capture rectangle (supervisor, before rings exist); SetupError without a display. A window
    (``config.window``, an id by now: see ``plan.resolve_window``) is its size at the start, rounded down to even;
    on Wayland the compositor's own buffer size and stride (``stride``) for one capture."""
    if is_wayland(config.backend):
        from stages.video.wayland.outputs import output_rect

        return output_rect(None, config)
    if config.window:
        from stages.video.x11windows import find_window

        w = find_window(config.window)
        if w.width < 16 or w.height < 16:
            raise SetupError(f"window 0x{w.id:x} is {w.width}x{w.height}: too small to record (16x16 at least)")
        return {"left": w.x, "top": w.y, "width": w.width & ~1, "height": w.height & ~1}

    from stages.video.monitors import monitors

    try:
        listed = monitors()
    except XshmUnavailable as exc:
        raise SetupError(f"cannot open the display ({exc}): set DISPLAY, or run under Xvfb") from None
    if listed is not None:
        return monitor_rect(listed, config)
    import mss

    try:
        with mss.MSS(backend=mss_backend(config.backend)) as sct:
            return monitor_rect(list(sct.monitors), config)
    except mss.ScreenShotError as exc:
        raise SetupError(f"cannot open the display ({exc}): set DISPLAY, or run under Xvfb") from None


class XshmRoot:
    """The root window's rectangle, written into the slot by the X server (MIT-SHM with the ring's fd)."""

    def __init__(self, ring: Ring, rect: dict[str, int]) -> None:
        self.ring, self.rect = ring, rect
        self.xshm = XshmGrabber(ring.path)
        self.description = "xshm, zero-copy"

    def grab(self, slot: int) -> bool:
        r = self.rect
        try:
            self.xshm.grab(r["left"], r["top"], r["width"], r["height"], self.ring.pixel_offset(slot))
        except XshmUnavailable as exc:
            raise SourceGone(str(exc)) from None
        return True

    def close(self) -> None:
        self.xshm.close()


def open_window(ring: Ring, window: str, title: str) -> Grabber:
    """A window's own pixmap (Composite + MIT-SHM); no fallback: mss cannot see a covered window."""
    from stages.video.window import WindowGrabber
    from stages.video.x11windows import parse_id

    wid = parse_id(window)
    if wid is None:
        raise SetupError(f"screen.window = {window!r} reached the capture stage unresolved (a planner bug)")
    try:
        return WindowGrabber(ring, wid, title)
    except XshmUnavailable as exc:
        raise SetupError(f"window capture needs a local X server with Composite and MIT-SHM ({exc})") from None


def open_root(ring: Ring, rect: dict[str, int]) -> Grabber:
    """The root grabber that follows a screen resize, else the plain one (no RENDER/Composite libraries)."""
    from stages.video.window import RootGrabber

    try:
        return RootGrabber(ring, rect)
    except XshmUnavailable:
        return XshmRoot(ring, rect)


class MssRoot:
    """The root window's rectangle through mss, copied once into the slot (numpy: only on this path)."""

    def __init__(self, ring: Ring, rect: dict[str, int], backend: str) -> None:
        import mss

        self.ring, self.rect = ring, rect
        self.sct = mss.MSS(backend=mss_backend(backend))
        self.views = [ring.pixels(i) for i in range(ring.slots)]
        self.description = f"mss ({mss_backend(backend)}), one copy"

    def grab(self, slot: int) -> bool:
        shot = self.sct.grab(self.rect)
        view = self.views[slot]
        view[...] = memoryview(shot.raw).cast("B", view.shape)  # the one copy
        return True

    def close(self) -> None:
        self.views = []
        self.sct.close()


class ScreenCapture(Source):
    """Grabs one monitor or region at a fixed rate into the video ring."""

    name = "screen"

    @classmethod
    def preload(cls) -> None:
        import stages.video.window  # noqa: F401  (the root grabber that follows resizes, with its libraries)

    def open(self) -> dict[str, Any]:
        self.config: ScreenConfig = self.ctx.config
        self.ring = Ring.attach(self.ctx.extra["ring"])
        self.converter: Converter | None = None
        self.target = self.ring  # where the grabber writes: the video ring, or the staging slot it is converted from
        if "grab_ring" in self.ctx.extra:
            self.target = Ring.attach(self.ctx.extra["grab_ring"])
        g = self.target.geometry
        if self.config.window:  # its size may change from now on: followed, scaled into the ring's
            self.rect = {"left": 0, "top": 0, "width": g.width, "height": g.height}
        elif "rect" in self.ctx.extra:  # the planner's, moments ago (no second display connection: 30 ms)
            self.rect = dict(self.ctx.extra["rect"])
        else:
            self.rect = screen_rect(self.config)
        if (g.width, g.height) != (self.rect["width"], self.rect["height"]):
            raise SetupError("the screen changed size before recording started: start again")
        self.counts = {
            "captured": 0,
            "held": 0,
            "dropped_ring_full": 0,
            "dropped_late": 0,
            "grab_ms_max": 0.0,
            "ring_peak": 0,
            "recorded_ns": 0,
        }
        self.grab_ns_total = self.convert_ns_total = self.grabbed_at = 0
        self.grabber = self._open_grabber()
        if self.target is not self.ring:
            self.converter = Converter(self.target, self.ring, g.width, g.height)
        for slot in range(self.ring.upfront):  # a first lap before the start: see the module's docstring
            self._fill(slot)
        self.convert_ns_total = 0
        backend = self.grabber.description + (", converted to I420" if self.converter else "")
        return {"rect": self.rect, "backend": backend}

    def _fill(self, slot: int) -> bool:
        """The picture now into ``slot``: grabbed there, or grabbed into the staging slot and converted;
        ``grabbed_at`` is when the grabber returned (the picture was made by then)."""
        if self.converter is None:
            fresh = self.grabber.grab(slot)
            self.grabbed_at = now_ns()
            return fresh
        if not self.grabber.grab(0):
            return False
        t0 = self.grabbed_at = now_ns()
        self.converter.convert(slot)
        self.convert_ns_total += now_ns() - t0
        return True

    def _open_grabber(self) -> Grabber:
        """The zero-copy grabber when asked for (or on auto) and possible; fallbacks are reported."""
        if self.config.window:
            return open_window(self.target, self.config.window, self.ctx.extra.get("window_title", ""))
        if self.config.backend == "screencopy":  # the planner chose it (or was told): no quiet fallback to X11
            from stages.video.wayland.screencopy import ScreencopyGrabber

            return ScreencopyGrabber(self.target, self.config, cursor=self.config.cursor)
        if self.config.backend == "portal":
            from stages.video.wayland.portal import unavailable

            raise SetupError(f"the desktop portal backend is not available here: {unavailable()}")
        if self.config.backend not in ("auto", "xshm", "x11"):
            return MssRoot(self.target, self.rect, self.config.backend)
        why = "needs Linux and X11"
        if sys.platform.startswith("linux") and os.environ.get("DISPLAY"):
            if self.target.pixel_offset(self.target.slots - 1) > MAX_OFFSET:
                why = "the ring is larger than 4 GiB"
            else:
                try:
                    return open_root(self.target, self.rect)
                except XshmUnavailable as exc:
                    why = str(exc)
        self.ctx.warn(f"zero-copy capture unavailable ({why}); grabbing with mss and one copy")
        return MssRoot(self.target, self.rect, "mss")

    def start(self) -> None:
        self.period = NS_PER_S / self.config.fps
        self.tick, self.seq, self.flags = 0, 0, 0

    def create(self) -> bool:
        """Grab the frame due at the next tick of the grid (a full ring: a counted drop)."""
        deadline = self.base_time + round(self.tick * self.period)
        if self._stopped(deadline):
            return False
        late = sleep_until(deadline)
        if self.ctx.control.poll() and not (self._take_control() and not self.fast and not self._stopped(deadline)):
            return False  # a Stop came while we slept (or the supervisor is gone)
        if late >= self.period:  # we slept through whole ticks: count them, keep the grid
            missed = int(late // self.period)
            self.counts["dropped_late"] += missed
            self.tick += missed
            self.seq += missed
            self.flags = FLAG_DISCONT
        slot = self.ring.acquire()
        if slot is None:
            self.counts["dropped_ring_full"] += 1
            self.flags = FLAG_DISCONT
        else:
            t0 = now_ns()
            try:
                fresh = self._fill(slot)
            except SourceGone as exc:  # the window closed, the display went: stop here, in order
                self.ring.cancel()
                self.ctx.warn(str(exc))
                return False
            if fresh:
                self._announce(slot, t0, now_ns() - t0)
            else:  # nothing new (a window unmapped): the timestamper repeats the held frame
                self.ring.cancel()
                self.counts["held"] += 1
        self.seq += 1
        self.tick += 1
        self.counts["recorded_ns"] = round(self.tick * self.period)
        return True

    def _announce(self, slot: int, t0: int, grabbed: int) -> None:
        """Stamp the slot just filled and send its descriptor downstream."""
        shown = getattr(self.grabber, "last_capture_ns", None)  # when the picture was made, if the grabber knows
        capture_ns = (t0 if shown is None else shown) - self.base_time
        window = self.grabbed_at - t0 if shown is None else 0  # made in [t0, returned]; a grabber that knows: 0
        g = self.target.geometry
        pixfmt, stride = (PIXFMT_I420, g.width) if self.converter else (PIXFMT_BGRA, g.stride)
        self.ring.write_header(slot, SlotHeader(self.seq, capture_ns, g.width, g.height, stride, pixfmt, self.flags))
        self.ctx.send("frames", msg.Frame(slot, self.seq, capture_ns, self.flags, window))
        self.counts["captured"] += 1
        self.counts["ring_peak"] = max(self.counts["ring_peak"], self.ring.fill())
        self.grab_ns_total += grabbed
        self.counts["grab_ms_max"] = max(self.counts["grab_ms_max"], grabbed / 1e6)
        self.flags = 0

    def _stopped(self, deadline: int) -> bool:
        return self.stop_at is not None and deadline >= self.base_time + self.stop_at

    def finish(self, flush: bool = True) -> None:
        self.end_ns = round(self.tick * self.period)  # the stream covers every tick up to here

    def stats(self) -> dict[str, Any]:
        if not hasattr(self, "counts"):
            return {}
        captured = self.counts["captured"]
        extra = getattr(getattr(self, "grabber", None), "stats", None)  # a grabber's own counts (screencopy's)
        return {
            **({"grabber": dict(extra)} if extra else {}),
            **self.counts,
            **getattr(getattr(self, "grabber", None), "counts", {}),  # a window's resizes, scaled, unmapped frames
            "grab_ms_mean": self.grab_ns_total / captured / 1e6 if captured else 0.0,  # with the conversion
            "convert_ms_mean": self.convert_ns_total / captured / 1e6 if captured else 0.0,
            "ring_fill": self.ring.fill(),
            "ring_slots": self.ring.slots,
            "ring_allocated": self.ring.allocated,  # the slots that became memory (the ring grows as it needs)
        }

    def close(self) -> None:
        grabber = getattr(self, "grabber", None)
        if grabber is not None:
            grabber.close()
        converter = getattr(self, "converter", None)
        if converter is not None:
            converter.close()
        if hasattr(self, "target") and self.target is not self.ring:
            self.target.close()
        if hasattr(self, "ring"):
            self.ring.close()
