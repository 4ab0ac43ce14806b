"""The replay buffer (fp-encode): the last seconds of encoded packets in memory, saved on demand.

It keeps packets, not pictures (raw 1080p60 is ~500 MB/s), of every track, and trims from the front
by whole keyframe intervals, so it always holds at least ``seconds`` and starts on a keyframe (OBS
and GPU Screen Recorder do the same). A memory cap (``max_mb``) trims further; when it bites, one
warning says how many seconds it holds. ``save`` writes the newest ``seconds`` to a new file on a
thread of its own, while recording goes on: from the keyframe at or before that point, every track
shifted by the same time so the file starts at 0 and sound stays with the picture.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from stages.outputs.file import muxed
from stages.outputs.formats import container_for
from stages.outputs.output import Coded, Output
from stages.outputs.paths import create_new

PACKET_OVERHEAD = 200  # bytes of Python objects per packet held beside its data (measured: 193), counted in the cap


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


class ReplayOutput(Output):
    """Holds the last ``seconds`` of packets; ``save`` writes them out (never blocks the encoder)."""

    kind = "replay"

    def __init__(self, settings: dict[str, Any], warn: Callable[[str], None]) -> None:
        super().__init__(settings, warn)
        self.seconds = float(settings["seconds"])
        self.max_bytes = int(float(settings["max_mb"]) * 1e6)
        self.folder = Path(settings.get("folder") or ".")
        self.held: deque[Coded] = deque()
        self.held_bytes = 0
        self.capped = False
        self.lock = threading.Lock()
        self.counts.update({"saved": 0, "trimmed": 0})
        self.tracks: list[Any] = []

    def describe(self) -> str:
        return f"replay buffer ({self.seconds:g} s)"

    def begin(self, tracks: list[Any]) -> None:
        self.tracks = tracks  # templates for the saved files' streams; no thread: holding costs an append

    def put(self, packet: Coded) -> None:
        """Hold one packet; trim whole keyframe intervals off the front (encoder thread, never blocks)."""
        with self.lock:
            if not self.held and not (packet.video and packet.keyframe):
                return  # a buffer starts on a keyframe
            self.held.append(packet)
            self.held_bytes += len(packet.data) + PACKET_OVERHEAD
            self.counts["packets"] += 1
            self.counts["frames"] += packet.video
            if (packet.video and packet.keyframe) or self.held_bytes > self.max_bytes:
                self._trim(seconds_of(packet) if packet.video else None)  # a new interval began, or the cap bites

    def _trim(self, newest: float | None) -> None:
        """Drop the oldest interval while the rest still covers ``seconds`` (and always while over the cap)."""
        while True:
            nxt = self._second_keyframe()
            if nxt is None:
                return
            over = self.held_bytes > self.max_bytes
            enough = newest is not None and newest - seconds_of(self.held[nxt]) >= self.seconds
            if not (enough or over):
                return
            if over and not enough and not self.capped:
                self.capped = True
                held = (newest or 0) - seconds_of(self.held[nxt])
                self.warn(f"replay buffer capped at {self.max_bytes / 1e6:g} MB: it holds about {held:.0f} s, "
                          f"not {self.seconds:g} s (raise --replay-max-mb)")  # fmt: skip
            for _ in range(nxt):
                gone = self.held.popleft()
                self.held_bytes -= len(gone.data) + PACKET_OVERHEAD
                self.counts["trimmed"] += 1

    def _second_keyframe(self) -> int | None:
        """Index of the keyframe after the first packet (the start of the next interval), if any."""
        for i, p in enumerate(self.held):
            if i and p.video and p.keyframe:
                return i
        return None

    def save(self, seconds: float | None, done: Callable[[str, str, float], None]) -> None:
        """Write the newest ``seconds`` (None: all) on a thread; ``done(path, error, seconds)`` when closed."""
        with self.lock:
            packets = list(self.held)
        worker = threading.Thread(target=self._write, args=(packets, seconds, done), name="fp-replay-save",
                                  daemon=True)  # fmt: skip
        worker.start()

    def _write(self, packets: list[Coded], seconds: float | None, done: Callable[[str, str, float], None]) -> None:
        path = ""
        try:
            if not packets:
                raise ValueError("the replay buffer holds nothing yet")
            start, packets = from_keyframe(packets, seconds)
            self.folder.mkdir(parents=True, exist_ok=True)
            target = new_name(self.folder, time.time())
            path = str(target)
            held = write_file(target, self.tracks, packets, start)
            self.counts["saved"] += 1
            done(path, "", held)
        except Exception as exc:
            done(path, str(exc).splitlines()[0] if str(exc) else type(exc).__name__, 0.0)

    def end(self) -> None:
        """Nothing to close: what it holds stays for the final stats (the process ends after them)."""

    def details(self) -> dict[str, Any]:
        with self.lock:
            video = [p for p in self.held if p.video]
            span = seconds_of(video[-1]) - seconds_of(video[0]) if len(video) > 1 else 0.0
            data = self.held_bytes - PACKET_OVERHEAD * len(self.held)
            return {"held_mb": round(self.held_bytes / 1e6, 3), "held_data_mb": round(data / 1e6, 3),
                    "held_s": round(span, 3),
                    "cap_mb": self.max_bytes / 1e6, "seconds": self.seconds, "capped": self.capped,
                    "folder": str(self.folder)}  # fmt: skip


def from_keyframe(packets: list[Coded], seconds: float | None) -> tuple[float, list[Coded]]:
    """The packets from the last keyframe at or before ``seconds`` before the newest video packet; its time."""
    video = [p for p in packets if p.video]
    newest = seconds_of(video[-1])
    keys = [p for p in video if p.keyframe]
    wanted = newest - seconds if seconds else float("-inf")
    start = max((seconds_of(k) for k in keys if seconds_of(k) <= wanted), default=seconds_of(keys[0]))
    first = next(i for i, p in enumerate(packets) if p.video and p.keyframe and seconds_of(p) == start)
    return start, [p for p in packets[first:] if p.video or seconds_of(p) >= start]


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
