"""Where a device's samples lie on the pipeline clock (pure logic, used in fp-audio).

A device's sample clock is the truth for audio, but its rate drifts from the pipeline clock (tens of
ppm on hardware; a PulseAudio null sink runs hundreds of ppm fast on small blocks). ``ClockBridge``
brings PortAudio's callback times onto the pipeline clock; ``ClockFit`` learns the line from device
sample counts to capture times, with its drift, across jumps (``stages.audio.resample`` places the
samples on the output grid by it).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from pipeline.clock import NS_PER_S

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
MAX_DRIFT_PPM = 1000.0  # a fitted drift beyond this is noise, not a clock (hardware: tens of ppm)


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
