"""Where the camera goes and how it is opened (pure Python: the planner, in the supervisor, and fp-camera).

The overlay is a box of the output picture, fixed at plan time (the camera ring is sized by it): its
height a percentage of the output's, its width by the camera's aspect (``camera.size`` when given, else
16:9; a circle is a square), on even pixels (the chroma planes are half size), a margin from the edges.
The camera stage scales each picture to cover the box and cuts the middle out, so the box is always full.
A camera recorded as its own track (``overlay = "none"``) is the size asked of it, else 1280x720.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import CameraConfig, camera_name, is_device
from pipeline.errors import ConfigError

MARGIN = 0.03  # of the output height, between the box and the picture's edges
DEFAULT_ASPECT = (16, 9)
TRACK_SIZE = (1280, 720)  # a camera track's size when none is asked
PROBE_US = 1_000_000  # how much of a network stream FFmpeg reads to learn what it carries (us)
SYSFS = Path("/sys/class/video4linux")


def even(n: float) -> int:
    return max(2, round(n) // 2 * 2)


@dataclass(frozen=True)
class Box:
    """A rectangle of the output picture, in pixels, every value even."""

    x: int
    y: int
    width: int
    height: int


def asked_size(config: CameraConfig) -> tuple[int, int] | None:
    if not config.size:
        return None
    w, _, h = config.size.lower().partition("x")
    return int(w), int(h)


def overlay_box(config: CameraConfig, out_width: int, out_height: int) -> Box:
    """The camera's box on an output of ``out_width`` x ``out_height`` (x = y = 0 for its own track)."""
    if config.overlay == "none":
        w, h = asked_size(config) or TRACK_SIZE
        return Box(0, 0, even(w), even(h))
    height = even(out_height * config.overlay_percent / 100)
    margin = even(out_height * MARGIN)
    height = min(height, even(out_height - 2 * margin))
    aw, ah = (1, 1) if config.shape == "circle" else (asked_size(config) or DEFAULT_ASPECT)
    width = min(even(height * aw / ah), even(out_width - 2 * margin))
    x = margin if config.overlay.endswith("left") else out_width - margin - width
    y = margin if config.overlay.startswith("top") else out_height - margin - height
    return Box(x, y, width, height)


def cover(src: tuple[int, int], box: tuple[int, int]) -> tuple[int, int, int, int]:
    """Scale ``src`` (w, h) to cover ``box`` keeping its aspect: (scaled w, h, crop x, crop y), all even."""
    (sw, sh), (bw, bh) = src, box
    scale = max(bw / sw, bh / sh)
    w, h = max(bw, even(sw * scale)), max(bh, even(sh * scale))
    return w, h, (w - bw) // 4 * 2, (h - bh) // 4 * 2


def input_options(config: CameraConfig) -> tuple[str | None, dict[str, str]]:
    """PyAV's ``format`` and ``options`` for the source: a V4L2 device gets what was asked of it (video_size,
    framerate, input_format); a URL reads at most PROBE_US before the first picture. Not ``fflags=nobuffer``: it
    throws away what the probe read, the first keyframe with it, and the first picture came 0.9 s late."""
    if is_device(config.source):
        options = {}
        if config.size:
            options["video_size"] = config.size.lower()
        if config.frame_rate:
            options["framerate"] = f"{config.frame_rate:g}"
        if config.format:
            options["input_format"] = config.format
        return "v4l2", options
    options = {"analyzeduration": str(PROBE_US)}
    if config.source.lower().startswith(("rtsp://", "rtsps://")):
        options["rtsp_transport"] = "tcp"  # phones' apps serve RTSP over TCP reliably; UDP loses pictures
    return None, options


def check_source(config: CameraConfig) -> None:
    """A device that does not exist fails before anything starts (a URL is tried by fp-camera's open)."""
    if config.source and is_device(config.source) and not os.path.exists(config.source):
        raise ConfigError(f"camera {config.source} does not exist: see `framepipe devices` for the cameras here")


def describe(config: CameraConfig, box: Box) -> str:
    where = "its own video track" if config.overlay == "none" else (
        f"{config.overlay} at {box.x},{box.y}, {config.shape}")  # fmt: skip
    return f"{camera_name(config.source)}, {box.width}x{box.height} I420, {where}"


def v4l2_cameras(root: Path = SYSFS) -> list[dict[str, str]]:
    """The V4L2 devices with their names from sysfs (/sys/class/video4linux/videoN/name); none is fine."""
    out = []
    for node in sorted(root.glob("video*"), key=lambda p: (len(p.name), p.name)):
        try:
            name = (node / "name").read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            name = ""
        out.append({"device": f"/dev/{node.name}", "name": name or "(no name)"})
    return out
