"""The base of every output (fp-encode): a bounded queue of encoded packets and the thread that drains it.

The encoder calls ``put`` and never waits: when the queue is full the packet is dropped and counted
("behind"), and after a dropped video packet the output skips to the next keyframe, so what it
writes still decodes. A failure in ``write`` ends this output with one line; the others go on.
Subclasses open, write one packet and close (``FileOutput``; a stream or replay buffer alike).
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

QUEUE_BYTES = 64 << 20  # an output may fall this far behind before it drops ...
QUEUE_PACKETS = 4096  # ... or this many packets
CLOSE_TIMEOUT_S = 20.0  # at the end, how long an output may take to write what is queued and close


class OutputState(StrEnum):
    """Where an output is."""

    OPEN = "open"
    FAILED = "failed"  # it ended early; what it wrote is kept
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Coded:
    """One encoded packet, as every output gets it (its own copy of the bytes, so muxers never share one)."""

    track: int  # index into the encoder's tracks: 0 video, then the audio tracks
    data: bytes
    pts: int
    dts: int
    time_base: Any  # Fraction
    keyframe: bool
    video: bool
    capture_ns: int = -1  # video: the running time its frame was grabbed, when known


class Output:
    """A destination for the encoded packets; ``describe`` names it for people."""

    kind = "output"

    def __init__(self, settings: dict[str, Any], warn: Callable[[str], None]) -> None:
        self.settings = settings
        self.warn = warn
        self.state = OutputState.OPEN
        self.why = ""
        self.counts = {"packets": 0, "frames": 0, "bytes": 0, "dropped_behind": 0, "dropped_failed": 0}
        self._queue: deque[Coded | None] = deque()
        self._queued_bytes = 0
        self._ready = threading.Condition()
        self._skip_to_key = False
        self._thread: threading.Thread | None = None

    def describe(self) -> str:
        return self.kind

    # --- the encoder's side -------------------------------------------------------------------

    def begin(self, tracks: list[Any]) -> None:
        """Open for these encoder streams (the templates) and start the thread; a failure ends this output."""
        try:
            self.open(tracks)
        except Exception as exc:
            self.fail(exc)
            return
        self._thread = threading.Thread(target=self._drain, name=f"fp-{self.kind}", daemon=True)
        self._thread.start()

    def put(self, packet: Coded) -> None:
        """Queue one packet; never blocks (full: dropped and counted)."""
        if self.state is not OutputState.OPEN:
            self.counts["dropped_failed"] += 1
            return
        if packet.video and self._skip_to_key:
            if not packet.keyframe:
                self.counts["dropped_behind"] += 1
                return
            self._skip_to_key = False
        with self._ready:
            if len(self._queue) >= QUEUE_PACKETS or self._queued_bytes + len(packet.data) > QUEUE_BYTES:
                self.counts["dropped_behind"] += 1
                self._skip_to_key = self._skip_to_key or packet.video
                return
            self._queue.append(packet)
            self._queued_bytes += len(packet.data)
            self._ready.notify()

    def end(self) -> None:
        """No more packets: write what is queued, close, and wait (at most CLOSE_TIMEOUT_S)."""
        with self._ready:
            self._queue.append(None)
            self._ready.notify()
        if self._thread is not None:
            self._thread.join(CLOSE_TIMEOUT_S)
            if self._thread.is_alive():
                self.warn(f"{self.describe()} did not finish writing within {CLOSE_TIMEOUT_S:.0f} s; left as it is")
        if self.state is OutputState.OPEN:
            self.state = OutputState.CLOSED

    def fail(self, exc: BaseException) -> None:
        """End this output with one line; the recording goes on with the others."""
        if self.state is OutputState.FAILED:
            return
        self.state = OutputState.FAILED
        self.why = describe_error(exc)
        self.warn(f"{self.describe()} failed ({self.why}); what it wrote is kept, the recording goes on")
        with contextlib.suppress(Exception):  # closing a broken output: what is written stays
            self.close()

    def stats(self) -> dict[str, Any]:
        return {"kind": self.kind, "state": self.state.value, "queued": len(self._queue), **self.counts,
                **({"error": self.why} if self.why else {}), **self.details()}  # fmt: skip

    # --- the output's thread ------------------------------------------------------------------

    def _drain(self) -> None:
        while True:
            with self._ready:
                while not self._queue:
                    self._ready.wait()
                packet = self._queue.popleft()
                if packet is not None:
                    self._queued_bytes -= len(packet.data)
            if packet is None:
                break
            if self.state is not OutputState.OPEN:
                self.counts["dropped_failed"] += 1
                continue
            try:
                self.write(packet)
            except Exception as exc:
                self.fail(exc)
                continue
            self.counts["packets"] += 1
            self.counts["frames"] += packet.video
            self.counts["bytes"] += len(packet.data)
        if self.state is OutputState.OPEN:
            try:
                self.close()
            except Exception as exc:
                self.fail(exc)

    # --- what a kind of output does ------------------------------------------------------------

    def open(self, tracks: list[Any]) -> None:
        """Open the destination for the encoder's streams (encoder thread, before any packet)."""

    def write(self, packet: Coded) -> None:
        """Write one packet (the output's thread)."""

    def close(self) -> None:
        """Finish and close (the output's thread; or the encoder's after a failure); at most once."""

    def details(self) -> dict[str, Any]:
        """Kind-specific stats (path, bytes sent, memory held)."""
        return {}


def describe_error(exc: BaseException) -> str:
    """An error in words: the OS's reason and the file, not a class name."""
    strerror = getattr(exc, "strerror", None)
    filename = getattr(exc, "filename", None)
    if strerror:
        return f"{strerror}: {filename}" if filename else str(strerror)
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
