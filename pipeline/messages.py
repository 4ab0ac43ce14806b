"""Every message that crosses a process boundary, and its msgpack form.

Messages are small frozen dataclasses. ``encode`` packs one as a msgpack
array ``[tag, field, ...]``; ``decode`` turns the bytes back. Control (state,
stats, warnings, errors, end of stream) and frame descriptors share this one
module; pixels never travel in a message, they stay in a ring slot.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar

import msgpack

# --- control: supervisor -> stage -------------------------------------------------


@dataclass(frozen=True)
class Start:
    """Go: the pipeline's base time, in clock ns (supervisor -> every stage)."""

    TAG: ClassVar[int] = 1
    base_time: int


@dataclass(frozen=True)
class Stop:
    """Stop capturing (supervisor -> stage).

    ``fast`` skips draining what is queued; ``at`` (running time, ns), when set,
    makes a source stop at the first frame due at or after it, so a recording
    of D seconds holds exactly D * fps frames.
    """

    TAG: ClassVar[int] = 2
    fast: bool = False
    at: int = 0


@dataclass(frozen=True)
class Pause:
    """Write nothing from running time ``at`` (ns, on the frame grid) on, until a Resume (supervisor -> encoder)."""

    TAG: ClassVar[int] = 3
    at: int


@dataclass(frozen=True)
class Resume:
    """Write again from running time ``at`` (ns, on the frame grid), shifted back by the paused time."""

    TAG: ClassVar[int] = 4
    at: int


@dataclass(frozen=True)
class SaveReplay:
    """Write the replay buffer's last ``seconds`` (0: all it holds) to a new file (supervisor -> encoder)."""

    TAG: ClassVar[int] = 5
    request: int  # the supervisor's number for it: the answer names it
    seconds: float = 0.0


# --- control: stage -> supervisor -------------------------------------------------


@dataclass(frozen=True)
class State:
    """A stage reached a lifecycle state (a ``pipeline.stage.StageState`` value: ready, running, done)."""

    TAG: ClassVar[int] = 10
    stage: str
    state: str
    info: dict[str, Any]


@dataclass(frozen=True)
class Stats:
    """A stage's counters so far (periodic, and final just before "done")."""

    TAG: ClassVar[int] = 11
    stage: str
    values: dict[str, Any]


@dataclass(frozen=True)
class Warning:
    """Something went wrong but the recording goes on (shown to people)."""

    TAG: ClassVar[int] = 12
    stage: str
    text: str


@dataclass(frozen=True)
class Error:
    """A stage failed; ``fatal`` tells whether it stopped (the supervisor applies policy)."""

    TAG: ClassVar[int] = 13
    stage: str
    text: str
    fatal: bool = True


@dataclass(frozen=True)
class Saved:
    """A replay was written to ``path`` (or not: ``error``), in answer to SaveReplay ``request``."""

    TAG: ClassVar[int] = 14
    stage: str
    request: int
    path: str = ""
    error: str = ""
    seconds: float = 0.0  # what the file holds


# --- data path: descriptors only, never pixels ------------------------------------


@dataclass(frozen=True)
class Frame:
    """A captured frame sits in ``slot`` (capture -> timestamper)."""

    TAG: ClassVar[int] = 20
    slot: int
    seq: int
    capture_ns: int  # running time at grab
    flags: int
    grab_ns: int = 0  # the picture was made between capture_ns and capture_ns + grab_ns (the X server's copy)


@dataclass(frozen=True)
class Encode:
    """Encode the frame in ``slot`` at ``pts``; repeats reuse it (timestamper -> encoder)."""

    TAG: ClassVar[int] = 21
    slot: int
    seq: int
    pts: int
    capture_ns: int
    grab_ns: int = 0


@dataclass(frozen=True)
class Repeat:
    """Encode the held frame again at ``pts`` (constant frame rate fill)."""

    TAG: ClassVar[int] = 22
    pts: int


@dataclass(frozen=True)
class Hold:
    """A skipped frame: give ``slot`` back without encoding it (timestamper -> encoder)."""

    TAG: ClassVar[int] = 23
    slot: int
    seq: int


@dataclass(frozen=True)
class AudioTracks:
    """The audio tracks to come, sent once before any block (audio capture -> encoder); empty: none."""

    TAG: ClassVar[int] = 24
    names: list[str]  # one per source, then "mix" if asked for
    rate: int  # samples per second of every track
    channels: int


@dataclass(frozen=True)
class AudioBlock:
    """``frames`` samples of ``track`` sit in audio ring ``slot``, from sample ``pts`` of the track's timeline.

    Sample ``pts`` belongs to running time ``pts / rate``; the encoder releases the slot once encoded.
    """

    TAG: ClassVar[int] = 25
    track: int
    slot: int
    seq: int
    pts: int
    frames: int


@dataclass(frozen=True)
class EndOfStream:
    """No more data on this path; downstream drains and finishes.

    ``end_ns``: running time the stream covers up to (a source's last tick), so
    a constant frame rate timeline ends where capture ended, even after drops.
    """

    TAG: ClassVar[int] = 30
    stage: str
    end_ns: int = 0


Message = (
    Start | Stop | Pause | Resume | SaveReplay | State | Stats | Warning | Error | Saved | Frame | Encode | Repeat
    | Hold | AudioTracks | AudioBlock | EndOfStream
)  # fmt: skip

_KINDS = (
    Start, Stop, Pause, Resume, SaveReplay, State, Stats, Warning, Error, Saved, Frame, Encode, Repeat, Hold,
    AudioTracks, AudioBlock, EndOfStream,
)  # fmt: skip
_TYPES: dict[int, type] = {cls.TAG: cls for cls in _KINDS}
_FIELDS: dict[type, tuple[str, ...]] = {cls: tuple(f.name for f in fields(cls)) for cls in _TYPES.values()}


def encode(msg: Message) -> bytes:
    """Pack a message as msgpack bytes."""
    cls = type(msg)
    return msgpack.packb([cls.TAG, *(getattr(msg, name) for name in _FIELDS[cls])])


def decode(data: bytes) -> Message:
    """Unpack bytes made by ``encode``; a malformed message raises ValueError."""
    try:
        tag, *values = msgpack.unpackb(data, strict_map_key=False)
        cls = _TYPES[tag]
    except (msgpack.UnpackException, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"not a framepipe message: {exc}") from exc
    msg: Message = cls(*values)
    return msg
