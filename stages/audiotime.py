"""The audio timeline (pure logic, used in fp-audio): device samples placed on the pipeline clock.

A device's sample clock is the truth for audio, but its rate drifts from the pipeline clock (tens of
ppm on hardware; a PulseAudio null sink runs hundreds of ppm fast on small blocks). ``ClockFit``
learns where device samples lie on the pipeline clock from the callbacks. ``SourceTimeline``
resamples device samples onto the output grid, where output sample ``j`` belongs to running time
``j / rate``: the fitted rate is fed forward, the phase error left is slewed out slowly (at most
``MAX_SLEW_PPM``), and an error beyond ``RESYNC_NS`` is a gap (counted silence) or a jump ahead
(counted dropped samples). Silence is never packed away.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from pipeline.clock import NS_PER_S
from stages.output import OUT_RATE

BUCKET_S = 0.25  # callbacks are grouped in buckets of this many seconds of samples; each median is a point
WINDOW_POINTS = 240  # the drift line is fitted over this many points (60 s)
SLOPE_POINTS = 20  # points (5 s) before the drift is fitted; until then it is taken as 0
SLOPE_GAP = 8  # the drift is the median slope of point pairs at least this far apart (2 s)
OFFSET_POINTS = 20  # the offset follows the segment's last this many points (5 s); a jump is a new segment
YOUNG_POINTS = 2  # ... or only its last 2 (0.5 s) while the drift is not fitted yet, so an unknown drift lags less
BRIDGE_NS = 2_000_000_000  # PortAudio's clock: its offset to ours is the least callback delay over this long
WARMUP_S = 1.0  # a stream's first second: its reported latency settles (PulseAudio: 0.6 s), placed provisionally,
STEADY_NS = 1_000_000  # ... and on until its last 3 points agree within this (at most 4 warm-ups: a noisy device)
STEP_NS = 3_000_000  # two buckets in a row this far off the line: the device jumped (lost samples, new latency)
RESYNC_NS = 10_000_000  # phase errors beyond this are fixed at once (silence or drop), smaller ones slewed
SLEW_S = 1.0  # a small phase error is removed over about this long ...
MAX_SLEW_PPM = 2000.0  # ... changing the rate by at most this much (3.5 cents: inaudible)
MAX_DRIFT_PPM = 1000.0  # a fitted drift beyond this is noise, not a clock (hardware: tens of ppm)
HALF_TAPS = 8  # windowed-sinc interpolation: taps on each side of a sample (upsampling or same rate)
PHASES = 512  # sub-sample positions of the interpolation table


@dataclass(frozen=True)
class Block:
    """One callback's worth of samples (the audio callback -> the stage's loop)."""

    samples: np.ndarray  # (frames, channels) float32
    arrival_ns: int  # pipeline clock when the callback ran
    stamp_ns: int  # PortAudio's own time of the callback (its clock: wall-clock on Linux), 0: unknown
    latency_ns: int  # how long before that the first sample was captured (PortAudio's clock); <= 0: unknown
    overflow: bool  # the device lost samples before this block


class ClockBridge:
    """PortAudio's callback times on the pipeline clock.

    PortAudio stamps a callback on its own clock before Python runs it; the delay until our own
    stamp (the GIL, scheduling) varies, and its smallest value over the last BRIDGE_NS is the offset
    between the two clocks (a sliding minimum, so a step of the wall clock is followed).
    """

    def __init__(self) -> None:
        self._window: deque[tuple[int, int]] = deque()  # (arrival, delay), delays increasing: front is the min

    def to_clock(self, arrival_ns: int, stamp_ns: int) -> int:
        """The pipeline-clock time of a PortAudio stamp, seen by a callback that ran at ``arrival_ns``."""
        delay = arrival_ns - stamp_ns
        while self._window and self._window[-1][1] >= delay:
            self._window.pop()
        self._window.append((arrival_ns, delay))
        while arrival_ns - self._window[0][0] > BRIDGE_NS:
            self._window.popleft()
        return stamp_ns + self._window[0][1]


class ClockFit:
    """Capture time (clock ns) of device sample S: ``alpha + S * (p_nom + beta)``, fitted from callbacks.

    Each callback gives one estimate of its first sample's capture time: arrival time minus the
    latency PortAudio reports (a difference of two of its own timestamps, so the base of its clock
    does not matter). Estimates are grouped into buckets; each bucket's median is one point. Points
    belong to segments: a jump (lost samples, a new latency) starts a new one. The drift ``beta`` is
    the least-squares slope within every segment of the window (the device's clock rate survives a
    jump; a median of pair slopes, so a stray point does not tilt it), ``alpha`` puts the line through
    the current segment's latest points.
    """

    def __init__(self, rate: float) -> None:
        self.p_nom = NS_PER_S / rate  # ns per device sample, nominal
        self.bucket = max(1, round(rate * BUCKET_S))
        self.warmup = round(rate * WARMUP_S)
        self.alpha: float | None = None  # None until the first point
        self.beta = 0.0  # drift: extra ns per sample
        self.steps = 0  # jumps seen after the warm-up
        self._points: deque[tuple[float, float, int]] = deque(maxlen=WINDOW_POINTS)  # (sample, e, segment)
        self._segment = -1  # current segment; the warm-up's is -1 and gives no drift
        self._bucket: list[tuple[int, float]] = []
        self._pending: tuple[float, float] | None = None  # an off-line point waiting for a second one
        self._break = False
        self._seeded = False  # the segment holds only the one callback it started on

    @property
    def ready(self) -> bool:
        return self.alpha is not None

    @property
    def settled(self) -> bool:
        """Past the warm-up: the placement no longer leans on the stream's first latency reports."""
        return self._segment >= 0

    @property
    def drift_ppm(self) -> float:
        return self.beta / self.p_nom * 1e6

    def add(self, first_sample: int, capture_ns: int) -> None:
        """One callback: its first sample's index and estimated capture time."""
        e = capture_ns - first_sample * self.p_nom
        warm = first_sample >= self.warmup and (self._steady() or first_sample >= 4 * self.warmup)
        if self.alpha is None or self._break or (warm and not self.settled):
            # the first callback places the stream at once; the first one after the warm-up, and the
            # first one after lost samples, start afresh: what came before is not this segment
            self._break = False
            self._bucket = []
            self._start_segment([(float(first_sample), e)], warm)
            self._seeded = True  # one callback places the segment until its first bucket replaces it
            return
        if self._bucket and first_sample // self.bucket != self._bucket[0][0] // self.bucket:
            self._close_bucket()
        self._bucket.append((first_sample, e))

    def _steady(self) -> bool:
        """The warm-up's last 3 points agree: the stream's reported latency no longer ramps."""
        last = [e for _, e, seg in list(self._points)[-3:] if seg < 0]
        return len(last) == 3 and max(last) - min(last) <= STEADY_NS

    def discontinuity(self) -> None:
        """Samples were lost before the next callback: re-anchor on it."""
        self._break = True

    def time_of(self, sample: float) -> float:
        """Capture time (clock ns) of device sample ``sample``."""
        assert self.alpha is not None
        return self.alpha + sample * (self.p_nom + self.beta)

    def sample_at(self, t_ns: float) -> float:
        """Device sample (fractional) captured at clock time ``t_ns``."""
        assert self.alpha is not None
        return (t_ns - self.alpha) / (self.p_nom + self.beta)

    def _close_bucket(self) -> None:
        samples = np.array([s for s, _ in self._bucket], np.float64)
        errors = np.array([e for _, e in self._bucket], np.float64)
        self._bucket = []
        point = (float(np.median(samples)), float(np.median(errors)))
        assert self.alpha is not None
        if abs(point[1] - self.alpha - self.beta * point[0]) <= STEP_NS:
            self._pending = None
            if self._seeded:  # a bucket's median replaces the single callback the segment started on
                self._seeded = False
                self._points.pop()
            self._points.append((*point, self._segment))
            self._refit()
            return
        pending, self._pending = self._pending, point
        if pending is not None and abs(point[1] - pending[1] - self.beta * (point[0] - pending[0])) <= STEP_NS:
            self.steps += self.settled  # two points agree off the line: the device jumped
            self._start_segment([pending, point], self.settled)

    def _start_segment(self, points: list[tuple[float, float]], settled: bool) -> None:
        self._segment = self._segment + 1 if settled else -1
        if not settled:
            self._points.clear()
        self._points.extend((s, e, self._segment) for s, e in points)
        self._pending = None
        self._seeded = False
        self._refit()

    def _refit(self) -> None:
        """Drift: median slope of point pairs within settled segments; offset: the current segment's last points."""
        pts = np.array(self._points, np.float64)
        slopes = []
        for seg in np.unique(pts[:, 2]):
            sub = pts[pts[:, 2] == seg]
            if seg >= 0 and len(sub) > SLOPE_GAP:  # the warm-up's latency reports ramp: no drift from them
                i, j = np.triu_indices(len(sub), SLOPE_GAP)
                slopes.append((sub[j, 1] - sub[i, 1]) / (sub[j, 0] - sub[i, 0]))
        fitted = len(pts[pts[:, 2] >= 0]) >= SLOPE_POINTS and bool(slopes)
        if fitted:
            limit = MAX_DRIFT_PPM * 1e-6 * self.p_nom
            self.beta = max(-limit, min(limit, float(np.median(np.concatenate(slopes)))))
        cur = pts[pts[:, 2] == self._segment][-(OFFSET_POINTS if fitted else YOUNG_POINTS) :]
        self.alpha = float(np.median(cur[:, 1] - self.beta * cur[:, 0]))


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
            "samples_written": self.written,
            "silence_ms": round(self.silence * 1000 / OUT_RATE, 1),
            "dropped_ms": round(self.dropped * 1000 / self.device_rate, 1),
            "drift_ppm": round(self.fit.drift_ppm, 1),
            "correction_ppm": round((self.step / self.step_nom - 1) * 1e6, 1),
            "resyncs": self.resyncs,
            "clock_steps": self.fit.steps,
            "overflows": self.overflows,
        }
