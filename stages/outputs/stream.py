"""A live stream (fp-encode): the encoded packets as FLV over RTMP or RTMPS, reconnecting when the server goes.

It is an ``Output``: the encoder hands it packets through a bounded queue and its own thread does all the
network work, so a slow or dead network never stalls capture, the encoder or the other outputs. When the
network is slower than the stream the queue fills and packets are dropped (video then up to the next
keyframe); every packet a viewer never gets is counted as ``dropped_network`` (``dropped_behind`` stays 0:
a stream falls behind only because of its network).

The connection is a ``stages.outputs.avio.Link``: PyAV's FLV muxer writes into it, and it hands the bytes
to FFmpeg's own rtmp/rtmps protocol without holding the GIL (see that module for why not ``av.open(url)``).

Each connection is new: a new FLV container whose header goes out at once. It starts on a video keyframe,
audio older than that keyframe is left out, and every track is shifted by the keyframe's dts so the
connection's timestamps start at 0: each connection is a new publish to the server, as in OBS, and no
server sees time go backwards within one.

Losing it. When a write fails the connection is closed, one line says so and the next try is RETRY_FIRST_S
later, RETRY_FACTOR times longer after each failed try up to RETRY_MAX_S, one line a try; packets meanwhile
are dropped (counted), never held. The recording goes on: a stream never ends it (``fail`` is for bugs).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import threading
from collections import deque
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import av

from pipeline.clock import NS_PER_S, now_ns
from stages.outputs.avio import Link, ffmpeg
from stages.outputs.file import muxed
from stages.outputs.formats import public_url
from stages.outputs.output import Coded, Output, OutputState, describe_error

RETRY_FIRST_S = 2.0  # after a loss (or a failed first try), the next try this much later ...
RETRY_FACTOR = 1.5  # ... then this many times longer after each failed try ...
RETRY_MAX_S = 30.0  # ... up to this
STALL_S = 5.0  # a network wait (connect, handshake, a write) without progress this long fails (rw_timeout)
END_S = 5.0  # after end(), the stream may take this long to send what is queued and close; then it is cut off
RATE_WINDOW_S = 5.0  # bitrate_kbps: over the last this many seconds
HELD_AUDIO = 256  # audio packets held while a new connection waits for its keyframe (about 5 s of AAC)
FLV_OPTIONS = {"flvflags": "no_duration_filesize", "flush_packets": "1"}  # no seeking back; each packet at once
NETWORK_ERRORS = (OSError, av.FFmpegError)  # a connect or a write failing with these is the network's doing
_IDLE = object()  # the queue had nothing within the wait


def seconds(pts: int | None, time_base: Any) -> Fraction:
    return Fraction(pts or 0) * Fraction(time_base)


# --- the output ---------------------------------------------------------------------------------


class StreamOutput(Output):
    """One live stream to an RTMP(S) server: ``settings["url"]`` (rtmp://HOST[:PORT]/APP/KEY)."""

    kind = "stream"

    def __init__(self, settings: dict[str, Any], warn: Callable[[str], None]) -> None:
        super().__init__(settings, warn)
        self.url: str = settings["url"]
        self.templates: list[Any] = []
        self.container: Any = None  # the connection's FLV container; None while disconnected
        self.link: Link | None = None
        self.streams: list[Any] = []
        self.tries = 0  # connection attempts, the first included
        self.connections = 0  # tries that connected
        self.reconnects = 0  # connections made after a loss or a failed try
        self.first_error = ""  # why the first try failed ("" when it connected)
        self.first_try = threading.Event()  # set once the first try is over, connected or not
        self._sent_before = 0  # FLV bytes sent on earlier connections
        self._dropped_put = 0  # counted on the encoder's thread (queue full) ...
        self._dropped_here = 0  # ... and on the stream's (disconnected, waiting for a keyframe, cut off)
        self._connected_ns = 0  # when this connection started; 0 while disconnected
        self._connected_total_ns = 0  # earlier connections
        self._lost_ns = 0  # when the stream was lost (or first failed); 0 while connected
        self._delay_s = RETRY_FIRST_S
        self._next_try_ns = 0
        self._await_key = True
        self._held: deque[Coded] = deque()  # audio waiting for a new connection's first keyframe
        self._start = Fraction(0)  # this connection's first keyframe (pts), seconds: older audio is left out
        self._origin = Fraction(0)  # this connection's time 0 (the keyframe's dts), seconds
        self._shifts: dict[Fraction, int] = {}  # the origin in each time base
        self._rate: deque[tuple[int, int]] = deque()  # (time, bytes sent so far), for bitrate_kbps
        self._rate_lock = threading.Lock()
        self._connecting = False
        self._stop = ctypes.create_string_buffer(b"0", 2)  # "1": FFmpeg ends the network call now (interrupt)
        self._ending = False  # end() was called: finish within END_S
        self._cut_off = False  # the end came and went: what is left is dropped

    def describe(self) -> str:
        return f"stream {public_url(self.url)}"

    # --- the encoder's side -------------------------------------------------------------------

    def open(self, tracks: list[Any]) -> None:
        """Check that FLV carries these codecs and that FFmpeg's AVIO loads (no network: the thread connects)."""
        supported = av.open(os.devnull, mode="w", format="flv").supported_codecs
        for template in tracks:
            if template.codec_context.name not in supported:
                raise ValueError(f"FLV cannot carry {template.codec_context.name}")
        ffmpeg()
        self.templates = list(tracks)

    def put(self, packet: Coded) -> None:
        """As ``Output.put``; a full queue here means the network is slower than the stream: counted so."""
        behind = self.counts["dropped_behind"]
        super().put(packet)
        if self.counts["dropped_behind"] != behind:
            self._dropped_put += self.counts["dropped_behind"] - behind
            self.counts["dropped_behind"] = behind

    def end(self) -> None:
        """As ``Output.end``, within END_S: a try in progress is given up at once, sending what is queued is
        cut off at END_S."""
        self._ending = True
        if self._connecting:
            self._halt(True)
        deadline = threading.Timer(END_S, self._past_end)
        deadline.daemon = True
        deadline.start()
        try:
            super().end()
        finally:
            deadline.cancel()

    def _past_end(self) -> None:
        self._cut_off = True
        self._halt(True)

    def _halt(self, stop: bool) -> None:
        """Have FFmpeg end (True) its network calls at once, or let them run again (not once the end came)."""
        if stop or not self._ending:
            self._stop.value = b"1" if stop else b"0"

    def wait_first_try(self, timeout_s: float) -> str | None:
        """Wait for the first connection attempt: None when it connected, else why not."""
        if not self.first_try.wait(timeout_s):
            return f"no answer within {timeout_s:g} s"
        return self.first_error or None

    # --- the stream's thread ------------------------------------------------------------------

    def _drain(self) -> None:
        while True:
            trying = self.container is None and not self._ending and self.state is OutputState.OPEN
            if trying and now_ns() >= self._next_try_ns:
                try:
                    self._connect()
                except Exception as exc:  # not the network's doing: this FFmpeg, or a bug
                    self.fail(exc)
                    self.first_error = self.first_error or self.why
                    self.first_try.set()
                    continue
            wait = None
            if trying and self.container is None:
                wait = max(0.0, (self._next_try_ns - now_ns()) / NS_PER_S)
            packet = self._take(wait)
            if packet is _IDLE:
                continue
            if packet is None:
                break
            assert isinstance(packet, Coded)
            if self.state is not OutputState.OPEN:
                self.counts["dropped_failed"] += 1
            elif self.container is None or self._cut_off:
                self._dropped_here += 1
            else:
                try:
                    self._send(packet)
                except NETWORK_ERRORS as exc:
                    self._dropped_here += 1
                    self._lost(exc)
                except Exception as exc:
                    self.fail(exc)
        if self.state is OutputState.OPEN:
            self.close()

    def _take(self, wait: float | None) -> Coded | object | None:
        """The next packet, None at the end, or _IDLE when nothing came within ``wait`` seconds."""
        with self._ready:
            if not self._queue:
                self._ready.wait(wait)
                if not self._queue:
                    return _IDLE
            packet = self._queue.popleft()
            if packet is not None:
                self._queued_bytes -= len(packet.data)
            return packet

    def _connect(self) -> None:
        """One try: connect (handshake and publish), then the FLV header; one line if it fails."""
        self.tries += 1
        self._connecting = True
        link: Link | None = None
        container: Any = None
        try:
            link = Link(self.url, self._stop)
            container = av.open(link, mode="w", format="flv", container_options=FLV_OPTIONS)
            streams = [container.add_stream_from_template(t) for t in self.templates]
            container.start_encoding()
        except BaseException as exc:
            self._halt(True)
            with contextlib.suppress(*NETWORK_ERRORS):
                if container is not None:
                    container.close()
            if link is not None:
                link.hang_up()
            self._halt(False)
            if not isinstance(exc, NETWORK_ERRORS):
                raise
            self._try_failed(network_reason(exc))
            return
        finally:
            self._connecting = False
        self.link, self.container, self.streams = link, container, streams
        self._connected_ns = now_ns()
        self._await_key, self._held = True, deque()
        self._delay_s = RETRY_FIRST_S
        if self._lost_ns:
            self.reconnects += 1
            away = (self._connected_ns - self._lost_ns) / NS_PER_S
            self.warn(f"{self.describe()} {'re' if self.connections else ''}connected after {away:.1f} s")
            self._lost_ns = 0
        self.connections += 1
        self.first_try.set()

    def _try_failed(self, reason: str) -> None:
        now = now_ns()
        if self.tries == 1:
            self.first_error = reason
            self.first_try.set()
        if self._ending:
            return
        if self.tries == 1:
            self._lost_ns = now
            self.warn(f"{self.describe()} unreachable ({reason}); recording without it, "
                      f"retrying in {self._delay_s:.1f} s")  # fmt: skip
        else:
            self._delay_s = min(RETRY_MAX_S, self._delay_s * RETRY_FACTOR)
            self.warn(f"{self.describe()} still unreachable ({reason}); trying again in {self._delay_s:.1f} s")
        self._next_try_ns = now + round(self._delay_s * NS_PER_S)

    def _lost(self, exc: BaseException) -> None:
        reason = network_reason(exc)
        self._disconnect(abort=True)
        if self._ending:
            if not self._cut_off:
                self.warn(f"{self.describe()} lost at the end ({reason}); what was still queued is not sent")
            return
        now = now_ns()
        self._lost_ns = now
        self._delay_s = RETRY_FIRST_S
        self._next_try_ns = now + round(self._delay_s * NS_PER_S)
        self.warn(f"{self.describe()} lost ({reason}); reconnecting in {self._delay_s:.1f} s")

    def _disconnect(self, abort: bool) -> None:
        """Close this connection: at the end politely (the FLV trailer, an unpublish), after a loss at once."""
        container, self.container = self.container, None
        link, self.link = self.link, None
        if container is None or link is None:
            return
        self._connected_total_ns += now_ns() - self._connected_ns
        self._connected_ns = 0
        self._dropped_here += len(self._held)
        self._held.clear()
        if abort:
            self._halt(True)
        try:
            with contextlib.suppress(*NETWORK_ERRORS):
                container.close()
            link.hang_up()
        finally:
            self._halt(False)
            self._sent_before += link.sent

    def _send(self, packet: Coded) -> None:
        """Write one packet: a new connection waits for a keyframe (holding the audio), then every track is
        shifted so the connection starts at 0."""
        if self._await_key:
            if not packet.video:
                if len(self._held) >= HELD_AUDIO:
                    self._held.popleft()
                    self._dropped_here += 1
                self._held.append(packet)
                return
            if not packet.keyframe:
                self._dropped_here += 1
                return
            self._await_key = False
            self._start = seconds(packet.pts, packet.time_base)
            self._origin = seconds(packet.dts if packet.dts is not None else packet.pts, packet.time_base)
            self._shifts = {}
            held, self._held = self._held, deque()
            self._write(packet)
            for audio in held:
                self._send(audio)
            return
        if not packet.video and seconds(packet.pts, packet.time_base) < self._start:
            self._dropped_here += packet.pts >= 0  # older than the connection's first picture (not the priming)
            return
        self._write(packet)

    def _write(self, packet: Coded) -> None:
        tb = Fraction(packet.time_base)
        shift = self._shifts.get(tb)
        if shift is None:
            shift = self._shifts[tb] = round(self._origin / tb)
        out = muxed(packet, self.streams[packet.track])
        out.pts = packet.pts - shift
        out.dts = packet.dts - shift if packet.dts is not None else None
        self.container.mux(out)
        self.counts["packets"] += 1
        self.counts["frames"] += packet.video
        self.counts["bytes"] += len(packet.data)
        now, sent = now_ns(), self.bytes_sent()
        with self._rate_lock:
            if not self._rate or now - self._rate[-1][0] >= NS_PER_S // 4:
                self._rate.append((now, sent))
            while self._rate and now - self._rate[0][0] > RATE_WINDOW_S * NS_PER_S:
                self._rate.popleft()

    def close(self) -> None:
        self._disconnect(abort=self._cut_off)
        if self._cut_off:
            self.warn(f"{self.describe()} did not finish within {END_S:g} s of the end; cut off there")

    # --- stats ----------------------------------------------------------------------------------

    def bytes_sent(self) -> int:
        link = self.link
        return self._sent_before + (link.sent if link is not None else 0)

    def details(self) -> dict[str, Any]:
        now, sent = now_ns(), self.bytes_sent()
        with self._rate_lock:
            marks = [m for m in self._rate if now - m[0] <= RATE_WINDOW_S * NS_PER_S]
        kbps = 0.0
        if marks and now > marks[0][0]:
            kbps = (sent - marks[0][1]) * 8 / ((now - marks[0][0]) / NS_PER_S) / 1000
        connected = self._connected_total_ns + (now - self._connected_ns if self._connected_ns else 0)
        return {
            "url": public_url(self.url), "connected": self.container is not None, "bytes_sent": sent,
            "bitrate_kbps": round(kbps, 1), "reconnects": self.reconnects,
            "dropped_network": self._dropped_put + self._dropped_here,
            "seconds_connected": round(connected / NS_PER_S, 1),
        }  # fmt: skip


def network_reason(exc: BaseException) -> str:
    """A network error in words, without the URL (it holds the stream key; the line names the stream)."""
    return str(getattr(exc, "strerror", None) or describe_error(exc))
