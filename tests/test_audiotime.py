"""The audio timeline in one process, on simulated devices: drift, jitter, gaps, late starts."""

from __future__ import annotations

import numpy as np
import pytest

from stages.audio.clockfit import Block, ClockFit
from stages.audio.resample import SincTable, SourceTimeline
from stages.outputs.formats import OUT_RATE

BASE_NS = 5_000_000_000  # the pipeline's base time in these simulations
BURST_EVERY = OUT_RATE // 2  # a click every half second of device samples


WALL_OFFSET_NS = 1_700_000_000_000_000_000  # PortAudio's clock (wall-clock) minus the pipeline clock


class Device:
    """A simulated input: its sample clock runs ``ppm`` fast; callbacks of ``block`` frames run late by jitter.

    PortAudio stamps each callback on its own clock when it starts it; Python runs it 0-2 ms later.
    """

    def __init__(
        self,
        ppm: float,
        block: int = 480,
        start_ns: int = BASE_NS - 1_000_000_000,
        rate: float = OUT_RATE,
        latency_ns: int = 4_000_000,
        seed: int = 1,
    ) -> None:
        self.period_ns = 1e9 / rate / (1 + ppm * 1e-6)  # true ns per device sample
        self.rate, self.block, self.start_ns, self.latency_ns = rate, block, start_ns, latency_ns
        self.sent = 0  # device samples delivered
        self.rng = np.random.default_rng(seed)

    def capture_ns(self, sample: float) -> float:
        """True capture time of a device sample."""
        return self.start_ns + sample * self.period_ns

    def signal(self, first: int, n: int) -> np.ndarray:
        """A click (1.0) on each sample whose index is a multiple of BURST_EVERY, else 0."""
        idx = np.arange(first, first + n)
        out = np.zeros((n, 1), np.float32)
        out[idx % BURST_EVERY == 0] = 1.0
        return out

    def blocks_until(self, t_ns: float, lost: tuple[int, int] | None = None) -> list[Block]:
        """Every callback that arrives by ``t_ns``; ``lost``: (first sample, count) the device drops."""
        out: list[Block] = []
        while True:
            end = self.sent + self.block
            started = self.capture_ns(end) + self.rng.uniform(0, 3e5)  # PortAudio starts the callback
            arrival = started + self.rng.uniform(0, 2e6)  # Python runs it: 0-2 ms later
            if arrival > t_ns:
                return out
            overflow = False
            if lost is not None and self.sent <= lost[0] < end:
                self.sent += lost[1]  # the samples were never delivered
                overflow = True
                end = self.sent + self.block
                started = self.capture_ns(end) + 1e5
                arrival = started + 1e6
            # PortAudio's latency: from its stamp back to the first sample's capture, with a little noise
            latency = started - self.capture_ns(self.sent) + self.rng.normal(0, 5e4)
            block = self.signal(self.sent, self.block)
            out.append(Block(block, round(arrival), round(started + WALL_OFFSET_NS), round(latency), overflow))
            self.sent = end


def run(
    device: Device, seconds: float, lost: tuple[int, int] | None = None, block: int = 1024
) -> tuple[SourceTimeline, np.ndarray]:
    """Feed the device into a timeline in 10 ms steps and emit blocks as soon as they are ready."""
    tl = SourceTimeline(device.rate, 1)
    for b in device.blocks_until(BASE_NS):
        tl.push(b)
    tl.start(BASE_NS)
    out = []
    t = BASE_NS
    while tl.pos < seconds * OUT_RATE:
        t += 10_000_000
        for b in device.blocks_until(t, lost):
            tl.push(b)
        while tl.ready(tl.pos + block):
            out.append(tl.produce(tl.pos + block)[0])
        if t > BASE_NS + (tl.pos + block) / OUT_RATE * 1e9 + 300e6:  # late: the stage fills silence
            out.append(tl.produce(tl.pos + block)[0])
    return tl, np.concatenate(out)


def click_errors_ms(device: Device, out: np.ndarray) -> np.ndarray:
    """Output time minus true capture time of every click found in the output, in ms."""
    peaks = np.flatnonzero((out[1:-1] > out[:-2]) & (out[1:-1] >= out[2:]) & (out[1:-1] > 0.5)) + 1
    errors = []
    for p in peaks:
        t_out = BASE_NS + p / OUT_RATE * 1e9
        nearest = round((t_out - device.start_ns) / device.period_ns / BURST_EVERY) * BURST_EVERY
        errors.append((t_out - device.capture_ns(nearest)) / 1e6)
    return np.array(errors)


@pytest.mark.parametrize("ppm", [0.0, 80.0, -300.0, 800.0])
def test_drift_is_measured_and_clicks_stay_on_the_clock(ppm: float) -> None:
    device = Device(ppm)
    tl, out = run(device, 40)
    errors = click_errors_ms(device, out)
    assert len(errors) >= 70
    assert np.abs(errors).max() < 2, errors  # while the drift is learned (5 s) and slewed in, then:
    assert np.abs(errors[14:]).max() < 0.15, errors
    assert tl.fit.drift_ppm == pytest.approx(-ppm, abs=15)  # the device runs fast: fewer clock ns per sample
    stats = tl.stats()
    assert stats["silence_ms"] == 0 and stats["resyncs"] == 0 and stats["dropped_ms"] == 0
    assert stats["samples_written"] == len(out)


def test_lost_samples_become_counted_silence_and_the_rest_stays_in_place() -> None:
    device = Device(50.0)
    lost = 4800  # 100 ms the device never delivered
    tl, out = run(device, 12, lost=(5 * OUT_RATE + 123, lost))
    errors = click_errors_ms(device, out)
    assert np.abs(errors).max() < 0.5, errors
    assert tl.stats()["silence_ms"] == pytest.approx(100, abs=2)
    assert tl.stats()["overflows"] == 1 and tl.stats()["resyncs"] == 1


def test_a_late_device_starts_with_silence() -> None:
    device = Device(0.0, start_ns=BASE_NS + 700_000_000)  # the stream starts 0.7 s after the base time
    tl, out = run(device, 5)
    errors = click_errors_ms(device, out)
    assert len(errors) >= 7 and np.abs(errors).max() < 2  # placed provisionally through its warm-up, then:
    assert np.abs(errors[6:]).max() < 0.3, errors
    assert tl.stats()["silence_ms"] == pytest.approx(700, abs=5)


def test_a_44100_hz_device_is_resampled_onto_48k() -> None:
    device = Device(20.0, rate=44_100, block=441)
    _, out = run(device, 10)
    assert len(out) >= 10 * OUT_RATE
    errors = click_errors_ms(device, out)
    assert len(errors) >= 15 and np.abs(errors).max() < 0.5


def test_sinc_table_passes_a_tone_unchanged() -> None:
    sinc = SincTable(1.0)
    t = np.arange(4000)
    tone = np.sin(2 * np.pi * 1000 * t / OUT_RATE).astype(np.float32)[:, None]
    positions = np.arange(100, 3800) + 0.37
    got = sinc.interpolate(tone, positions)[:, 0]
    want = np.sin(2 * np.pi * 1000 * positions / OUT_RATE)
    assert np.abs(got - want).max() < 2e-3


def test_clock_fit_ignores_one_outlier_bucket_and_follows_a_confirmed_step() -> None:
    fit = ClockFit(OUT_RATE)
    for k in range(200):  # 50 ms blocks: 4 s
        s = k * 2400
        jump = 40e6 if 100 <= k < 105 else 0.0  # a quarter second of bad latency reports
        fit.add(s, round(1e9 + s * 1e9 / OUT_RATE + jump))
    assert fit.steps == 0 and fit.time_of(200 * 2400) == pytest.approx(1e9 + 1e10, abs=2e5)
    for k in range(200, 300):  # then the device really jumps by 40 ms
        s = k * 2400
        fit.add(s, round(1e9 + s * 1e9 / OUT_RATE + 40e6))
    assert fit.steps == 1 and fit.time_of(300 * 2400) == pytest.approx(1e9 + 1.5e10 + 40e6, abs=2e5)
