"""Camera stage (process fp-camera): a V4L2 device or a network camera, decoded into a small ring of its own.

``open()`` opens the source with PyAV (before the start, with a short open timeout: a camera that does
not answer fails the recording in one line before anything is written). A reader thread then demuxes
and decodes (PyAV releases the GIL in both), scales each picture to cover the overlay's box, cuts the
middle out into a ring slot as planar I420 (the encoder's pixel format: its work is a small paste) and
announces it on port ``pictures``. A full ring drops the picture (counted): the encoder only ever shows
the newest. Pictures are stamped on the pipeline clock when they arrive; the device's own timestamps
only smooth the arrival jitter (``DeviceClock``), never used raw.

A camera that stalls (nothing for ``stall_s``) or ends is closed, said in one line, and reopened every
``RETRY_S`` until it comes back (one line again). The main thread only waits for control: Stop ends the
stream at once, whatever the reader thread is blocked in.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import numpy as np

from pipeline import messages as msg
from pipeline.clock import NS_PER_S, now_ns
from pipeline.config import CameraConfig, camera_name
from pipeline.errors import FramepipeError, SetupError
from pipeline.ring import PIXFMT_I420, Ring, SlotHeader
from pipeline.stage import DownstreamGone, Source
from stages.video.corner import cover, input_options

RETRY_S = 2.0  # a lost camera is reopened this often
POLL_S = 0.1  # the main thread looks at control this often
MAX_LAG_NS = 200_000_000  # a device time mapped this far before its arrival is re-anchored (drift, a stall)
JUMP_NS = 2 * NS_PER_S  # a device time that jumps this far (or back) starts a new mapping


class DeviceClock:
    """Device timestamps mapped onto the pipeline clock (pure logic).

    A picture's time is its device time plus the least (arrival - device time) seen so far: the device's
    spacing without the network's or the driver's jitter, never later than its arrival and never more
    than MAX_LAG_NS before it. Without a device time, or when it jumps, the arrival is the time."""

    def __init__(self) -> None:
        self.offset: int | None = None
        self.last: int | None = None
        self.anchors = 0  # how often the mapping started again

    def stamp(self, device_ns: int | None, arrival_ns: int) -> int:
        if device_ns is None:
            return arrival_ns
        jumped = self.last is not None and not 0 <= device_ns - self.last <= JUMP_NS
        self.last = device_ns
        if self.offset is None or jumped:
            self.offset = arrival_ns - device_ns
            self.anchors += 1
        self.offset = min(self.offset, arrival_ns - device_ns)
        if arrival_ns - (device_ns + self.offset) > MAX_LAG_NS:  # the device's clock runs slow against ours
            self.offset = arrival_ns - device_ns - MAX_LAG_NS
        return min(arrival_ns, device_ns + self.offset)


def open_source(config: CameraConfig, timeout_s: float) -> tuple[Any, Any]:
    """The container and its video stream (fp-camera's threads); SetupError in one line when it does not answer."""
    import av

    fmt, options = input_options(config)
    name = camera_name(config.source)
    started = now_ns()
    try:
        container = av.open(config.source, format=fmt, options=options, timeout=(timeout_s, config.stall_s))
    except (av.FFmpegError, OSError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc).split(":")[0] or type(exc).__name__
        if now_ns() - started >= 0.9 * timeout_s * NS_PER_S:  # FFmpeg says "Input/output error" then
            reason = f"no picture within {timeout_s:g} s"
        raise SetupError(f"{name} does not answer ({reason}): check that it is on and sending, and "
                         "the URL or device, or record without --camera") from None  # fmt: skip
    if not container.streams.video:
        container.close()
        raise SetupError(f"{name} sends no video: check the URL or device")
    stream = container.streams.video[0]
    stream.codec_context.thread_count = 1  # a camera's pictures are small: threads cost more than they save here
    return container, stream


class CameraCapture(Source):
    """A camera's pictures, scaled to the overlay's box, into the camera ring (port ``pictures``)."""

    name = "camera"

    def open(self) -> dict[str, Any]:
        from av.video.reformatter import VideoReformatter

        self.config: CameraConfig = self.ctx.config
        self.box = tuple(self.ctx.extra["box"])  # (width, height)
        self.ring = Ring.attach(self.ctx.extra["ring"])
        w, h = self.box
        self.planes = [self.ring.planes(i, w, h) for i in range(self.ring.slots)]
        self.reformatter = VideoReformatter()
        self.clock = DeviceClock()
        self.counts = {"pictures": 0, "dropped_ring_full": 0, "lost": 0, "reopened": 0, "ring_peak": 0,
                       "anchors": 0}  # fmt: skip
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.failure: BaseException | None = None
        self.container, self.stream = open_source(self.config, self.config.open_timeout_s)
        cc = self.stream.codec_context
        return {"source": camera_name(self.config.source), "size": [cc.width, cc.height], "box": list(self.box)}

    def start(self) -> None:
        self.seq = 0
        self.reader = threading.Thread(target=self._read, name="camera-reader", daemon=True)
        self.reader.start()

    def create(self) -> bool:
        """Wait for control (the reader thread does the work); False once stopped."""
        self.ctx.control.poll(POLL_S)
        if self.failure is not None:
            raise self.failure
        return self.stop_at is None or now_ns() - self.base_time < self.stop_at

    # --- the reader thread ------------------------------------------------------------------

    def _read(self) -> None:
        """Decode until stopped; a lost camera is said once, reopened every RETRY_S, and its return said."""
        import av

        name = camera_name(self.config.source)
        lost_at: int | None = None
        try:
            while not self.stopping.is_set():
                if self.container is None:
                    tried = now_ns()
                    try:
                        self.container, self.stream = open_source(self.config, self.config.open_timeout_s)
                    except SetupError:  # refused at once: wait; timed out: it waited already
                        self.stopping.wait(max(0.0, RETRY_S - (now_ns() - tried) / NS_PER_S))
                        continue
                    self.counts["reopened"] += 1
                    if lost_at is not None:
                        self.ctx.warn(f"camera {name} is back after {(now_ns() - lost_at) / NS_PER_S:.1f} s")
                        lost_at = None
                why = "it ended"
                try:
                    for packet in self.container.demux(self.stream):
                        for frame in packet.decode():
                            self._put(frame)
                        if self.stopping.is_set():
                            return
                except (av.FFmpegError, OSError) as exc:
                    why = f"no picture for {self.config.stall_s:g} s" if isinstance(exc, av.ExitError) else str(exc)
                if self.stopping.is_set():
                    return
                self.counts["lost"] += 1
                lost_at = now_ns()
                self.ctx.warn(f"camera {name} lost ({why}); the screen goes on, the corner shows the last picture, "
                              f"then nothing; retrying every {RETRY_S:g} s")  # fmt: skip
                self._close_container()
        except DownstreamGone:
            return
        except BaseException as exc:  # a bug: the main thread reports it
            self.failure = exc if isinstance(exc, FramepipeError) else RuntimeError(f"camera reader: {exc!r}")

    def _put(self, frame: Any) -> None:
        """One decoded picture: scaled to cover the box, the middle into a slot, announced (reader thread)."""
        arrival = now_ns() - self.base_time
        device = round(frame.time * NS_PER_S) if frame.time is not None else None
        capture_ns = self.clock.stamp(device, arrival)
        slot = self.ring.acquire()
        if slot is None:
            self.counts["dropped_ring_full"] += 1
            return
        bw, bh = self.box
        w, h, x0, y0 = cover((frame.width, frame.height), (bw, bh))
        picture: Any = self.reformatter.reformat(frame, w, h, "yuv420p")
        for i, dst in enumerate(self.planes[slot]):
            plane = picture.planes[i]
            src = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)
            s = 0 if i == 0 else 1
            dst[...] = src[y0 >> s : (y0 >> s) + dst.shape[0], x0 >> s : (x0 >> s) + dst.shape[1]]
        self.ring.write_header(slot, SlotHeader(self.seq, capture_ns, bw, bh, bw, PIXFMT_I420, 0))
        with self.lock:
            if self.stopping.is_set():
                self.ring.cancel()
                return
            self.ctx.send("pictures", msg.Frame(slot, self.seq, capture_ns, 0))
        if not self.seq:
            self.counts["first_ms"] = round(arrival / 1e6)  # running time of the first picture sent
        self.seq += 1
        self.counts["pictures"] += 1
        self.counts["anchors"] = self.clock.anchors
        self.counts["ring_peak"] = max(self.counts["ring_peak"], self.ring.fill())

    def _close_container(self) -> None:
        container, self.container = self.container, None
        if container is not None:
            with contextlib.suppress(Exception):
                container.close()

    # --- the end ------------------------------------------------------------------------------

    def finish(self, flush: bool = True) -> None:
        """No picture is sent after this (the base sends end of stream next)."""
        with self.lock:
            self.stopping.set()
        self.end_ns = max(0, now_ns() - self.base_time)

    def stats(self) -> dict[str, Any]:
        return dict(getattr(self, "counts", {}))

    def close(self) -> None:
        if hasattr(self, "stopping"):
            self.stopping.set()
        reader = getattr(self, "reader", None)
        if reader is not None:
            reader.join(self.config.stall_s + 1)  # a read blocked in FFmpeg ends within its timeout
            if reader.is_alive():
                return  # still inside FFmpeg: leave its memory mapped; the process exits anyway
        self._close_container() if hasattr(self, "container") else None
        self.planes = []
        if hasattr(self, "ring"):
            self.ring.close()
