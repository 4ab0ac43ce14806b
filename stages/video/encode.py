"""Encoder and muxer stage (process fp-encode): ring slots in, a playable file out.

Each slot is wrapped once as a PyAV frame (``from_numpy_buffer``, no copy),
converted to YUV once by one cached scaler, and given back to capture at once;
a constant-frame-rate repeat re-encodes the last converted picture, unless the
encoder is more than half a second behind the clock: then the repeat is left out
(the picture stays on screen through the pts gap all the same) so that an
overloaded encoder catches up and the video keeps pace with the audio instead
of ending seconds short. MKV is the default container;
``.mp4`` is written fragmented, so a crash leaves a playable file. Audio
blocks, when the plan has an audio stage, come on a second input and go to
their own streams in the same file (``stages.audio.encode``); the file is closed
once both paths ended.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import shutil
from fractions import Fraction
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import messages as msg
from pipeline.clock import NS_PER_S, now_ns
from pipeline.config import EncodeConfig
from pipeline.errors import FramepipeError
from pipeline.ring import Ring
from pipeline.stage import Stage
from stages.audio.encode import AudioEncoder
from stages.output import container_for, output_size
from stages.video.timestamp import VFR_TIME_BASE

FALLBACK_ENCODER = "libx264"
LATENCY_BIN_NS = 250_000  # capture-to-packet latency histogram: 0.25 ms bins ...
LATENCY_BINS = 20_000  # ... up to 5 s


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt() parameters
HEAP_BUFFERS_UP_TO = 32 << 20  # allocations up to this size come from the heap (glibc's upper limit) ...
HEAP_KEEP = 256 << 20  # ... and the heap keeps up to this much freed memory instead of giving it back
BEHIND_NS = 500_000_000  # a repeat this far behind the clock is not encoded (see Encoder.handle)
SHED_HIGH = 0.5  # "shed" policy: start encoding every other frame when the ring is this full ...
SHED_LOW = 0.2  # ... and stop once it has drained to this
LOW_SPACE_BYTES = 1 << 30  # warn when the output's disk has less than this left ...
LOW_SPACE_SECONDS = 120  # ... or less than this many seconds at the current rate


class DiskFull(FramepipeError, OSError):
    """The output's file system is full; the message says what is kept."""


class DiskWatch:
    """Warns once when the output's disk runs low (encoder process; checked about once a second)."""

    def __init__(self, path: str, warn: Any) -> None:
        self.folder = str(Path(path).resolve().parent)
        self.warn = warn
        self.warned = False
        self.next_check = 0
        self.started = now_ns()

    def check(self, written: int) -> None:
        now = now_ns()
        if self.warned or now < self.next_check:
            return
        self.next_check = now + 1_000_000_000
        free = shutil.disk_usage(self.folder).free
        rate = written / max(1e-9, (now - self.started) / 1e9)
        if free < LOW_SPACE_BYTES or free < rate * LOW_SPACE_SECONDS:
            left = f" (about {free / rate:.0f} s at this rate)" if rate > 0 else ""
            self.warn(f"low disk space: {free / 2**20:.0f} MiB left in {self.folder}{left}; free some space")
            self.warned = True


def hist_percentile(hist: np.ndarray, q: float) -> float | None:
    """The q-th percentile, in ms, of a latency histogram (upper edge of its bin)."""
    total = int(hist.sum())
    if total == 0:
        return None
    index = int(np.searchsorted(np.cumsum(hist), total * q / 100))
    return (index + 1) * LATENCY_BIN_NS / 1e6


def frame_rate(fps: float) -> Fraction:
    """fps as an exact fraction (29.97 -> 30000/1001)."""
    return Fraction(fps).limit_denominator(1001)


def reuse_frame_buffers() -> bool:
    """Keep freed picture buffers in this process's heap (glibc), so each converted frame reuses the last
    one's pages. By default glibc maps every buffer over 128 KiB afresh and unmaps it when freed: a new
    1080p picture then costs ~500 page faults, zeroed pages and 2 ms of kernel time. False elsewhere."""
    try:
        libc = ctypes.CDLL(None)
        mmap_set = libc.mallopt(M_MMAP_THRESHOLD, HEAP_BUFFERS_UP_TO)
        return bool(mmap_set and libc.mallopt(M_TRIM_THRESHOLD, HEAP_KEEP))
    except (OSError, AttributeError):  # not glibc
        return False


def conversion_options() -> dict[str, Any]:
    """How the encoder converts BGRA to YUV 4:2:0: one thread; chroma computed for every pixel
    (``FULL_CHR_H_INP``: swscale's SIMD input path) and averaged over each 2x2 block (``AREA``).
    Against the bilinear filter we used before: 4.4 ms a 1080p frame against 4.8, chroma as close or
    closer to the original, files at the same crf 2.5x smaller on the test screen (NOTES.md). Luma is
    not scaled and the same either way. Older PyAVs get what they support."""
    import av
    from av.video.reformatter import Interpolation, VideoReformatter

    options: dict[str, Any] = {"threads": 1, "interpolation": Interpolation.AREA}
    flags = getattr(Interpolation, "FULL_CHR_H_INP", None)
    if flags is not None:
        options["interpolation"] = Interpolation.AREA | flags
    probe = av.VideoFrame(16, 16, "bgra")
    for drop in ("interpolation", "threads"):
        try:
            VideoReformatter().reformat(probe, 16, 16, "yuv420p", **options)
            return options
        except (TypeError, ValueError):
            options.pop(drop, None)
    return options


def codec_options(config: EncodeConfig) -> dict[str, str]:
    """Private options for the codec: libx264 takes preset and crf; hardware encoders keep their defaults."""
    if config.encoder in ("libx264", "libx265"):
        return {"preset": config.preset, "crf": str(config.crf)}
    return {}


def try_open(config: EncodeConfig, width: int, height: int, fps: float) -> str | None:
    """Open the configured encoder for real; None if it works, else why not.

    Listed is not working (a wheel lists nvenc without a GPU): only an open
    proves it.
    """
    import av

    try:
        ctx: Any = av.CodecContext.create(config.encoder, "w")
        ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
        ctx.time_base = 1 / frame_rate(fps)
        ctx.options = codec_options(config)
        ctx.open()
        ctx.close() if hasattr(ctx, "close") else None
    except Exception as exc:
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return None


class Encoder(Stage):
    """Encodes the frames the timestamper places, muxes them, writes the file."""

    name = "encode"

    def open(self) -> dict[str, Any]:
        import av
        from av.video.reformatter import VideoReformatter

        config: EncodeConfig = self.ctx.config
        extra = self.ctx.extra
        self.ring = Ring.attach(extra["ring"])
        g = self.ring.geometry
        fps = extra["fps"]
        info: dict[str, Any] = {}
        self.size = output_size(g.width, g.height, config.output_height)
        why = try_open(config, *self.size, fps) if config.encoder != FALLBACK_ENCODER else None
        if why is not None:
            self.ctx.warn(f"encoder {config.encoder} does not open here ({why}); using {FALLBACK_ENCODER}")
            info["fallback"] = f"{config.encoder} -> {FALLBACK_ENCODER}"
            config = EncodeConfig(**{**config.__dict__, "encoder": FALLBACK_ENCODER, "preset": "ultrafast"})
        fmt, options = container_for(extra["output"])
        self.container: Any = av.open(extra["output"], mode="w", format=fmt, options=options)
        rate = frame_rate(fps)
        self.time_base = Fraction(1, VFR_TIME_BASE) if extra["mode"] == "vfr" else 1 / rate
        self.ns_per_pts = float(self.time_base * NS_PER_S)  # for the behind-the-clock test, once
        stream: Any = self.container.add_stream(config.encoder, rate=rate)
        stream.width, stream.height = self.size
        stream.pix_fmt = "yuv420p"
        stream.time_base = self.time_base
        cc = stream.codec_context
        cc.time_base = self.time_base
        cc.gop_size = max(1, round(fps * config.gop_seconds))
        cc.thread_type = config.thread_type
        cc.thread_count = config.threads
        cc.options = codec_options(config)
        self.stream: Any = stream
        self.frames = [
            av.VideoFrame.from_numpy_buffer(self.ring.pixels(i), format="bgra") for i in range(self.ring.slots)
        ]
        self.reformatter = VideoReformatter()  # one cached scaler, one thread: least CPU per frame
        reuse_frame_buffers()  # before the first picture
        self.convert = conversion_options()
        self.last: Any = None  # the last frame converted to the codec's format: repeats re-encode it
        self.overload = config.overload
        self.shedding = False
        self.capture_of_pts: dict[int, int] = {}
        self.unwritten_end: int | None = None  # the last tick, when it was a repeat left out
        self.latency_hist = np.zeros(LATENCY_BINS, np.int64)  # bounded memory for hours of recording
        self.base_time = 0
        self.counts = {
            "encoded": 0, "repeated": 0, "repeats_not_written": 0, "held_skips": 0, "shed": 0, "packets": 0,
            "bytes": 0, "seq_mismatch": 0,
        }  # fmt: skip
        self.space = DiskWatch(extra["output"], self.ctx.warn)
        self.audio: AudioEncoder | None = None  # added in run(), once the audio stage named its tracks
        info.update({"encoder": config.encoder, "container": fmt, "size": list(self.size)})
        return info

    def run(self, base_time: int) -> None:
        self.base_time = base_time
        paths = {self.ctx.inputs["timestamp"]: "timestamp"}  # data inputs still open, by upstream name
        audio = self.ctx.inputs.get("audio")
        if audio is not None and self._open_audio(audio):
            paths[audio] = "audio"
        watch = [*paths, self.ctx.control]
        while paths:
            ready = wait(watch)
            if self.ctx.control in ready:
                try:
                    if isinstance(msg.decode(self.ctx.control.recv_bytes()), msg.Stop):
                        self.finish(flush=False)  # a fast stop: close the file with what is encoded
                        return
                except (EOFError, OSError):
                    watch.remove(self.ctx.control)  # supervisor gone: keep draining to end of stream
            for source in [c for c in ready if c in paths]:
                try:
                    message = msg.decode(source.recv_bytes())
                except (EOFError, OSError):
                    self.ctx.warn(f"{paths[source]} ended without end of stream; closing its part of the file")
                    message = msg.EndOfStream(paths[source])
                if isinstance(message, msg.EndOfStream):
                    del paths[source]
                    watch.remove(source)
                elif isinstance(message, msg.AudioBlock) and self.audio is not None:
                    self._write(self.audio.encode(message))
                else:
                    self.handle(message)
            if self.ctx.stats_due():
                self.ctx.report(msg.Stats(self.name, self.stats()))
        self.finish()

    def _open_audio(self, source: Any) -> bool:
        """Add the audio streams the audio stage names in its first message (before any packet is muxed)."""
        try:
            message = msg.decode(source.recv_bytes())  # sent before the audio stage was ready: here already
        except (EOFError, OSError):
            return False
        if not isinstance(message, msg.AudioTracks) or not message.names:
            return False  # no audio after all (no default input): video only
        extra = self.ctx.extra
        ring = Ring.attach(extra["audio_ring"])
        self.audio = AudioEncoder(self.container, ring, message, extra["audio_codec"], extra["audio_bitrate_kbps"])
        return True

    def handle(self, message: msg.Message) -> None:
        """Apply one instruction from the timestamper."""
        if isinstance(message, msg.Encode):
            if self._shed():
                self._release(message.slot, message.seq)
                self.counts["shed"] += 1
                self._encode(message.pts)  # the previous picture again: cheap, and the timeline stays whole
                return
            self.capture_of_pts[message.pts] = message.capture_ns
            frame = self.frames[message.slot]
            self.last = self.reformatter.reformat(frame, *self.size, "yuv420p", **self.convert)
            self._release(message.slot, message.seq)  # converted: the slot can go back to capture now
            self._encode(message.pts)
            self.counts["encoded"] += 1
        elif isinstance(message, msg.Repeat):
            if self._behind(message.pts):  # overloaded: the picture stays on screen all the same (a pts gap),
                self.counts["repeats_not_written"] += 1  # and the encoder catches up instead of falling behind
                self.unwritten_end = message.pts
                return
            self._encode(message.pts)
            self.counts["repeated"] += 1
        elif isinstance(message, msg.Hold):
            self._release(message.slot, message.seq)
            self.counts["held_skips"] += 1

    def _behind(self, pts: int) -> bool:
        """Whether the frame at ``pts`` is more than BEHIND_NS older than now: the encoder is not keeping up."""
        due_ns = self.base_time + pts * self.ns_per_pts
        return now_ns() - due_ns > BEHIND_NS

    def _shed(self) -> bool:
        """Under the "shed" policy, whether to skip converting this frame (the ring is filling up)."""
        if self.overload != "shed" or self.last is None:
            return False
        fill = self.ring.fill()
        if fill >= self.ring.slots * SHED_HIGH:
            self.shedding = True
        elif fill <= self.ring.slots * SHED_LOW:
            self.shedding = False
        return self.shedding and self.counts["encoded"] % 2 == 1

    def _release(self, slot: int, seq: int) -> None:
        if self.ring.header(slot).seq != seq:  # the writer overran this slot: a bug, never silent
            self.counts["seq_mismatch"] += 1
        self.ring.release()

    def _encode(self, pts: int) -> None:
        self.unwritten_end = None
        if self.last is None:
            return
        self.last.pts = pts
        self.last.time_base = self.time_base
        self._mux(self.stream.encode(self.last))

    def _mux(self, packets: list[Any]) -> None:
        now = now_ns() - self.base_time
        for packet in packets:
            captured = self.capture_of_pts.pop(packet.pts, None)
            if captured is not None:
                self.latency_hist[min(LATENCY_BINS - 1, max(0, (now - captured) // LATENCY_BIN_NS))] += 1
            self.counts["packets"] += 1
            self.counts["bytes"] += packet.size
        self._write(packets)

    def _write(self, packets: list[Any]) -> None:
        """Mux packets of any stream; a full disk ends the recording with what is written."""
        try:
            self.container.mux(packets)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise DiskFull(f"the disk is full: {self.ctx.extra['output']} keeps what was written so far") from None
            raise
        self.space.check(self.counts["bytes"] + (self.audio.counts["bytes"] if self.audio else 0))

    def finish(self, flush: bool = True) -> None:
        """Flush the encoder (unless stopping fast) and close the container: the file is complete after this."""
        if flush:
            if self.unwritten_end is not None:  # end on the last tick: the video spans the whole recording
                self.counts["repeats_not_written"] -= 1
                self.counts["repeated"] += 1
                self._encode(self.unwritten_end)
            self._mux(self.stream.encode(None))
            if self.audio is not None:
                self._write(self.audio.flush())
        self.container.close()
        self.container = None

    def stats(self) -> dict[str, Any]:
        if not hasattr(self, "counts"):
            return {}
        return {
            **self.counts,
            "latency_ms_p50": hist_percentile(self.latency_hist, 50),
            "latency_ms_p99": hist_percentile(self.latency_hist, 99),
            **({"audio": self.audio.stats()} if self.audio is not None else {}),
        }

    def close(self) -> None:
        container = getattr(self, "container", None)
        if container is not None:  # an error mid-run: leave what was written as playable as it is
            with contextlib.suppress(Exception):
                container.close()
            self.container = None
        self.frames = []
        self.last = None
        self.stream = None
        audio, self.audio = getattr(self, "audio", None), None
        if audio is not None:
            audio.close()
        if hasattr(self, "ring"):
            self.ring.close()
