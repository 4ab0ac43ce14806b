"""How a picture reaches a ring slot: one grabber per backend behind one small interface (process fp-screen).

The screen stage (``stages.video.screen``) owns the pacing, the ring and the counts; a grabber only
puts what is recorded now into the slot it is given. The X11 root grabbers live in ``screen.py``;
a window, a Wayland output or a portal stream are grabbers beside them, chosen by ``open_grabber``.
"""

from __future__ import annotations

from typing import Protocol

from pipeline.errors import FramepipeError


class SourceGone(FramepipeError, OSError):
    """What is recorded went away (a window closed, the display or compositor gone): the recording
    stops in order, keeps its file, and says this line."""


class Grabber(Protocol):
    """Puts the current picture into ring slots (fp-screen's thread calls every method)."""

    description: str  # the backend as `record` reports it: "xshm, zero-copy"
    # Optional: a grabber that learns when its picture was made (screencopy's ``ready``) sets
    # ``last_capture_ns`` (pipeline clock, absolute ns) on each fresh grab; the stage stamps with it
    # instead of the grab's start.

    def grab(self, slot: int) -> bool:
        """Fill ``slot`` with the picture now; False: nothing new to show (the slot is given back and the
        timestamper repeats the held frame, counted as held). Raises SourceGone when it went away."""
        ...

    def close(self) -> None: ...
