"""Which grab backend records this desktop (supervisor, while planning; pure Python, no numpy or PyAV).

``auto``: WAYLAND_DISPLAY set -> wlroots screencopy where the compositor offers it, else the desktop portal;
X11 (MIT-SHM, else mss) otherwise. A named backend is taken as asked. On Wayland, or after a fallback, the
choice is said in one line (mss's ``performance_status`` idea); plain X11 says nothing new.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from pipeline.config import WAYLAND_BACKENDS, ScreenConfig
from pipeline.errors import SetupError


@dataclass(frozen=True)
class Choice:
    """The backend a recording uses and the line that says why (empty: nothing to say)."""

    backend: str  # a ScreenConfig.backend value, never "auto" when it is a Wayland one
    line: str = ""


def choose(config: ScreenConfig, env: Mapping[str, str] | None = None) -> Choice:
    """Resolve ``config.backend`` on this desktop; SetupError (one line) when nothing here can record."""
    env = os.environ if env is None else env
    wayland = env.get("WAYLAND_DISPLAY")
    if config.backend == "screencopy":
        return Choice("screencopy", f"backend: screencopy (wlroots), as asked, on Wayland display {wayland or '?'}")
    if config.backend == "portal":
        from stages.video.wayland.portal import unavailable

        why = unavailable()
        if why:
            raise SetupError(f"the desktop portal backend is not available here: {why}")
        return Choice("portal", "backend: desktop portal (ScreenCast + PipeWire), as asked")
    if config.backend != "auto" or not wayland:
        return Choice(config.backend)
    from stages.video.wayland.outputs import Session
    from stages.video.wayland.wire import WaylandError

    try:
        session = Session()
    except WaylandError as exc:
        if env.get("DISPLAY"):
            return Choice("auto", f"backend: X11 on {env['DISPLAY']} (WAYLAND_DISPLAY={wayland} but {exc}; "
                          "an X11 grab sees X11 windows only)")  # fmt: skip
        raise SetupError(f"{exc}: start the compositor, or set WAYLAND_DISPLAY to its socket") from None
    try:
        if session.has_screencopy:
            return Choice("screencopy", f"backend: screencopy (wlroots), chosen by itself: WAYLAND_DISPLAY={wayland} "
                          "offers it; the compositor writes each frame into the ring")  # fmt: skip
    finally:
        session.close()
    from stages.video.wayland.portal import unavailable

    why = unavailable()
    if not why:
        return Choice("portal", f"backend: desktop portal (ScreenCast + PipeWire), chosen by itself: "
                      f"WAYLAND_DISPLAY={wayland} offers no wlroots screencopy")  # fmt: skip
    raise SetupError(f"this Wayland compositor (WAYLAND_DISPLAY={wayland}) offers no wlroots screencopy, and the "
                     f"desktop portal is not available here ({why}); --backend x11 records X11 windows through "
                     "Xwayland only")  # fmt: skip


def is_wayland(backend: str) -> bool:
    return backend in WAYLAND_BACKENDS
