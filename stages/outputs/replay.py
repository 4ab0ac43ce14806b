"""The replay buffer (fp-encode): the last seconds of encoded packets in memory, saved on demand.

It keeps packets, not pictures (raw 1080p60 is ~500 MB/s), of every track, one keyframe interval to a
buffer (``Interval``), and trims from the front by whole intervals, so it always holds at least
``seconds`` and starts on a keyframe (OBS and GPU Screen Recorder do the same). A memory cap
(``max_mb``) trims further; when it bites, one warning says how many seconds it holds. ``save``
writes the newest ``seconds`` to a new file on a thread of its own, while recording goes on: from the
keyframe at or before that point, every track shifted by the same time so the file starts at 0 and
sound stays with the picture.
"""

from __future__ import annotations

import contextlib
import threading
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from stages.outputs.file import muxed
from stages.outputs.formats import container_for
from stages.outputs.output import Coded, Output
from stages.outputs.paths import create_new

PER_PACKET = 40  # bytes an interval holds per packet beside its data (five 64-bit fields), counted in the cap
INTERVAL_OVERHEAD = 300  # bytes of Python objects per interval held


def seconds_of(packet: Coded) -> float:
    return float(packet.dts * Fraction(packet.time_base)) if packet.dts is not None else 0.0


def new_name(folder: Path, when: float) -> Path:
    """``Replay YYYY-MM-DD at HH.MM.SS.mkv`` in ``folder``, not yet taken."""
    stem = time.strftime("Replay %Y-%m-%d at %H.%M.%S", time.localtime(when))
    for n in range(1, 1000):
        path = folder / (f"{stem}.mkv" if n == 1 else f"{stem} ({n}).mkv")
        if not path.exists() and not path.is_symlink():
            return path
    raise FileExistsError(f"too many replays saved this second in {folder}")


class Interval:
    """One keyframe interval: its packets' bytes in one buffer and their fields in one array, so holding a
    packet costs its bytes and 40 more (Python objects a packet cost ~200: a fifth of a desktop's bitrate)."""

    __slots__ = ("data", "meta", "start")
    FIELDS = 5  # track, pts, dts, flags (1: keyframe, 2: video), size

    def __init__(self, start: float) -> None:
        self.start = start  # the keyframe's time, s
        self.data = bytearray()
        self.meta = array("q")

    def add(self, packet: Coded) -> None:
        self.data += packet.data
        self.meta.extend((packet.track, packet.pts, packet.dts, packet.keyframe | packet.video << 1, len(packet.data)))

    @property
    def nbytes(self) -> int:
        return len(self.data) + PER_PACKET * (len(self.meta) // self.FIELDS) + INTERVAL_OVERHEAD

    def copy(self) -> Interval:
        twin = Interval(self.start)
        twin.data, twin.meta = bytearray(self.data), array("q", self.meta)
        return twin

    def packets(self, bases: dict[int, Any]) -> Iterator[Coded]:
        offset = 0
        for i in range(0, len(self.meta), self.FIELDS):
            track, pts, dts, flags, size = self.meta[i : i + self.FIELDS]
            yield Coded(track, bytes(self.data[offset : offset + size]), pts, dts, bases[track], bool(flags & 1),
                        bool(flags & 2))  # fmt: skip
            offset += size


class ReplayOutput(Output):
    """Holds the last ``seconds`` of packets; ``save`` writes them out (never blocks the encoder)."""

    kind = "replay"

    def __init__(self, settings: dict[str, Any], warn: Callable[[str], None]) -> None:
        super().__init__(settings, warn)
        self.seconds = float(settings["seconds"])
        self.max_bytes = int(float(settings["max_mb"]) * 1e6)
        self.folder = Path(settings.get("folder") or ".")
        self.held: deque[Interval] = deque()
        self.held_bytes = 0
        self.newest = 0.0  # time of the newest video packet held, s
        self.bases: dict[int, Any] = {}  # each track's time base
        self.capped = False
        self.lock = threading.Lock()
        self.counts.update({"saved": 0, "trimmed": 0})
        self.tracks: list[Any] = []

    def describe(self) -> str:
        return f"replay buffer ({self.seconds:g} s)"

    def begin(self, tracks: list[Any]) -> None:
        self.tracks = tracks  # templates for the saved files' streams; no thread: holding costs an append

    def put(self, packet: Coded) -> None:
        """Hold one packet; a keyframe starts a new interval, and the oldest go while the rest cover ``seconds``
        (encoder thread, never blocks)."""
        with self.lock:
            if packet.video and packet.keyframe:
                self.held.append(Interval(seconds_of(packet)))
                self.held_bytes += INTERVAL_OVERHEAD
            elif not self.held:
                return  # a buffer starts on a keyframe
            self.bases.setdefault(packet.track, packet.time_base)
            self.held[-1].add(packet)
            self.held_bytes += len(packet.data) + PER_PACKET
            self.counts["packets"] += 1
            self.counts["frames"] += packet.video
            if packet.video:
                self.newest = seconds_of(packet)
            if (packet.video and packet.keyframe) or self.held_bytes > self.max_bytes:
                self._trim()

    def _trim(self) -> None:
        """Drop the oldest interval while the rest still covers ``seconds`` (and always while over the cap)."""
        while len(self.held) > 1:
            over = self.held_bytes > self.max_bytes
            enough = self.newest - self.held[1].start >= self.seconds
            if not (enough or over):
                return
            if over and not enough and not self.capped:
                self.capped = True
                self.warn(f"replay buffer capped at {self.max_bytes / 1e6:g} MB: it holds about "
                          f"{self.newest - self.held[1].start:.0f} s, not {self.seconds:g} s (raise --replay-max-mb)")
            gone = self.held.popleft()
            self.held_bytes -= gone.nbytes
            self.counts["trimmed"] += len(gone.meta) // Interval.FIELDS

    def save(self, seconds: float | None, done: Callable[[str, str, float], None]) -> None:
        """Write the newest ``seconds`` (None: all) on a thread; ``done(path, error, seconds)`` when closed."""
        with self.lock:  # the intervals before the last are complete: only the last is copied
            held = [*list(self.held)[:-1], self.held[-1].copy()] if self.held else []
            newest, bases = self.newest, dict(self.bases)
        worker = threading.Thread(target=self._write, args=(held, newest, bases, seconds, done),
                                  name="fp-replay-save", daemon=True)  # fmt: skip
        worker.start()

    def _write(self, held: list[Interval], newest: float, bases: dict[int, Any], seconds: float | None,
               done: Callable[[str, str, float], None]) -> None:  # fmt: skip
        path = ""
        try:
            if not held:
                raise ValueError("the replay buffer holds nothing yet")
            wanted = newest - seconds if seconds else float("-inf")
            first = max((i for i, v in enumerate(held) if v.start <= wanted), default=0)
            start = held[first].start
            packets = [p for v in held[first:] for p in v.packets(bases) if p.video or seconds_of(p) >= start]
            self.folder.mkdir(parents=True, exist_ok=True)
            target = new_name(self.folder, time.time())
            path = str(target)
            length = write_file(target, self.tracks, packets, start)
            self.counts["saved"] += 1
            done(path, "", length)
        except Exception as exc:
            done(path, str(exc).splitlines()[0] if str(exc) else type(exc).__name__, 0.0)

    def end(self) -> None:
        """Nothing to close: what it holds stays for the final stats (the process ends after them)."""

    def details(self) -> dict[str, Any]:
        with self.lock:
            span = self.newest - self.held[0].start if self.held else 0.0
            data = sum(len(v.data) for v in self.held)
            return {"held_mb": round(self.held_bytes / 1e6, 3), "held_data_mb": round(data / 1e6, 3),
                    "held_s": round(span, 3), "cap_mb": self.max_bytes / 1e6, "seconds": self.seconds,
                    "capped": self.capped, "folder": str(self.folder)}  # fmt: skip


def write_file(path: Path, tracks: list[Any], packets: list[Coded], start: float) -> float:
    """A crash-safe Matroska file of ``packets``, every track shifted back by ``start`` seconds; its length."""
    fmt, options = container_for(str(path))
    file = create_new(str(path))  # never an existing file, never through a symlink
    container: Any = av.open(file, mode="w", format=fmt, options=options)
    try:
        streams = []
        for template in tracks:
            stream = container.add_stream_from_template(template)
            for key in ("title", "handler_name"):
                if key in template.metadata:
                    stream.metadata[key] = template.metadata[key]
            streams.append(stream)
        last = start
        for p in packets:
            base = Fraction(p.time_base)
            shift = round(Fraction(start) / base)
            shifted = Coded(p.track, p.data, p.pts - shift, p.dts - shift, p.time_base, p.keyframe, p.video)
            container.mux(muxed(shifted, streams[p.track]))
            last = max(last, seconds_of(p))
    finally:
        with contextlib.suppress(Exception):
            container.close()
        file.close()
    return last - start
