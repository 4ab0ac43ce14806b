"""``framepipe devices``: what can be recorded on this machine."""

from __future__ import annotations

import os
from typing import Any

from pipeline.errors import SetupError


def list_monitors() -> list[dict[str, int]]:
    """Monitors as mss numbers them: 0 is all of them, 1 the first."""
    import mss

    try:
        with mss.MSS() as sct:
            return [{"index": i, **{k: m[k] for k in ("left", "top", "width", "height")}}
                    for i, m in enumerate(sct.monitors)]  # fmt: skip
    except mss.ScreenShotError as exc:
        raise SetupError(f"cannot open the display ({exc}): set DISPLAY, or run under Xvfb") from None


def list_audio() -> dict[str, Any]:
    """Audio inputs, listed by a short-lived audio process (this one never loads PortAudio)."""
    from stages.audio.devices import probe_inputs

    try:
        return probe_inputs()
    except SetupError as exc:
        return {"inputs": [], "pulse_sources": [], "error": str(exc)}


def list_windows() -> list[dict[str, Any]]:
    """The shown windows, top of the stack first (what --window takes); none without a display."""
    from stages.video.x11windows import list_windows as shown

    try:
        return [w.as_dict() for w in shown()]
    except SetupError:
        return []


def list_devices() -> dict[str, Any]:
    """Everything `framepipe devices` shows (on Wayland its outputs too; the X11 monitors only with a DISPLAY)."""
    from stages.video.corner import v4l2_cameras

    if not os.environ.get("WAYLAND_DISPLAY"):
        return {"monitors": list_monitors(), "windows": list_windows(), "audio": list_audio(),
                "cameras": v4l2_cameras()}
    from stages.video.wayland.outputs import list_outputs

    devices: dict[str, Any] = {}
    try:
        devices["wayland_outputs"] = list_outputs()
    except SetupError as exc:
        devices["wayland_outputs"], devices["wayland_error"] = [], str(exc)
    devices["monitors"] = list_monitors() if os.environ.get("DISPLAY") else []
    devices["windows"] = list_windows() if os.environ.get("DISPLAY") else []
    return {**devices, "audio": list_audio(), "cameras": v4l2_cameras()}
