"""The planner (supervisor process): a pipeline config in, the graph a recording runs out.

One place decides which stages run, how they are linked (by named ports), which rings they share
and what the one encode feeds. ``framepipe plan`` and ``record --dry-run`` print the result.
"""

from __future__ import annotations

import math
import os
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from framepipe.targets import AUDIO, CAMERA, ENCODE, SCREEN, TIMESTAMP
from pipeline.config import AudioConfig, CameraConfig, EncodeConfig, OutputConfig, PipelineConfig, ScreenConfig
from pipeline.errors import ConfigError
from pipeline.graph import Plan, RingSpec, StageSpec
from pipeline.ring import Geometry, i420_geometry
from stages.outputs.formats import (
    OUT_RATE,
    STREAM_GOP_S,
    STREAM_KBPS,
    block_frames,
    check_codec,
    container_for,
    output_size,
)  # fmt: skip
from stages.video.backend import choose
from stages.video.convert import check_planar
from stages.video.corner import check_source, describe, overlay_box
from stages.video.screen import screen_rect
from stages.video.x11windows import WindowInfo

MIN_SLOTS = 8  # the video ring's least slots, whatever the frame rate (its peak fill is 1-4 at 1080p60)

CAMERA_SLOTS = 4  # the camera's ring: the picture the encoder shows, the next ones on their way


def output_settings(out: OutputConfig, folder: str) -> dict[str, Any]:
    """What fp-encode needs to open an output (checked here: a bad name fails before anything starts)."""
    if out.kind == "file":
        container_for(out.path)
        return {"kind": out.kind, "path": out.path}
    if out.kind == "stream":
        return {"kind": out.kind, "url": out.url}
    return {"kind": out.kind, "seconds": out.seconds, "max_mb": out.max_mb, "folder": folder}


def output_line(out: OutputConfig, folder: str) -> str:
    if out.kind == "file":
        return f"file {out.path} ({container_for(out.path)[0]}) <- encode"
    if out.kind == "stream":
        return f"stream {out.url} (flv) <- encode"
    return f"replay buffer: last {out.seconds:g} s, up to {out.max_mb:g} MB, saved to {folder} <- encode"


def replay_folder(config: PipelineConfig) -> str:
    """Where saved replays go: beside the first file output, else the videos folder."""
    first = next((o for o in config.outputs if o.kind == "file"), None)
    return str(Path(first.path).resolve().parent) if first is not None else str(videos_folder())


def videos_folder() -> Path:
    """The XDG videos folder when set (user-dirs.dirs), else ~/Videos."""
    home = Path.home()
    dirs = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config") / "user-dirs.dirs"
    try:
        for line in dirs.read_text(encoding="utf-8").splitlines():
            if line.startswith("XDG_VIDEOS_DIR="):
                return Path(line.split("=", 1)[1].strip().strip('"').replace("$HOME", str(home)))
    except OSError:
        pass
    return home / "Videos"


def recording_name(folder: Path, when: datetime | None = None) -> Path:
    """A new file name in ``folder``: ``Recording YYYY-MM-DD at HH.MM.SS.mkv`` (`` (2)``... when taken)."""
    stem = f"Recording {(when or datetime.now()):%Y-%m-%d at %H.%M.%S}"
    path, n = folder / f"{stem}.mkv", 1
    while os.path.lexists(path):
        n += 1
        path = folder / f"{stem} ({n}).mkv"
    return path


def encoder_settings(config: PipelineConfig) -> EncodeConfig:
    """The encoder's settings with the automatic ones decided: a stream wants a 2 s keyframe interval and
    a bitrate cap."""
    enc = config.encode
    streaming = any(o.kind == "stream" for o in config.outputs)
    gop = enc.gop_seconds or (STREAM_GOP_S if streaming else 1.0)
    return replace(enc, gop_seconds=gop, max_kbps=enc.max_kbps or (STREAM_KBPS if streaming else 0))


def plan(config: PipelineConfig) -> Plan:
    """The stages, links and rings of a screen recording to ``config.outputs``."""
    if not config.outputs:
        raise ConfigError("no output: give an output file (framepipe record out.mkv) or [[output]] tables")
    if config.audio.sources:
        for out in config.outputs:
            if out.kind == "file":
                check_codec(out.path, config.audio.codec)
            elif out.kind == "stream" and config.audio.codec != "aac":
                raise ConfigError("a stream carries aac audio (FLV): set audio.codec = \"aac\"")
    choice = choose(config.screen)  # auto on Wayland: screencopy, else the portal (said in one line)
    config = replace(config, screen=replace(config.screen, backend=choice.backend))
    screen_config, window = resolve_window(config.screen)
    rect = screen_rect(screen_config)
    enc = encoder_settings(config)
    if enc.output_height > rect["height"]:
        raise ConfigError(f"encode.output_height = {enc.output_height} is above the {rect['height']} pixels "
                          "recorded: give a smaller height, or 0 to keep the size")  # fmt: skip
    grabbed = Geometry(rect["width"], rect["height"], rect.get("stride", rect["width"] * 4))
    planar = config.screen.ring_format == "i420"  # I420 slots, converted by the screen stage
    if planar:
        check_planar(rect["width"], rect["height"])
    geometry = i420_geometry(rect["width"], rect["height"]) if planar else grabbed
    slots = max(MIN_SLOTS, round(config.screen.ring_seconds * config.screen.fps))
    width, height = output_size(rect["width"], rect["height"], enc.output_height)
    folder = replay_folder(config)
    fps = config.screen.fps
    what = f"window {window.id:#x} {window.title!r}, " if window is not None else ""
    screen = StageSpec(
        "screen", SCREEN, screen_config, rings={"ring": "video", **({"grab_ring": "grab"} if planar else {})},
        source=True, extra={"window_title": window.title} if window is not None else {"rect": dict(rect)},
        summary=f"{what}{rect['width']}x{rect['height']} at {rect['left']},{rect['top']}, {fps:g} fps, "
                f"backend {config.screen.backend}",
    )  # fmt: skip
    timestamp = StageSpec(
        "timestamp", TIMESTAMP, config.timestamp, inputs={"frames": "screen.frames"},
        extra={"fps": fps}, summary=config.timestamp.mode,
    )  # fmt: skip
    encode = StageSpec(
        "encode", ENCODE, enc, inputs={"video": "timestamp.placed"},
        extra={"fps": fps, "mode": config.timestamp.mode, "picture": [rect["width"], rect["height"]],
               "planar": planar, "outputs": [output_settings(o, folder) for o in config.outputs]},
        rings={"ring": "video"},
        summary=f"{enc.encoder} {enc.preset} crf {enc.crf}{f' max {enc.max_kbps} kb/s' if enc.max_kbps else ''}, "
                f"{width}x{height}, keyframe every {enc.gop_seconds:g} s",
    )  # fmt: skip
    stages = [screen, timestamp, encode]
    size = f"{rect['width']}x{rect['height']}"
    rings = [RingSpec("video", geometry, slots, f"{size} {'I420' if planar else 'BGRA'}, screen -> encode")]
    if planar:
        rings.append(RingSpec("grab", grabbed, 1, f"{size} BGRA, the screen's grab before its conversion"))
    if config.audio.sources:
        audio, ring = audio_stage(config.audio)
        stages.insert(1, audio)
        rings.append(ring)
        stages[-1] = StageSpec(
            encode.name, encode.stage, encode.config, inputs={**encode.inputs, "audio": "audio.blocks"},
            extra={**encode.extra, "audio_codec": config.audio.codec, "audio_bitrate_kbps": config.audio.bitrate_kbps},
            rings={**encode.rings, "audio_ring": "audio"},
            summary=encode.summary + f"; audio {config.audio.codec} {config.audio.bitrate_kbps} kb/s a track",
        )  # fmt: skip
    if config.camera.source:
        if config.camera.overlay == "none" and any(o.kind == "stream" for o in config.outputs):
            raise ConfigError("a stream (FLV) carries one video track: put the camera in a corner "
                              "(--camera-overlay bottom-right) or record it to a file only")  # fmt: skip
        camera, ring = camera_stage(config.camera, width, height)
        stages.insert(1, camera)
        rings.append(ring)
        enc_spec = stages[-1]
        stages[-1] = replace(enc_spec, inputs={**enc_spec.inputs, "camera": "camera.pictures"},
                             extra={**enc_spec.extra, "camera": camera.extra["overlay"]},
                             rings={**enc_spec.rings, "camera_ring": "camera"},
                             summary=enc_spec.summary + "; camera " + config.camera.overlay)  # fmt: skip
    lines = tuple(output_line(o, folder) for o in config.outputs)
    rect = {k: rect[k] for k in ("left", "top", "width", "height")}
    info: dict[str, Any] = {"rect": rect, "replay_folder": folder, "backend_line": choice.line}
    if window is not None:
        info["window"] = window.as_dict()
    result = Plan(tuple(stages), tuple(rings), lines, info)
    result.check()
    return result


def resolve_window(screen: ScreenConfig) -> tuple[ScreenConfig, WindowInfo | None]:
    """``screen.window`` as one window's id (a title matched, or the window picked, once, here), and the window."""
    if not screen.window:
        return screen, None
    from stages.video.x11windows import find_window

    window = find_window(screen.window)
    if screen.window == "pick":
        import sys

        print(f"framepipe: picked {window.line()}", file=sys.stderr)
    return replace(screen, window=f"{window.id:#x}"), window


def audio_stage(audio: AudioConfig) -> tuple[StageSpec, RingSpec]:
    """The audio capture stage (a source: Stop reaches it) and its ring."""
    block = block_frames(audio.codec)
    tracks = len(audio.sources) + (1 if audio.mix else 0)
    slots = max(4, math.ceil(audio.ring_seconds * OUT_RATE / block) * tracks)
    sources = ", ".join(audio.sources) + (" + mix" if audio.mix else "")
    spec = StageSpec("audio", AUDIO, audio, rings={"ring": "audio"}, source=True,
                     essential=False, awaited=False, summary=f"{sources}, {OUT_RATE // 1000} kHz")  # fmt: skip
    return spec, RingSpec("audio", Geometry(block, audio.channels, block * 4), slots, "audio blocks, audio -> encode")


def camera_stage(camera: CameraConfig, width: int, height: int) -> tuple[StageSpec, RingSpec]:
    """The camera stage (a source that is not essential: the screen goes on without it) and its ring of I420
    pictures the overlay's size, for an output of ``width`` x ``height``."""
    check_source(camera)
    box = overlay_box(camera, width, height)
    overlay = {"x": box.x, "y": box.y, "width": box.width, "height": box.height, "shape": camera.shape,
               "stale_ns": round(camera.stall_s * 1e9), "track": camera.overlay == "none"}  # fmt: skip
    spec = StageSpec("camera", CAMERA, camera, rings={"ring": "camera"}, source=True,
                     essential=False, extra={"box": (box.width, box.height), "overlay": overlay},
                     summary=describe(camera, box))  # fmt: skip
    geometry = i420_geometry(box.width, box.height)
    return spec, RingSpec("camera", geometry, CAMERA_SLOTS, f"{box.width}x{box.height} I420, camera -> encode")
