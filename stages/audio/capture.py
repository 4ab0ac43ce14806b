"""Audio capture stage (process fp-audio): every source at once, on the pipeline clock, into the audio ring.

Each source is one PortAudio input stream; its callback only copies the block and notes the clock
and ``status.input_overflow``. The stage's loop places blocks on the output timeline
(``SourceTimeline``: sample counts anchored to the pipeline clock, drift corrected) and, for every
block of running time, writes one slot per track into the audio ring (the mix, then the sources)
and tells the encoder with an ``AudioBlock``. The stage is ready once its streams are open (the
recording does not wait for it); its first blocks wait until the clock fits have settled
(SETTLE_WAIT_NS). A block waits for late devices at most ``max_delay_ms``, then silence fills in.
A source that stops (device unplugged, sink unloaded)
becomes counted silence with a warning and is reopened every REOPEN_NS; the others and the video
go on.
"""

from __future__ import annotations

import contextlib
import os
import queue
from collections import deque
from collections.abc import Iterator
from typing import Any

import numpy as np

from pipeline import messages as msg
from pipeline.clock import NS_PER_S, now_ns, seconds
from pipeline.config import AudioConfig
from pipeline.errors import SetupError
from pipeline.ring import FLAG_DISCONT, Ring, SlotHeader
from pipeline.stage import Source
from stages.audio.clockfit import Block
from stages.audio.devices import DeviceChoice, LibraryChatter, NoDefaultInput, portaudio, quiet_stderr, resolve
from stages.audio.resample import SourceTimeline
from stages.outputs.formats import OUT_RATE

PCM_F32P = 2  # slot pixfmt: planar float32 samples, one row per channel
STALL_NS = NS_PER_S  # an open source silent this long is reported once ...
FIRST_DATA_NS = 3 * NS_PER_S  # ... and a new stream this long (a PulseAudio monitor can take 2 s to start)
REOPEN_NS = 2 * NS_PER_S  # a source that stopped is tried again this often
SETTLE_WAIT_NS = 3 * NS_PER_S  # blocks wait at most this long after open() for every source's clock to settle
# (the stream records from the start; its first blocks are placed once its latency reports have settled)
LOOP_S = 0.01  # the loop looks at the sources this often


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the duration (PULSE_SOURCE is read when a stream connects)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


class Input:
    """One audio input: its stream, the queue its callback fills, its timeline (fp-audio)."""

    def __init__(self, choice: DeviceChoice, channels: int, sd: Any) -> None:
        self.choice = choice
        self.name = choice.source
        self.sd = sd
        self.channels = min(channels, choice.channels)
        self.rate = float(OUT_RATE)
        with quiet_stderr():
            try:
                sd.check_input_settings(choice.device, channels=self.channels, samplerate=OUT_RATE, dtype="float32")
            except Exception:
                self.rate = choice.rate  # the device cannot do 48 kHz: the timeline resamples
        self.timeline = SourceTimeline(self.rate, channels)
        self.queue: queue.SimpleQueue[Block | None] = queue.SimpleQueue()
        self.stream: Any = None
        self.last_data_ns = 0
        self.last_try_ns = 0
        self.stalled = False
        self.latencies: deque[int] = deque(maxlen=256)
        self.counts = {"stopped": 0, "rejoined": 0, "stalls": 0}

    def open(self) -> None:
        """Open and start the stream (PortAudioError if the device refuses)."""
        self.last_try_ns = now_ns()
        self.last_data_ns = self.last_try_ns + FIRST_DATA_NS - STALL_NS  # a new stream gets longer to start
        with environment(self.choice.env), quiet_stderr():
            stream = self.sd.InputStream(
                device=self.choice.device, samplerate=self.rate, channels=self.channels, dtype="float32",
                latency="high", callback=self._callback, finished_callback=self._finished,
            )  # fmt: skip
            stream.start()
        self.stream = stream

    def _callback(self, data: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        """PortAudio's thread: copy, stamp, queue; nothing more."""
        arrival = now_ns()
        adc, current = time_info.inputBufferAdcTime, time_info.currentTime
        latency = round((current - adc) * 1e9) if adc > 0 and current > 0 and 0 < current - adc < 10 else -1
        stamp = round(current * 1e9) if current > 0 else 0
        self.queue.put(Block(data.copy(), arrival, stamp, latency, bool(status.input_overflow)))

    def _finished(self) -> None:
        self.queue.put(None)  # the stream ended: the device went away, or we closed it

    def service(self, now: int, base_time: int) -> list[str]:
        """Move queued blocks into the timeline; notice a stop or a stall; reopen. Returns warnings."""
        ended = False
        while True:
            try:
                block = self.queue.get_nowait()
            except queue.Empty:
                break
            if block is None:
                ended = True
                continue
            if self.stream is not None:
                self.timeline.push(block)
                self.last_data_ns = block.arrival_ns
                if block.latency_ns > 0:
                    self.latencies.append(block.latency_ns)
        at = f"at {max(0.0, seconds(now - base_time)):.1f} s" if base_time else "before the start"
        if self.stream is None:
            return self._retry(now, at)
        if ended or not self.stream.active:
            self.close()
            self.counts["stopped"] += 1
            return [f"audio source {self.name!r} stopped {at} (device gone?): silence from here, "
                    f"retrying every {REOPEN_NS // NS_PER_S} s"]  # fmt: skip
        if now - self.last_data_ns > STALL_NS and not self.stalled:
            self.stalled = True
            self.counts["stalls"] += 1
            return [f"audio source {self.name!r} delivers no samples {at}: silence until it does"]
        if now - self.last_data_ns <= STALL_NS:
            self.stalled = False
        return []

    def _retry(self, now: int, at: str) -> list[str]:
        if now - self.last_try_ns < REOPEN_NS:
            return []
        self.last_try_ns = now
        try:
            self.timeline.restart()
            self.open()
        except Exception:
            self.stream = None
            return []
        self.counts["rejoined"] += 1
        return [f"audio source {self.name!r} is back {at}"]

    @property
    def live(self) -> bool:
        """Open, and its clock is known: blocks wait for it (up to the delay limit)."""
        return self.stream is not None and self.timeline.fit.ready and not self.stalled

    def close(self) -> None:
        stream, self.stream = self.stream, None
        if stream is not None:
            with quiet_stderr(), contextlib.suppress(Exception):
                stream.close()

    def stats(self) -> dict[str, Any]:
        lat = np.median(np.array(self.latencies)) / 1e6 if self.latencies else None
        return {
            "device": self.choice.label,
            "rate": self.rate,
            **self.timeline.stats(),
            **self.counts,
            "latency_ms": round(float(lat), 2) if lat is not None else None,
        }


def missing_line(name: str, why: str, others: list[str]) -> str:
    """What a left-out source is said as: which, why, and what is recorded instead."""
    what = {"default": "no microphone (default input)", "system": "no sound of the computer (system audio)"}
    named = {"default": "the microphone", "system": "the sound of the computer"}
    rest = f"recording {' and '.join(named.get(o, o) for o in others)} alone" if others else "recording video only"
    return f"{what.get(name, f'audio source {name!r} is not there')}: {why}; {rest}"


class AudioCapture(Source):
    """Captures every configured source; writes one block per track per period to the audio ring."""

    name = "audio"

    def open(self) -> dict[str, Any]:
        config: AudioConfig = self.ctx.config
        self.chatter = LibraryChatter()  # PortAudio's own lines go to the stats, not the terminal
        self.ring = Ring.attach(self.ctx.extra["ring"])
        g = self.ring.geometry
        self.block, self.channels = g.width, g.height
        self.views = [self.ring.pixels(i).view(np.float32)[..., 0] for i in range(self.ring.slots)]
        self.sources: list[Input] = []
        self.gains: list[float] = []
        self.counts = {"blocks": 0, "dropped_ring_full": 0, "ring_peak": 0}
        self.seq = 0  # blocks made, over every track: a gap in seq is a drop
        self.flags = 0  # DISCONT after a drop
        sd = portaudio()
        missing: list[tuple[str, str]] = []
        for i, name in enumerate(config.sources):
            try:
                source = Input(resolve(name), self.channels, sd)
            except SetupError as exc:
                if not isinstance(exc, NoDefaultInput) and config.missing == "fail":
                    raise
                missing.append((name, str(exc)))
                continue
            try:
                source.open()
            except Exception as exc:
                raise SetupError(f"cannot open audio source {name!r} ({source.choice.label}): {exc}") from None
            self.sources.append(source)
            self.gains.append(config.gains[i] if config.gains else 1.0)
        for name, why in missing:
            self.ctx.warn(missing_line(name, why, [s.name for s in self.sources]))
        self.mixed = config.mix and len(self.sources) > 1  # a mix of one source would be the same track again
        self.tracks = (["mix"] if self.mixed else []) + [s.name for s in self.sources]
        self.ctx.send("blocks", msg.AudioTracks(self.tracks, OUT_RATE, self.channels))
        self.settle_by = now_ns() + SETTLE_WAIT_NS
        return {"tracks": self.tracks, "sources": {s.name: s.choice.label for s in self.sources}}

    def start(self) -> None:
        self.max_delay = self.ctx.config.max_delay_ms * 1_000_000
        for source in self.sources:
            source.timeline.start(self.base_time)
        self.end: int | None = None if self.tracks else 0  # output sample where every track ends
        self.next = 0  # first sample of the next block

    def on_stop(self, message: msg.Stop) -> None:
        """The end falls on a whole block (the codec frame), so the codec pads nothing: the track ends
        within half a block of the video."""
        super().on_stop(message)
        assert self.stop_at is not None
        end = max(self.next, round(self.stop_at * OUT_RATE / NS_PER_S / self.block) * self.block)
        self.end = end if self.end is None else min(self.end, end)

    def create(self) -> bool:
        """Take in what the sources delivered; publish every block whose time has come; wait a little."""
        if self.end is not None and self.next >= self.end:
            return False
        now = now_ns()
        self._service(now, self.base_time)
        while self.end is None or self.next < self.end:
            last = self.next + self.block if self.end is None else min(self.next + self.block, self.end)
            due = self.base_time + last * NS_PER_S // OUT_RATE + self.max_delay
            live = [s for s in self.sources if s.live]  # none live: blocks go out as their time passes
            warming = any(not s.timeline.fit.settled for s in live)
            if warming and now < self.settle_by:  # placed once the clock is learnt (recording all the while)
                break
            if now < due and not (live and all(s.timeline.ready(last) for s in live)):
                break
            self._emit(last, self.base_time)
        self.ctx.control.poll(LOOP_S)
        return True

    def _service(self, now: int, base_time: int) -> None:
        for source in self.sources:
            for text in source.service(now, base_time):
                self.ctx.warn(text)

    def _emit(self, last: int, base_time: int) -> None:
        """One block of every track: the mix, then the sources."""
        first = self.next
        blocks = [s.timeline.produce(last) for s in self.sources]
        if self.mixed:
            mix = sum(g * b for g, b in zip(self.gains, blocks, strict=True))
            blocks.insert(0, np.clip(mix, -1.0, 1.0))
        for track, data in enumerate(blocks):
            self._publish(track, first, data, base_time)
        self.next = last
        self.counts["blocks"] += 1

    def _publish(self, track: int, first: int, data: np.ndarray, base_time: int) -> None:
        """Write one track's block into a slot and announce it; a full ring drops it (counted)."""
        seq, self.seq = self.seq, self.seq + 1
        slot = self.ring.acquire()
        if slot is None:
            self.counts["dropped_ring_full"] += 1
            self.flags = FLAG_DISCONT
            return
        frames = data.shape[1]
        self.views[slot][:, :frames] = data
        g = self.ring.geometry
        running = first * NS_PER_S // OUT_RATE
        self.ring.write_header(slot, SlotHeader(seq, running, frames, g.height, g.stride, PCM_F32P, self.flags))
        self.flags = 0
        self.ctx.send("blocks", msg.AudioBlock(track, slot, seq, first, frames))
        self.counts["ring_peak"] = max(self.counts["ring_peak"], self.ring.fill())

    def stats(self) -> dict[str, Any]:
        if not hasattr(self, "counts"):
            return {}
        return {
            **self.counts,
            "tracks": self.tracks,
            "rate": OUT_RATE,
            "recorded_s": round(getattr(self, "next", 0) / OUT_RATE, 3),
            "sources": {s.name: s.stats() for s in self.sources},
            **self.chatter.stats(),
        }

    def close(self) -> None:
        for source in getattr(self, "sources", []):
            source.close()
        self.views = []
        if hasattr(self, "ring"):
            self.ring.close()
        if hasattr(self, "chatter"):
            self.chatter.close()
