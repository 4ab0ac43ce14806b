"""Pipeline configuration: a TOML file into validated frozen dataclasses.

Each stage's settings are a frozen dataclass beside a default, with one
comment per field. ``load`` reads a TOML file, overlays CLI overrides and
checks every value; an unknown key or a bad value raises ``ConfigError``
naming the key and what is allowed.

TOML layout (every table and key optional)::

    [screen]     fps, monitor, region, backend, cursor, ring_seconds, ring_format, window, affinity, nice
    [timestamp]  mode, affinity, nice
    [encode]     encoder, preset, crf, threads, thread_type, gop_seconds, output_height, overload, affinity, nice
    [audio]      sources, mix, missing, gains, codec, bitrate_kbps, channels, ring_seconds, max_delay_ms, affinity, nice
    [camera]     source, size, frame_rate, format, overlay, overlay_percent, shape, open_timeout_s, stall_s,
                 affinity, nice
    [[output]]   kind (file, stream, replay), path | url | seconds, max_mb; any number, all fed from the one encode
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, get_type_hints

from pipeline.errors import ConfigError

X264_PRESETS = (
    "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
)  # fmt: skip
ENCODERS = ("libx264", "h264_nvenc", "h264_qsv", "h264_amf", "h264_videotoolbox", "hevc_nvenc", "libx265")
BACKENDS = ("auto", "xshm", "mss", "mss-xgetimage", "mss-xlib", "x11", "screencopy", "portal")
#: The backends that record a Wayland desktop (the others are X11 ones; "x11" is the best of those).
WAYLAND_BACKENDS = ("screencopy", "portal")
AUDIO_CODECS = ("aac", "opus")
MAX_GAIN = 10.0


def _opt(default: Any, **rules: Any) -> Any:
    """A dataclass field with validation rules: choices, lo, hi."""
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: tuple(default), metadata=rules)
    return field(default=default, metadata=rules)


@dataclass(frozen=True)
class StageConfig:
    """Placement settings every stage process has."""

    affinity: tuple[int, ...] = _opt(())  # CPUs the stage process may run on; empty: any
    nice: int = _opt(0, lo=-20, hi=19)  # scheduling priority; negative needs privileges


@dataclass(frozen=True)
class ScreenConfig(StageConfig):
    """The screen capture stage (fp-screen)."""

    fps: float = _opt(60.0, lo=1, hi=240)  # frames grabbed per second
    monitor: int = _opt(1, lo=0, hi=64)  # mss monitor number: 0 is all monitors, 1 the first
    region: tuple[int, ...] = _opt(())  # x, y, width, height within the screen; empty: whole monitor
    backend: str = _opt("auto", choices=BACKENDS)  # grab backend: xshm writes into the ring, mss copies once;
    # screencopy (wlroots) too; auto: screencopy, else the portal, when WAYLAND_DISPLAY is set, else xshm
    cursor: bool = _opt(False)  # draw the pointer into the frames (Wayland backends; X11 grabs never do)
    ring_seconds: float = _opt(1.0, lo=0.05, hi=10)  # what the video ring can hold, in seconds of frames (at
    # least 8 slots): an encoder stalled this long loses nothing; it takes memory only for the slots it used
    # (2 before the start, one more ahead as a run reaches them: 3-6 at 1080p60), and a run that came near full warns
    ring_format: str = _opt("bgra", choices=("bgra", "i420"))  # what the ring's slots hold: the grab as it
    # is (the encoder converts), or I420 converted by the capture stage: 0.375 of the memory, ~15% more CPU
    window: str = _opt("")  # record one window: an id (0x...), a title or class substring, or "pick"; empty: the screen


@dataclass(frozen=True)
class TimestampConfig(StageConfig):
    """The timestamper (fp-timestamp)."""

    mode: str = _opt("cfr", choices=("cfr", "vfr"))  # constant frame rate (repeat/skip) or capture times


@dataclass(frozen=True)
class EncodeConfig(StageConfig):
    """The encoder and muxer (fp-encode). Niced by default: capture and the X server win the CPU when they wake
    (a grab a tick late is a frame lost); beside programs that keep every CPU busy it falls behind: see NOTES.md."""

    nice: int = _opt(10, lo=-20, hi=19)  # below capture and the X server; the ring absorbs its lag

    encoder: str = _opt("libx264", choices=ENCODERS)  # video codec; hardware ones are tried and fall back to libx264
    preset: str = _opt("ultrafast")  # encoder speed preset (libx264: ultrafast ... veryslow)
    crf: int = _opt(23, lo=0, hi=51)  # constant rate factor: lower is better quality, bigger file
    threads: int = _opt(0, lo=0, hi=64)  # encoder threads; 0: automatic
    thread_type: str = _opt("ADAPTIVE", choices=("FRAME", "SLICE", "ADAPTIVE", "AUTO"))  # how the encoder
    # splits work: slices hold one frame (p99 33-38 ms at 1080p60 against 61-74 for frames, at the same CPU)
    # but may fall behind on the heaviest content of a slow machine; ADAPTIVE (default): slices, and frame
    # threads from the moment 3 frames wait in the ring (libx264 ultrafast: no B-frames; otherwise FRAME),
    # which may lose a few frames as it switches where frame threads themselves barely keep up (NOTES.md)
    gop_seconds: float = _opt(0.0, lo=0.0, hi=10)  # keyframe interval (a crash loses at most this much);
    # 0: automatic, 1 s, or 2 s when a stream is an output (what streaming services ask for)
    max_kbps: int = _opt(0, lo=0, hi=500_000)  # video bitrate cap (x264 VBV maxrate, buffer 2 s);
    # 0: none (quality by crf alone), or 6000 when a stream is an output
    output_height: int = _opt(0, lo=0, hi=4320)  # scale the video down to this height (the width keeps the
    # aspect; both even); 0: as captured. Every frame is kept: it only costs the encoder less
    overload: str = _opt("drop", choices=("drop", "shed"))  # encoder behind: ring absorbs, then capture drops;
    # or shed: past half a ring, encode every other frame as a repeat (even loss, low latency)


@dataclass(frozen=True)
class AudioConfig(StageConfig):
    """The audio capture stage (fp-audio) and the file's audio tracks (the mix first, then one per source)."""

    sources: tuple[str, ...] = _opt(("default", "system"))  # default (the microphone), system (what the machine
    # plays), pulse:NAME, a device name or index; [] = none. The default: both sides of a call, each its own track
    mix: bool = _opt(True)  # a first track mixing every source (a player that plays one track plays the whole call)
    missing: str = _opt("leave-out", choices=("leave-out", "fail"))  # a source that is not there: its track left
    # out with one line (video alone if none is there), or an error before anything starts (what --audio asks)
    gains: tuple[float, ...] = _opt(())  # each source's gain in the mix, in the order of sources; empty: all 1.0
    codec: str = _opt("aac", choices=AUDIO_CODECS)  # aac (any container) or opus (.mkv only)
    bitrate_kbps: int = _opt(128, lo=16, hi=512)  # per track
    channels: int = _opt(2, lo=1, hi=2)  # every track: 1 mono, 2 stereo (mono inputs are spread)
    ring_seconds: float = _opt(2.0, lo=0.2, hi=10)  # audio ring size, in seconds of every track
    max_delay_ms: int = _opt(500, lo=50, hi=5000)  # a late source is waited for this long, then silence fills in


CAMERA_POSITIONS = ("bottom-right", "bottom-left", "top-right", "top-left", "none")
CAMERA_SHAPES = ("rect", "circle")
CAMERA_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp")


@dataclass(frozen=True)
class CameraConfig(StageConfig):
    """A camera or phone (fp-camera): a V4L2 device or a URL, composited in a corner by the encoder."""

    nice: int = _opt(5, lo=-20, hi=19)  # below screen capture (a late grab is a lost frame), above the encoder
    source: str = _opt("")  # /dev/videoN, or a URL PyAV opens (rtsp://, rtmp://, http(s)://); empty: no camera
    size: str = _opt("")  # V4L2: WIDTHxHEIGHT asked of the device (video_size); empty: its default
    frame_rate: float = _opt(0.0, lo=0, hi=240)  # V4L2: frames a second asked (framerate); 0: its default
    format: str = _opt("")  # V4L2: pixel format asked (input_format: mjpeg, yuyv422); empty: default
    overlay: str = _opt("bottom-right", choices=CAMERA_POSITIONS)  # where it goes; none: its own video track
    overlay_percent: float = _opt(25.0, lo=5, hi=100)  # its height in percent of the output's
    shape: str = _opt("rect", choices=CAMERA_SHAPES)  # rect, or circle (a square cut round, edges blended)
    open_timeout_s: float = _opt(5.0, lo=0.5, hi=60)  # a camera silent this long at the start is an error
    stall_s: float = _opt(3.0, lo=0.5, hi=60)  # no picture this long: the corner shows nothing; it is reopened


def is_device(source: str) -> bool:
    """Whether a camera source names a V4L2 device (a path) rather than a URL."""
    return source.startswith("/")


OUTPUT_KINDS = ("file", "stream", "replay")
STREAM_SCHEMES = ("rtmp", "rtmps")
MIN_REPLAY_MB_PER_S = 2.5  # a replay cap under this much per keyframe interval cannot hold one (20 Mb/s: 1080p60)


@dataclass(frozen=True)
class OutputConfig:
    """One output of the encoded packets (a thread and a queue in fp-encode)."""

    kind: str = _opt("file", choices=OUTPUT_KINDS)  # file on disk | stream (RTMP) | replay (last seconds, in RAM)
    path: str = _opt("")  # file: where (.mkv, .mp4 or .mov)
    url: str = _opt("")  # stream: rtmp://host[:port]/app/key or rtmps://...
    seconds: float = _opt(30.0, lo=0.0, hi=3600)  # replay: how many seconds it keeps (at least)
    max_mb: float = _opt(500.0, lo=0.0, hi=65536)  # replay: memory cap; when it bites a warning says what it holds


@dataclass(frozen=True)
class PipelineConfig:
    """All stage settings of one recording."""

    screen: ScreenConfig = field(default_factory=ScreenConfig)
    timestamp: TimestampConfig = field(default_factory=TimestampConfig)
    encode: EncodeConfig = field(default_factory=EncodeConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    outputs: tuple[OutputConfig, ...] = ()  # the [[output]] tables, in order


SECTIONS: dict[str, type] = {
    "screen": ScreenConfig, "timestamp": TimestampConfig, "encode": EncodeConfig, "audio": AudioConfig,
    "camera": CameraConfig,
}  # fmt: skip


_KIND_NAMES = {float: "a number", int: "a whole number", str: "a string", bool: "true or false"}


def shown(value: Any, limit: int = 40) -> str:
    """A value as people read it in an error, cut short (a 5000-digit number stays one short line)."""
    try:
        text = repr(value)
    except ValueError:  # an integer of thousands of digits
        return "a number too long to show"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check(section: str, name: str, value: Any, kind: Any, rules: dict[str, Any]) -> Any:
    """Coerce and check one value; raise ConfigError naming ``section.name``."""
    key = f"{section}.{name}"
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key} = {value} is not a number we can use: give a finite value")
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value) if abs(value) < 10**300 else math.inf
    if kind == tuple[int, ...]:
        if not isinstance(value, (list, tuple)) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            raise ConfigError(f"{key} must be a list of whole numbers, not {shown(value)}")
        value = tuple(value)
        if any(v < 0 for v in value):
            raise ConfigError(f"{key} must not hold negative numbers: {list(value)}")
    elif kind in (tuple[str, ...], tuple[float, ...]):
        value = _check_list(key, value, kind.__args__[0])
    elif not isinstance(value, kind) or isinstance(value, bool) != (kind is bool):
        raise ConfigError(f"{key} must be {_KIND_NAMES.get(kind, kind.__name__)}, not {shown(value)}")
    if "choices" in rules and value not in rules["choices"]:
        raise ConfigError(f"{key} = {shown(value)} is not allowed; choose one of: {', '.join(rules['choices'])}")
    lo, hi = rules.get("lo"), rules.get("hi")
    if lo is not None and (value < lo or value > hi):
        raise ConfigError(f"{key} = {shown(value)} is out of range; allowed: {lo} to {hi}")
    return value


def _check_list(key: str, value: Any, item: type) -> tuple[Any, ...]:
    """A list of strings, or of finite numbers, as a tuple."""

    def ok(v: Any) -> bool:
        if item is str:
            return isinstance(v, str)
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    if not isinstance(value, (list, tuple)) or not all(ok(v) for v in value):
        what = "strings" if item is str else "numbers"
        raise ConfigError(f"{key} must be a list of {what}, not {shown(value)}")
    return tuple(value) if item is str else tuple(float(v) for v in value)


def build_section(section: str, data: dict[str, Any]) -> Any:
    """One stage's config from a dict; unknown keys and bad values raise ConfigError."""
    cls = SECTIONS[section]
    if not isinstance(data, dict):
        raise ConfigError(f"[{section}] must be a table of settings")
    hints = get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    for name in data:
        if name not in known:
            raise ConfigError(f"unknown key {section}.{name}; allowed keys: {', '.join(sorted(known))}")
    values = {}
    for name, value in data.items():
        values[name] = _check(section, name, value, hints[name], dict(known[name].metadata))
    config = cls(**values)
    _check_section(section, config)
    return config


def _check_section(section: str, config: Any) -> None:
    """Rules that involve more than one value."""
    region = config.region if isinstance(config, ScreenConfig) else ()
    if region and (len(region) != 4 or region[2] < 16 or region[3] < 16):
        raise ConfigError(
            f"{section}.region must be x, y, width, height with width and height at least 16, not {list(region)}"
        )
    if isinstance(config, ScreenConfig) and config.window and config.region:
        raise ConfigError(f"{section}.window and {section}.region both choose what is recorded: give one of them")
    if isinstance(config, AudioConfig):
        _check_audio(section, config)
    if isinstance(config, CameraConfig):
        _check_camera(section, config)
    if isinstance(config, EncodeConfig) and 0 < config.gop_seconds < 0.1:
        raise ConfigError(f"encode.gop_seconds = {config.gop_seconds:g} is too short: give 0.1 to 10, or 0 (automatic)")
    if isinstance(config, EncodeConfig) and config.encoder == "libx264" and config.preset not in X264_PRESETS:
        raise ConfigError(
            f"encode.preset = {config.preset!r} is not a libx264 preset; choose one of: {', '.join(X264_PRESETS)}"
        )


def _check_audio(section: str, config: AudioConfig) -> None:
    """Sources once each; one gain per source, each 0 to MAX_GAIN."""
    twice = sorted({s for s in config.sources if config.sources.count(s) > 1})
    if twice:
        raise ConfigError(f"{section}.sources names {', '.join(twice)} more than once; give each source once")
    if any(not s for s in config.sources):
        raise ConfigError(f"{section}.sources holds an empty name: use default, system, pulse:NAME or a device")
    if config.gains and len(config.gains) != len(config.sources):
        raise ConfigError(
            f"{section}.gains has {len(config.gains)} value(s) for {len(config.sources)} source(s): give one per source"
        )
    if any(not 0 <= g <= MAX_GAIN for g in config.gains):
        raise ConfigError(f"{section}.gains must be from 0 to {MAX_GAIN:g}, not {list(config.gains)}")


def _check_camera(section: str, config: CameraConfig) -> None:
    """A source that is a device path or a URL we can open; a size that is WIDTHxHEIGHT."""
    source = config.source
    if source and not is_device(source):
        scheme, sep, rest = source.partition("://")
        if not sep or not rest or scheme.lower() not in CAMERA_SCHEMES:
            raise ConfigError(f"{section}.source = {shown(camera_name(source))} is neither a device (/dev/video0) "
                              f"nor a URL we open ({', '.join(s + '://' for s in CAMERA_SCHEMES)})")  # fmt: skip
    if config.size:
        w, x, h = config.size.lower().partition("x")
        if not (x and w.isdigit() and h.isdigit() and 16 <= int(w) <= 7680 and 16 <= int(h) <= 4320):
            raise ConfigError(f"{section}.size = {shown(config.size)}: give WIDTHxHEIGHT, e.g. 1280x720")
    if config.format and not config.format.replace("_", "").isalnum():
        raise ConfigError(f"{section}.format = {shown(config.format)}: give a pixel format name such as mjpeg")


def camera_name(source: str) -> str:
    """A camera source as people see it: a URL without its user and password (phone apps put them there)."""
    scheme, sep, rest = source.partition("://")
    if not sep:
        return source
    host, slash, path = rest.partition("/")
    return f"{scheme}://{host.rpartition('@')[2]}{slash}{path}"


def parse_overlay(text: str) -> dict[str, Any]:
    """``--camera-overlay POSITION[,SIZE%][,circle|rect]`` as camera settings (overlay, overlay_percent, shape)."""
    out: dict[str, Any] = {}
    for part in (p.strip().lower() for p in text.split(",")):
        number = part.removesuffix("%")
        if part in CAMERA_POSITIONS and "overlay" not in out:
            out["overlay"] = part
        elif part in CAMERA_SHAPES and "shape" not in out:
            out["shape"] = part
        elif number.replace(".", "", 1).isdigit() and "overlay_percent" not in out:
            out["overlay_percent"] = float(number)
        else:
            raise ConfigError(f"--camera-overlay {text!r}: give POSITION[,SIZE%][,circle|rect] with POSITION one of "
                              f"{', '.join(CAMERA_POSITIONS)}, e.g. bottom-right,25%,circle")  # fmt: skip
    return out


def build_outputs(tables: Any, where: str = "[[output]]") -> tuple[OutputConfig, ...]:
    """The ``[[output]]`` tables as OutputConfigs; a bad kind, a missing path or two outputs to one path
    raise ConfigError naming the output."""
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ConfigError(f"{where} must be tables: write each output as [[output]] with kind and path under it")
    outputs = []
    hints = get_type_hints(OutputConfig)
    known = {f.name: f for f in fields(OutputConfig)}
    for i, table in enumerate(tables, 1):
        name = f"output[{i}]"
        for key in table:
            if key not in known:
                raise ConfigError(f"unknown key {name}.{key}; allowed keys: {', '.join(sorted(known))}")
        values = {k: _check(name, k, v, hints[k], dict(known[k].metadata)) for k, v in table.items()}
        out = OutputConfig(**values)
        _check_output(name, out)
        outputs.append(out)
    seen: dict[Any, int] = {}
    for i, out in enumerate(outputs, 1):
        if out.kind == "replay" and "replay" in seen:
            raise ConfigError(f"output[{seen['replay']}] and output[{i}] are both replay buffers: keep one")
        target: Any = Path(out.path).expanduser().resolve() if out.kind == "file" else out.url or out.kind
        if target in seen:
            raise ConfigError(f"output[{seen[target]}] and output[{i}] both write {out.path or out.url}: "
                              "give each output a path of its own")  # fmt: skip
        seen[target] = i
    return tuple(outputs)


def _check_output(name: str, out: OutputConfig) -> None:
    """What each kind needs: a path, a URL we can stream to, a replay length and a cap that holds it."""
    if out.kind == "file" and not out.path.strip():
        raise ConfigError(f'{name} (a file) needs a path: add path = "recording.mkv" under it')
    if out.kind == "stream":
        check_stream_url(out.url, f"{name}.url")
    if out.kind == "replay":
        if not out.seconds > 0:
            raise ConfigError(f"{name}.seconds = {out.seconds:g}: a replay buffer keeps more than 0 seconds "
                              "(e.g. --replay 30)")  # fmt: skip
        if out.max_mb < MIN_REPLAY_MB_PER_S:
            raise ConfigError(f"{name}.max_mb = {out.max_mb:g} cannot hold one keyframe interval of video: "
                              f"allow at least {MIN_REPLAY_MB_PER_S:g} MB (--replay-max-mb)")  # fmt: skip


def check_stream_url(url: str, key: str) -> None:
    """A URL we can stream to: rtmp:// or rtmps:// with a host and a path; a one-line error otherwise."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ConfigError(f"{key} = {url!r} is not a URL: give rtmp://HOST[:PORT]/APP/KEY")
    if scheme.lower() == "srt":
        raise ConfigError(f"{key}: this build of PyAV has no SRT; stream with rtmp:// or rtmps:// instead")
    if scheme.lower() not in STREAM_SCHEMES:
        raise ConfigError(f"{key}: cannot stream to {scheme}://; use rtmp:// or rtmps://")
    host, _, path = rest.partition("/")
    hostname, _, port = host.rpartition(":") if ":" in host else (host, "", "")
    if not hostname or not path.strip("/") or (port and not (port.isdigit() and 0 < int(port) < 65536)):
        raise ConfigError(f"{key} = {url!r} is malformed: give rtmp://HOST[:PORT]/APP/KEY")


def with_output(config: PipelineConfig, path: str | None, extra: tuple[OutputConfig, ...] = ()) -> PipelineConfig:
    """The config with the command line's OUTPUT as its first file output (and ``extra`` outputs, from
    flags, after the config's); one output at least."""
    outputs = ((OutputConfig("file", path),) if path is not None else ()) + config.outputs + extra
    if not outputs:
        raise ConfigError("no output: give an output file (framepipe record out.mkv) or [[output]] tables in --config")
    return replace(config, outputs=build_outputs([asdict(o) for o in outputs], "the outputs"))


def load(
    path: str | Path | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    base: dict[str, dict[str, Any]] | None = None,
) -> PipelineConfig:
    """Read a TOML pipeline file (optional), overlay ``overrides``, validate everything.

    ``base`` (a tuned profile's tables) lies under the file: defaults < base < file < overrides.
    """
    data: dict[str, Any] = {}
    if path is not None:
        import tomllib  # here: 14 ms of every start without a file

        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist: check the path given to --config") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        except ValueError:  # tomllib reading an integer of thousands of digits
            raise ConfigError(f"config file {path} holds a number too long to read: give a sensible value") from None
    outputs = build_outputs(data.pop("output", []))
    for name in data:
        if name not in SECTIONS:
            raise ConfigError(f"unknown table [{name}] in {path}; allowed tables: {', '.join(SECTIONS)}, [[output]]")
    merged = {name: dict(data.get(name, {})) if isinstance(data.get(name, {}), dict) else data[name]
              for name in SECTIONS}  # fmt: skip
    for name, values in (base or {}).items():
        if isinstance(merged.get(name), dict):
            merged[name] = {**values, **merged[name]}
    for name in SECTIONS:
        if not isinstance(merged[name], dict):
            raise ConfigError(f"[{name}] must be a table of settings ([{name}] with key = value lines under it), "
                              f"not {shown(merged[name])}")  # fmt: skip
    for name, values in (overrides or {}).items():
        merged[name].update({k: v for k, v in values.items() if v is not None})
    return PipelineConfig(**{name: build_section(name, merged[name]) for name in SECTIONS}, outputs=outputs)

