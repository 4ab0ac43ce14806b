"""One source's samples on the output grid (pure logic, used in fp-audio).

``SourceTimeline`` resamples device samples onto the output grid, where output sample ``j`` belongs
to running time ``j / rate``: the rate fitted by ``ClockFit`` is fed forward, the phase error left is
slewed out slowly (at most ``MAX_SLEW_PPM``), and an error beyond ``RESYNC_NS`` is a gap (counted
silence) or a jump ahead (counted dropped samples). Silence is never packed away.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from pipeline.clock import NS_PER_S
from stages.audio.clockfit import Block, ClockBridge, ClockFit
from stages.outputs.formats import OUT_RATE

RESYNC_NS = 10_000_000  # phase errors beyond this are fixed at once (silence or drop), smaller ones slewed
SLEW_S = 1.0  # a small phase error is removed over about this long ...
MAX_SLEW_PPM = 2000.0  # ... changing the rate by at most this much (3.5 cents: inaudible)
HALF_TAPS = 8  # windowed-sinc interpolation: taps on each side of a sample (upsampling or same rate)
PHASES = 512  # sub-sample positions of the interpolation table


class SincTable:
    """Windowed-sinc interpolation coefficients for one device-to-output rate ratio."""

    def __init__(self, ratio: float) -> None:
        scale = max(1.0, ratio)  # downsampling: widen the filter, lower the cutoff
        self.half = math.ceil(HALF_TAPS * scale)
        cutoff = 0.95 / scale
        k = np.arange(2 * self.half)
        frac = np.arange(PHASES + 1)[:, None] / PHASES
        d = k[None, :] - (self.half - 1) - frac  # distance of each tap from the wanted position
        window = np.cos(np.clip(d / (self.half + 1), -1, 1) * math.pi / 2) ** 2  # Hann
        table = cutoff * np.sinc(cutoff * d) * window
        self.table = (table / table.sum(axis=1, keepdims=True)).astype(np.float32)

    def interpolate(self, buf: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Samples of ``buf`` (frames, channels) at fractional ``positions``, all within range."""
        floor = np.floor(positions)
        phase = np.rint((positions - floor) * PHASES).astype(np.intp)
        first = floor.astype(np.intp) - (self.half - 1)
        windows = sliding_window_view(buf, 2 * self.half, axis=0)[first]  # (n, channels, taps), one gather per row
        out: np.ndarray = np.matmul(windows, self.table[phase][:, :, None])[:, :, 0]
        return out


class SourceTimeline:
    """One source's samples on the output grid (output sample j belongs to running time j / OUT_RATE)."""

    def __init__(self, device_rate: float, channels: int) -> None:
        self.device_rate = device_rate
        self.channels = channels
        self.sinc = SincTable(device_rate / OUT_RATE)
        self.step_nom = device_rate / OUT_RATE  # device samples per output sample, nominal
        self.base_ns = 0
        self.pos = 0  # next output sample
        self.captured = 0  # device samples received, over every stream this source opened
        self.written = 0  # output samples made from device samples
        self.silence = 0  # output samples of silence put in
        self.dropped = 0.0  # device samples skipped to catch up
        self.resyncs = 0
        self.overflows = 0
        self.step = self.step_nom  # device samples per output sample applied last
        self.bridge = ClockBridge()
        self.restart()

    def restart(self) -> None:
        """A new device stream: its samples count from 0 again, its clock is learned again."""
        self.fit = ClockFit(self.device_rate)
        self.received = 0  # device samples of this stream
        self.measured = False  # the stream has reported a latency (then blocks without one are not used)
        pad = self.sinc.half + 1
        self._buf = np.zeros((pad, self.channels), np.float32)
        self._buf_start = -pad  # device index of _buf[0]: zeros stand before the stream's first sample
        self._chunks: list[np.ndarray] = []  # received, not yet joined to _buf
        self.x: float | None = None  # device position of output sample self.pos; None: not anchored
        self.gap = 0  # output samples of silence owed before device position x comes

    def start(self, base_ns: int, pos: int = 0) -> None:
        """The pipeline's base time is known: output sample ``pos`` comes next."""
        self.base_ns = base_ns
        self.pos = pos

    def push(self, block: Block) -> None:
        """Add one callback's samples (mono is spread to every channel)."""
        data = block.samples
        if data.shape[1] != self.channels:
            data = np.repeat(data[:, :1], self.channels, axis=1) if data.shape[1] == 1 else data[:, : self.channels]
        if block.overflow:
            self.overflows += 1
            self.fit.discontinuity()
        stamp = self.bridge.to_clock(block.arrival_ns, block.stamp_ns) if block.stamp_ns > 0 else block.arrival_ns
        if block.latency_ns > 0:
            if not self.measured:  # the stream reports its latency from now on: estimates without it end here
                self.measured = True
                self.fit.discontinuity()
            self.fit.add(self.received, stamp - block.latency_ns)
        elif not self.measured:  # no report (yet): the first sample is at least the block's length old
            self.fit.add(self.received, stamp - round(len(data) * self.fit.p_nom))
        self._chunks.append(data.astype(np.float32, copy=False))
        self.received += len(data)
        self.captured += len(data)
        if self.x is None and self.received - self._buf_start > 12 * self.device_rate:
            self._trim()  # not placed yet (no base time): keep the last 10 s

    def ready(self, end: int) -> bool:
        """True when device samples cover output samples up to ``end`` (exclusive)."""
        if not self.fit.ready:
            return False
        x, step, gap, _ = self._plan(end)
        last = x + (end - self.pos - gap - 1) * step
        return math.floor(last) + self.sinc.half < self.received

    def produce(self, end: int) -> np.ndarray:
        """Output samples [pos, end) as (channels, n) float32; what the device has not delivered is silence."""
        n = end - self.pos
        out = np.zeros((max(0, n), self.channels), np.float32)
        if n <= 0 or not self.fit.ready:
            self.silence += max(0, n)
            self.pos = max(self.pos, end)
            return out.T
        x, step, gap, skipped = self._plan(end)
        if skipped is not None:
            self.resyncs += 1
            self.dropped += skipped
        self.gap = gap
        silent = min(n, self.gap)
        positions = x + np.arange(n - silent) * step
        local = positions - self._buf_start
        if self._chunks:
            self._buf = np.concatenate([self._buf, *self._chunks])
            self._chunks = []
        valid = (local >= self.sinc.half - 1) & (local < len(self._buf) - self.sinc.half)
        if valid.any():
            out[silent:][valid] = self.sinc.interpolate(self._buf, local[valid])
        made = int(np.count_nonzero(valid & (positions >= 0)))
        self.written += made
        self.silence += n - made
        self.gap -= silent
        self.x = x + (n - silent) * step
        self.step = step
        self.pos = end
        self._trim()
        return out.T

    def _plan(self, end: int) -> tuple[float, float, int, float | None]:
        """For output [pos, end): device position to read from, step, output samples of silence first,
        and the device samples skipped by a resync (None: no resync).

        Pure: ``produce`` applies it. A phase error beyond RESYNC_NS is fixed at once: missing
        samples become silence (the device position waits), surplus ones are skipped.
        """
        t0 = self.base_ns + self.pos * NS_PER_S / OUT_RATE
        t1 = self.base_ns + end * NS_PER_S / OUT_RATE
        target0, target1 = self.fit.sample_at(t0), self.fit.sample_at(t1)
        feed = (target1 - target0) / max(1, end - self.pos)
        x, gap = (target0, 0) if self.x is None else (self.x, self.gap)
        error = x - gap * self.step_nom - target0  # > 0: samples due now are missing; < 0: we lag the device
        skipped: float | None = None
        if abs(error) * self.fit.p_nom > RESYNC_NS:
            skipped = max(0.0, -error)
            if error < 0:
                x = target0
            else:
                gap += round(error / self.step_nom)
            error = 0.0
        slew = -error / (SLEW_S * OUT_RATE)
        limit = MAX_SLEW_PPM * 1e-6 * self.step_nom
        return x, feed + max(-limit, min(limit, slew)), gap, skipped

    def _trim(self) -> None:
        """Forget device samples the output has passed (keeping the filter's reach)."""
        if self._chunks:
            self._buf = np.concatenate([self._buf, *self._chunks])
            self._chunks = []
        keep_from = math.floor(self.x) if self.x is not None else self.received - round(10 * self.device_rate)
        cut = keep_from - self.sinc.half - 1 - self._buf_start
        if cut > 0:
            self._buf = self._buf[cut:]
            self._buf_start += cut

    def stats(self) -> dict[str, float | int]:
        """Counters for --stats-json (per source)."""
        return {
            "samples_captured": self.captured,
            "samples_written": self.written,  # the device's own samples on the track
            "samples_silence": self.silence,  # and the silence put in where it delivered none: the track's length
            "silence_ms": round(self.silence * 1000 / OUT_RATE, 1),
            "dropped_ms": round(self.dropped * 1000 / self.device_rate, 1),
            "drift_ppm": round(self.fit.drift_ppm, 1),
            "correction_ppm": round((self.step / self.step_nom - 1) * 1e6, 1),
            "resyncs": self.resyncs,
            "clock_steps": self.fit.steps,
            "overflows": self.overflows,
        }
