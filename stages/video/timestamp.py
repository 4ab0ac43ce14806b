"""Timestamper stage (process fp-timestamp): decides each frame's presentation time.

It handles descriptors only, never pixels. Constant frame rate (default) gives
each frame the tick of 1/fps it was due at (the last at or before its
capture, so a grab that woke late still fills its own tick), or the earliest
free tick if it came up to half a tick early; a tick left
without a frame repeats the held frame, a frame with no free tick near it is
skipped (held, not encoded); both are counted. Variable frame rate keeps capture times in 1/90000 s.
"""

from __future__ import annotations

import math
from typing import Any

from pipeline import messages as msg
from pipeline.clock import NS_PER_S
from pipeline.stage import Stage

VFR_TIME_BASE = 1000  # ticks per second for variable frame rate: ms, the finest Matroska keeps (with finer
# ticks two grabs under a millisecond apart were rounded onto one time in the file)


class Timeline:
    """Pure logic: capture times in, encoder instructions out (unit-testable)."""

    def __init__(self, fps: float, mode: str) -> None:
        self.mode = mode
        self.period_ns = NS_PER_S / fps
        self.last_pts: int | None = None
        self.repeats = 0
        self.skips = 0
        self.frames = 0

    def place(self, frame: msg.Frame) -> list[msg.Message]:
        """The encoder instructions for one captured frame."""
        if self.mode == "vfr":
            return self._place_vfr(frame)
        t = frame.capture_ns / self.period_ns  # capture time in ticks
        nxt = 0 if self.last_pts is None else self.last_pts + 1  # the earliest tick with no frame yet
        if self.last_pts is not None and t - nxt <= -0.5:
            self.skips += 1  # a second frame for a tick that has one: hold it (newest content), encode nothing
            return [msg.Hold(frame.slot, frame.seq)]
        # A frame takes the tick it was due at (the last one at or before its capture), or the
        # earliest free tick when it came a little early; ticks skipped over repeat the held frame.
        pts = max(nxt, math.floor(t))
        out: list[msg.Message] = [msg.Repeat(p) for p in range(nxt, pts)] if self.last_pts is not None else []
        self.repeats += len(out)
        out.append(msg.Encode(frame.slot, frame.seq, pts, frame.capture_ns, frame.grab_ns))
        self.last_pts = pts
        self.frames += 1
        return out

    def finish(self, end_ns: int) -> list[msg.Message]:
        """Repeats for the ticks after the last frame up to ``end_ns`` (frames dropped at the very end)."""
        if self.mode == "vfr" or self.last_pts is None or not end_ns:
            return []
        end = math.ceil(end_ns / self.period_ns - 1e-9)  # ticks 0 .. end-1 belong to the stream
        out: list[msg.Message] = [msg.Repeat(p) for p in range(self.last_pts + 1, end)]
        self.repeats += len(out)
        return out

    def _place_vfr(self, frame: msg.Frame) -> list[msg.Message]:
        """Variable frame rate: the capture time itself, kept strictly increasing."""
        pts = frame.capture_ns * VFR_TIME_BASE // NS_PER_S
        if self.last_pts is not None and pts <= self.last_pts:
            pts = self.last_pts + 1
        self.last_pts = pts
        self.frames += 1
        return [msg.Encode(frame.slot, frame.seq, pts, frame.capture_ns, frame.grab_ns)]


class Timestamper(Stage):
    """Frame descriptors in (port ``frames``), Encode/Repeat/Hold out (port ``placed``)."""

    name = "timestamp"

    def open(self) -> dict[str, Any]:
        self.timeline = Timeline(self.ctx.extra["fps"], self.ctx.config.mode)
        return {}

    def on_buffer(self, port: str, message: msg.Message) -> None:
        if isinstance(message, msg.Frame):
            for out in self.timeline.place(message):
                self.ctx.send("placed", out)

    def on_end(self, port: str, message: msg.EndOfStream) -> None:
        for out in self.timeline.finish(message.end_ns):  # ticks after the last frame, up to capture's end
            self.ctx.send("placed", out)

    def stats(self) -> dict[str, Any]:
        t = getattr(self, "timeline", None)
        return {"frames": t.frames, "repeats": t.repeats, "skips": t.skips} if t else {}
