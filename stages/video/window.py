"""Grabbers that follow what they record as it changes (process fp-screen): one window through Composite,
or the whole root window across a screen resize (xrandr).

A window is redirected (Composite, automatic: the server still shows it as before) and its own pixmap is
named, so a window covered by others is grabbed as it looks, and a move costs nothing (the pixmap is the
window's, wherever it is). The X server copies the pixmap into the ring slot through MIT-SHM. On a resize
the output keeps its size: the new picture is scaled in the server with RENDER (a Picture of the pixmap
with a transform, composited into a fixed-size pixmap that ShmGetImage then copies into the slot),
centred, aspect kept, black bars; counted as ``resizes`` and ``scaled_frames``. Unmapped or minimized:
nothing new (the held frame is repeated, counted). Closed: ``SourceGone``, the recording stops in order.
"""

from __future__ import annotations

from typing import Any

from pipeline.clock import NS_PER_S, now_ns
from pipeline.ring import Ring
from stages.video.grab import SourceGone
from stages.video.xcbext import (
    BAD_DRAWABLE,
    BAD_WINDOW,
    CONFIGURE_NOTIFY,
    DESTROY_NOTIFY,
    MAP_NOTIFY,
    UNMAP_NOTIFY,
    X_ERROR,
    Scaler,
    Xext,
)  # fmt: skip
from stages.video.xshm import GONE, XshmGrabber, XshmUnavailable

KEEPS = "the recording stops here and keeps what was captured"


class _Followed:
    """What both grabbers share: one connection, the output size, the counts, a scaler when sizes differ."""

    def __init__(self, ring: Ring) -> None:
        self.ring = ring
        g = ring.geometry
        self.out = (g.width, g.height)
        self.xshm = XshmGrabber(ring.path)
        try:
            self.ext = Xext(self.xshm)
        except BaseException:
            self.xshm.close()
            raise
        self.scaler: Scaler | None = None
        self.counts: dict[str, Any] = {"resizes": 0, "scaled_frames": 0}

    def _scale(self, source: int, depth: int, rect: tuple[int, int, int, int], inferiors: bool = False) -> None:
        self._drop_scaler()
        if not self.ext.has_render:
            raise SourceGone(f"what is recorded changed size and this X server has no RENDER to scale it; {KEEPS}")
        self.scaler = Scaler(self.ext, source, depth, rect, self.out, inferiors)

    def _drop_scaler(self) -> None:
        if self.scaler is not None:
            self.scaler.close()
            self.scaler = None

    def _copy(self, drawable: int, x: int, y: int, slot: int) -> int:
        """The X server copies ``drawable`` (or its scaled picture) into the slot; 0 or the X error code."""
        if self.scaler is not None:
            self.scaler.composite()
            drawable, x, y = self.scaler.pixmap, 0, 0
        code = self.xshm.get_image(drawable, x, y, self.out[0], self.out[1], self.ring.pixel_offset(slot))
        if code == -1:
            raise SourceGone(GONE)
        if code == 0 and self.scaler is not None:
            self.counts["scaled_frames"] += 1
        return code

    def close(self) -> None:
        self._drop_scaler()
        self.xshm.close()


class WindowGrabber(_Followed):
    """One window's own pixmap into the slot, followed through moves, resizes, unmaps and its closing."""

    def __init__(self, ring: Ring, window: int, title: str = "") -> None:
        super().__init__(ring)
        self.window, self.pixmap, self.stale = window, 0, True
        self.name = f"the window 0x{window:x}" + (f" ({title!r})" if title else "")
        self.counts["unmapped_frames"] = 0
        try:
            if not self.ext.composite:
                raise XshmUnavailable("the X server has no Composite extension (0.2 or later)")
            if self.ext.select_structure(window) or self.ext.redirect(window):
                raise SourceGone(f"{self.name} closed before the recording started")
            geo = self.ext.geometry(window)
            if geo is None:
                raise SourceGone(f"{self.name} closed before the recording started")
            self.size = (geo.width, geo.height)
            self.mapped = bool(self.ext.viewable(window))
        except BaseException:
            self.close()
            raise
        self.description = "window, composite + xshm, zero-copy" + (", render scaling" if self.ext.has_render else "")

    def _gone(self, why: str = "closed") -> SourceGone:
        return SourceGone(f"{self.name} {why}: {KEEPS}")

    def _events(self) -> None:
        for ev in self.ext.events():
            if ev.kind == X_ERROR:
                if ev.error in (BAD_WINDOW, BAD_DRAWABLE) and ev.window in (self.window, self.pixmap):
                    raise self._gone()
            elif ev.window != self.window:
                continue
            elif ev.kind == DESTROY_NOTIFY:
                raise self._gone()
            elif ev.kind == UNMAP_NOTIFY:
                self.mapped = False
            elif ev.kind == MAP_NOTIFY:
                self.mapped, self.stale = True, True  # a mapped window gets a new pixmap
            elif ev.kind == CONFIGURE_NOTIFY and (ev.width, ev.height) != self.size:
                self.counts["resizes"] += 1
                self.stale = True

    def _rename(self) -> bool:
        """Name the window's current pixmap and decide how it reaches the slot; False: not shown now."""
        if self.pixmap:
            self.ext.free_pixmap(self.pixmap)
            self.pixmap = 0
        self._drop_scaler()
        geo = self.ext.geometry(self.window)
        if geo is None:
            raise self._gone()
        pixmap, code = self.ext.name_pixmap(self.window)
        if code:
            if code == BAD_WINDOW:
                raise self._gone()
            return False  # BadMatch: not viewable (unmapped, or an ancestor is)
        self.pixmap, self.size, self.border, self.stale = pixmap, (geo.width, geo.height), geo.border, False
        if (geo.width & ~1, geo.height & ~1) != self.out:
            self._scale(pixmap, geo.depth, (geo.border, geo.border, geo.width, geo.height))
        return True

    def grab(self, slot: int) -> bool:
        self._events()
        if not self.mapped or (self.stale and not self._rename()):
            self.counts["unmapped_frames"] += 1
            return False
        code = self._copy(self.pixmap, self.border, self.border, slot)
        if code:
            if self.ext.geometry(self.window) is None:
                raise self._gone()
            self.stale = True  # the pixmap went with a resize or unmap we have not read yet
            self.counts["unmapped_frames"] += 1
            return False
        return True

    def close(self) -> None:
        if getattr(self, "pixmap", 0) and self.xshm._conn:
            self.ext.free_pixmap(self.pixmap)
            self.pixmap = 0
        super().close()  # disconnecting ends our redirection too


class RootGrabber(_Followed):
    """A rectangle of the root window; when the screen changes size (xrandr, a monitor plugged in) a whole-screen
    recording scales the new screen into its size, and a part of the screen goes on while it is still on it."""

    CHECK_NS = NS_PER_S // 2  # how often the root's size is asked for, beside its ConfigureNotify

    def __init__(self, ring: Ring, rect: dict[str, int]) -> None:
        super().__init__(ring)
        self.rect = rect
        self.root = self.xshm.root
        self.size = (self.xshm.width, self.xshm.height)
        self.whole = (rect["left"], rect["top"]) == (0, 0) and (self.size[0] & ~1, self.size[1] & ~1) == self.out
        self.ext.select_structure(self.root)
        self.checked_ns = now_ns()
        self.description = "xshm, zero-copy" + (", follows resizes (render)" if self.ext.has_render else "")

    def _resized(self) -> tuple[int, int] | None:
        size = None
        for ev in self.ext.events():
            if ev.kind == CONFIGURE_NOTIFY and ev.window == self.root:
                size = (ev.width, ev.height)
        now = now_ns()
        if size is None and now - self.checked_ns > self.CHECK_NS:
            self.checked_ns = now
            geo = self.ext.geometry(self.root)
            size = (geo.width, geo.height) if geo is not None else None
        return size if size is not None and size != self.size else None

    def _follow(self, size: tuple[int, int]) -> None:
        self.counts["resizes"] += 1
        self.size = size
        self._drop_scaler()
        r = self.rect
        if self.whole and (size[0] & ~1, size[1] & ~1) != self.out:
            self._scale(self.root, self.xshm.depth, (0, 0, size[0], size[1]), inferiors=True)
        elif not self.whole and (r["left"] + r["width"] > size[0] or r["top"] + r["height"] > size[1]):
            raise SourceGone(f"the screen changed size to {size[0]}x{size[1]} and the recorded area "
                             f"{r['width']}x{r['height']} at {r['left']},{r['top']} is no longer on it; {KEEPS}")

    def grab(self, slot: int) -> bool:
        size = self._resized()
        if size is not None:
            self._follow(size)
        r = self.rect
        code = self._copy(self.root, r["left"], r["top"], slot)
        if code:  # the screen shrank under us before its event came: look now
            geo = self.ext.geometry(self.root)
            if geo is None or (geo.width, geo.height) == self.size:
                raise SourceGone(f"the X server refused to copy the screen (X error {code}); {KEEPS}")
            self._follow((geo.width, geo.height))
            return False
        return True
