"""Zero-copy Wayland grabs: the compositor writes each frame straight into a ring slot (process fp-screen).

wlroots' screencopy (sway, Hyprland, river, Wayfire, labwc) copies an output, or a region of it, into a
client's wl_buffer. The wl_shm pool is made from the ring's own shared-memory file (its fd passed with
SCM_RIGHTS), one wl_buffer per slot at the slot's pixel offset; each grab asks for one frame, names that
slot's buffer in ``copy`` and waits for ``ready``: the compositor has rendered the frame into the slot and
this process touches no pixel. xrgb8888/argb8888 are B, G, R, X bytes in memory: the ring's BGRA.

Time: ``ready`` carries the presentation time on CLOCK_MONOTONIC (the spec's "arbitrary offset" aside);
it is kept only inside [request, now] of our clock and published as ``last_capture_ns``.

Damage (``damage=True``): ``copy_with_damage`` waits until the output changed; a static screen then costs
the compositor nothing, the grab returns False after ``wait_s`` (the stage repeats the held frame), and
the pending copy carries on into the next grab of the same slot (a cancelled slot is the next acquired).
"""

from __future__ import annotations

import os
from typing import Any

from pipeline.clock import now_ns
from pipeline.config import ScreenConfig
from pipeline.errors import SetupError
from pipeline.ring import Ring
from stages.video.grab import SourceGone
from stages.video.wayland.outputs import SCREENCOPY, SCREENCOPY_VERSION, SHM_BGRA, Y_INVERT, Session, probe
from stages.video.wayland.wire import CompositorGone, Proxy, WaylandError

MAX_POOL = 2**31 - 1  # wl_shm_pool sizes and offsets are 32-bit signed
#: Longest a copy may take before the compositor counts as hung (a copy waits for the next output frame).
COPY_TIMEOUT_S = 2.0
FAILED_COPIES = 24  # copies the compositor failed (in all) past which the output is taken as gone


class ScreencopyUnavailable(SetupError):
    """This compositor or this ring cannot do screencopy into the ring; the message says why."""


class ScreencopyGrabber:
    """One output (or a region of it) into the ring's slots through wlr-screencopy."""

    def __init__(self, ring: Ring, config: ScreenConfig, cursor: bool = False, damage: bool = False,
                 wait_s: float = 0.1, display: str | None = None) -> None:  # fmt: skip
        self.ring, self.config, self.cursor, self.wait_s = ring, config, cursor, wait_s
        self.last_capture_ns: int | None = None
        self.stats: dict[str, Any] = {"failed": 0, "copy_ms_max": 0.0, "time_clamped": 0}
        try:
            self.session = Session(display)
        except WaylandError as exc:
            raise ScreencopyUnavailable(f"cannot open the Wayland display ({exc})") from None
        try:
            self._setup(damage)
        except CompositorGone as exc:
            self.session.close()
            raise SourceGone(f"{exc}: the recording stops here") from None
        except BaseException:
            self.session.close()
            raise

    def _setup(self, damage: bool) -> None:
        s = self.session
        if not s.has_screencopy:
            raise ScreencopyUnavailable("this Wayland compositor does not offer wlroots screencopy")
        self.output = s.output(self.config)
        spec = probe(s, self.output, self.config, self.cursor)
        g = self.ring.geometry
        fmt = SHM_BGRA.get(spec.format)
        if fmt is None:
            raise ScreencopyUnavailable(f"the compositor copies in wl_shm format {spec.format:#x}, not xrgb8888 or "
                                        "argb8888 (BGRA bytes): this format is not supported yet")  # fmt: skip
        if (spec.width, spec.height, spec.stride) != (g.width, g.height, g.stride):
            raise ScreencopyUnavailable(
                f"the compositor's buffer is {spec.width}x{spec.height} with {spec.stride}-byte rows, the ring's "
                f"{g.width}x{g.height} with {g.stride}: the output changed size before recording: start again")
        end = self.ring.pixel_offset(self.ring.slots - 1) + g.frame_bytes
        if end > MAX_POOL:
            raise ScreencopyUnavailable(f"the ring ({end / 2**30:.1f} GiB) is larger than a wl_shm pool can be "
                                        "(2 GiB): lower [screen] ring_seconds")  # fmt: skip
        self.manager = s.globals.bind(SCREENCOPY, SCREENCOPY_VERSION)
        self.damage = damage and self.manager.version >= 2
        shm = s.globals.bind("wl_shm", 1)
        fd = os.open(self.ring.path, os.O_RDWR | os.O_CLOEXEC)
        try:
            pool = shm.request("create_pool", None, fd, end)
            s.conn.flush()  # the fd has gone with the request: the compositor holds its own copy
        finally:
            os.close(fd)
        assert pool is not None
        self.pool = pool
        self.buffers: list[Proxy] = []
        for slot in range(self.ring.slots):
            buf = pool.request("create_buffer", None, self.ring.pixel_offset(slot), g.width, g.height, g.stride,
                               spec.format)  # fmt: skip
            assert buf is not None
            self.buffers.append(buf)
        s.conn.roundtrip()
        self.format = spec.format
        self.description = (f"screencopy ({self.output.name or 'output ' + str(self.output.index)}, {fmt}"
                            f"{', damage' if self.damage else ''}), zero-copy")  # fmt: skip
        self._pending: tuple[int, Proxy, dict[str, Any], int] | None = None

    def grab(self, slot: int) -> bool:
        """Ask for one frame into ``slot``'s buffer and wait until the compositor has written it."""
        try:
            return self._grab(slot)
        except CompositorGone as exc:
            self._pending = None
            raise SourceGone(f"{exc}: the recording stops here and keeps what was captured") from None
        except WaylandError as exc:
            self._pending = None
            raise SourceGone(f"screencopy failed ({exc}): the recording stops here and keeps what was "
                             "captured") from None  # fmt: skip

    def _grab(self, slot: int) -> bool:
        conn = self.session.conn
        if self._pending is not None and self._pending[0] != slot:
            self._drop_pending()
        if self._pending is None:
            self._pending = self._request(slot)
        _, frame, state, asked = self._pending
        deadline = now_ns() + round((self.wait_s if self.damage else COPY_TIMEOUT_S) * 1e9)
        while "end" not in state:
            left = (deadline - now_ns()) / 1e9
            if left <= 0:
                if self.damage:
                    return False  # nothing changed: the held frame repeats; the copy stays asked for this slot
                raise WaylandError(f"the compositor did not copy a frame within {COPY_TIMEOUT_S:g} s")
            conn.dispatch(left)
        self._pending = None
        frame.request("destroy")  # sent with the next frame's request: one message to the compositor a frame
        now = now_ns()
        self.stats["copy_ms_max"] = max(self.stats["copy_ms_max"], (now - asked) / 1e6)
        if state["end"] == "changed":
            g = self.ring.geometry
            raise WaylandError(f"the output changed (its buffer is now {state['spec']}, the ring's "
                               f"{g.width}x{g.height}); following a resize is not supported yet")  # fmt: skip
        if state["end"] == "failed":
            self.stats["failed"] += 1
            if self.stats["failed"] > FAILED_COPIES:
                raise WaylandError("the compositor failed every copy (the output went away?)")
            return False
        if state.get("flags", 0) & Y_INVERT:
            raise WaylandError("the compositor's frames are upside down (y_invert), which is not supported yet")
        shown = state.get("time")
        if shown is None or not asked <= shown <= now:  # another clock, or a time outside this copy: counted
            self.stats["time_clamped"] += 1
        self.last_capture_ns = now if shown is None else min(max(shown, asked), now)  # never trusted raw
        return True

    def _request(self, slot: int) -> tuple[int, Proxy, dict[str, Any], int]:
        """Ask for a frame and its copy into ``slot`` in one message batch. The spec has the client wait for
        buffer_done first; wlroots describes the buffer while it handles capture_output, before it reads the
        copy, and the buffer was checked against the ring at setup: the events are checked when they come
        (one wake-up a frame instead of two)."""
        state: dict[str, Any] = {}
        frame = self.session.capture(self.manager, self.output, self.config, self.cursor)
        g = self.ring.geometry
        wanted = (self.format, g.width, g.height, g.stride)

        def on_buffer(fmt: int, w: int, h: int, stride: int) -> None:
            state["spec"] = (fmt, w, h, stride)
            if state["spec"] != wanted:
                state["end"] = "changed"

        def on_ready(hi: int, lo: int, ns: int) -> None:
            state["time"] = ((hi << 32 | lo) * 1_000_000_000 + ns) if ns < 1_000_000_000 else None
            state.setdefault("end", "ready")

        frame.on.update(buffer=on_buffer, ready=on_ready, flags=lambda f: state.__setitem__("flags", f),
                        failed=lambda: state.setdefault("end", "failed"))  # fmt: skip
        frame.request("copy_with_damage" if self.damage else "copy", self.buffers[slot])
        self.session.conn.flush()
        return slot, frame, state, now_ns()

    def _drop_pending(self) -> None:
        """A copy asked for another slot (the ring moved on): withdraw it before its slot is used elsewhere."""
        assert self._pending is not None
        self._pending[1].request("destroy")
        self.session.conn.roundtrip()
        self._pending = None

    def close(self) -> None:
        try:
            if self._pending is not None:
                self._pending[1].request("destroy")
            for buf in getattr(self, "buffers", []):
                buf.request("destroy")
            if hasattr(self, "pool"):
                self.pool.request("destroy")
            self.session.conn.flush()
        except WaylandError:
            pass
        self.session.close()
