"""What the recorded file holds, decided before any stage starts: the container by the output's
extension, the encoded frame size, the audio codecs and sample rate.

The supervisor plans with these and fp-encode writes by them; nothing here imports numpy or PyAV,
so the supervisor starts without them.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from urllib.parse import urlsplit

from pipeline.errors import ConfigError

#: Containers by file extension: (libav format name, muxer options).
CONTAINERS: dict[str, tuple[str, dict[str, str]]] = {
    ".mkv": ("matroska", {"cluster_time_limit": "1000", "flush_packets": "1"}),
    ".mp4": ("mp4", {"movflags": "frag_keyframe+empty_moov+default_base_moof", "flush_packets": "1"}),
    ".mov": ("mov", {"movflags": "frag_keyframe+empty_moov+default_base_moof", "flush_packets": "1"}),
}
#: Audio codecs by config name: (PyAV encoder, sample format it takes, samples per codec frame).
AUDIO_CODECS: dict[str, tuple[str, str, int]] = {"aac": ("aac", "fltp", 1024), "opus": ("libopus", "flt", 960)}
OUT_RATE = 48_000  # every audio track's sample rate
GLOBAL_HEADER = 1 << 22  # AV_CODEC_FLAG_GLOBAL_HEADER: codec headers apart, for every output to copy
#: Output kinds: the class that writes each (imported in fp-encode only).
OUTPUT_KINDS: dict[str, str] = {
    "file": "stages.outputs.file:FileOutput",
    "stream": "stages.outputs.stream:StreamOutput",
    "replay": "stages.outputs.replay:ReplayOutput",
}
STREAM_GOP_S = 2.0  # keyframe interval when a stream is an output (what streaming services ask for)
STREAM_KBPS = 6000  # video bitrate cap when a stream is an output and none is given (1080p60 at 6 Mb/s)


def container_for(path: str) -> tuple[str, dict[str, str]]:
    """The container format and options for an output path, by extension."""
    ext = Path(path).suffix.lower()
    if ext not in CONTAINERS:
        raise ConfigError(f"cannot write {ext or 'files without an extension'}: name the output .mkv, .mp4 or .mov")
    return CONTAINERS[ext]


def frame_rate(fps: float) -> Fraction:
    """fps as an exact fraction (29.97 -> 30000/1001): the file's frame rate, and the grid pauses snap to."""
    return Fraction(fps).limit_denominator(1001)


def output_size(width: int, height: int, output_height: int) -> tuple[int, int]:
    """The encoded size: as captured, or scaled down to ``output_height`` keeping the aspect (both even)."""
    if not output_height or output_height >= height:
        return width, height
    h = max(2, output_height & ~1)
    return max(2, round(width * h / height / 2) * 2), h


def block_frames(codec: str) -> int:
    """Samples per audio block: one codec frame, so no codec pads or splits a block."""
    return AUDIO_CODECS[codec][2]


def check_codec(output: str, codec: str) -> None:
    """Opus goes in Matroska only; fail before recording (supervisor)."""
    if codec == "opus" and Path(output).suffix.lower() != ".mkv":
        raise ConfigError(f"audio codec opus needs an .mkv output, not {Path(output).name}: use aac, or name it .mkv")


def public_url(url: str) -> str:
    """A stream's URL for people, logs and the stats: the stream key (its last part) and any query hidden."""
    parts = urlsplit(url)
    app, sep, _key = parts.path.rstrip("/").rpartition("/")
    shown = f"{app}/***" if sep and app else parts.path
    return f"{parts.scheme}://{parts.netloc}{shown}"
