"""Pause as a timestamp offset, not a gap (pure logic; fp-encode applies it, the supervisor fixes the times).

A pause covers running times ``[start, end)``; the supervisor puts both ends on the frame grid. Nothing
inside a pause is written; everything after it is shifted back by the paused time, so the file plays
on without a hole. Video shifts by whole frames (the grid), every audio track is cut at the sample and
shifted by the same time in samples, so picture and sound stay aligned after any number of pauses.
"""

from __future__ import annotations

from pipeline.clock import NS_PER_S


class PauseSchedule:
    """The pauses of one recording so far; ``end`` is None while paused."""

    def __init__(self) -> None:
        self.spans: list[tuple[int, int | None]] = []

    @property
    def paused(self) -> bool:
        return bool(self.spans) and self.spans[-1][1] is None

    def pause(self, at: int) -> None:
        """Pause from running time ``at``; a second pause while paused changes nothing."""
        if not self.paused and (not self.spans or at >= (self.spans[-1][1] or 0)):
            self.spans.append((at, None))

    def resume(self, at: int) -> None:
        """Resume at running time ``at`` (not before the pause began); nothing happens when not paused."""
        if self.paused:
            start = self.spans[-1][0]
            self.spans[-1] = (start, max(at, start))

    def paused_ns(self, now: int) -> int:
        """Time paused up to running time ``now``."""
        return sum(min(now, end if end is not None else now) - start for start, end in self.spans if start < now)

    def offset(self, t: int) -> int | None:
        """How far running time ``t`` is shifted back in the file; None: it falls in a pause (not written)."""
        shift = 0
        for start, end in self.spans:
            if t < start:
                break
            if end is None or t < end:
                return None
            shift += end - start
        return shift

    def cut(self, first: int, frames: int, rate: int) -> list[tuple[int, int, int]]:
        """The parts of ``frames`` samples from sample ``first`` (at ``rate``) that are written.

        Each part is (offset into the block, samples, sample index in the file). Pause ends are turned
        into samples once (rounded), so every track of every source cuts at the same samples.
        """
        parts = []
        shift = 0
        pos, stop = first, first + frames
        for start_ns, end_ns in self.spans:
            start = round(start_ns * rate / NS_PER_S)
            end = round(end_ns * rate / NS_PER_S) if end_ns is not None else None
            if pos >= stop:
                break
            if pos < start:
                upto = min(stop, start)
                parts.append((pos - first, upto - pos, pos - shift))
                pos = upto
            if end is None:
                return parts
            if pos < end:
                pos = min(stop, end)
            shift += end - start
        if pos < stop:
            parts.append((pos - first, stop - pos, pos - shift))
        return parts
