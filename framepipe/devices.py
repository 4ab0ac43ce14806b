"""``framepipe devices``: what can be recorded on this machine."""

from __future__ import annotations

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


def list_devices() -> dict[str, Any]:
    """Everything `framepipe devices` shows."""
    from stages.video.corner import v4l2_cameras

    return {"monitors": list_monitors(), "audio": list_audio(), "cameras": v4l2_cameras()}
