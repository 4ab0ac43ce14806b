"""The test sound: a tone burst at every whole second of the pipeline clock, played into a PulseAudio sink.

Run as ``python -m framepipe.proof.tone --sink fp_out [--freq 1000] [--burst-ms 50] [--info FILE] [--duration S]``
or start it from Python with :func:`start_tone`.

The burst of ``--freq`` Hz starts (sine phase 0, no fade-in: a sharp onset) on each sample whose
output time is a whole second of ``pipeline.clock.now_ns()``, the clock that also paints the test
screen. A sample's output time comes from PortAudio: ``outputBufferDacTime - currentTime`` is how long
until the buffer's first sample is played, added to PortAudio's callback time brought onto the
pipeline clock (the least callback delay of the last seconds). Per callback that is noisy, so the player
fits a line through those estimates against sample counts (``PlayClock``, its own: the recorder's
clock fit is what the bursts check) and places every burst by sample count on it. The info JSON names
the sink, tone and period;
the ``FILE.stats`` written at the end holds the output latency measured (p50, min, max) and
underflows.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np

from framepipe.proof.launch import start_module
from pipeline.clock import NS_PER_S, now_ns
from pipeline.errors import FramepipeError

RATE = 48_000
AMPLITUDE = 0.5
FADE_OUT_MS = 2.0  # a short fade at the burst's end (its start stays sharp)
LATENCY_S = 0.2  # output buffer: large, so a loaded machine does not underflow it (the sink's latency is pinned
# by its monitor's listener, see framepipe.proof.pulse, so a large buffer does not make the sink render far ahead)
PRIORITY = -10  # nice value asked for (root only): the reference must play on time
SETTLE_S = 6.0  # start_tone returns once the player has played this long: its clock fit has settled and
# learned the sink's drift (5 s of points), so the bursts are on time from the first
START_TIMEOUT_S = 10.0


FIT_WINDOW_S = 20.0  # the player's line is fitted over this many seconds of samples ...
OFFSET_WINDOW_S = 2.0  # ... its offset is the median over the last this many (a stray callback does not move it)
FIT_MIN_POINTS = 5
BRIDGE_CALLBACKS = 100  # about 2 s of the player's callbacks


class ToneError(FramepipeError, RuntimeError):
    """The tone player cannot run; the message says why."""


def burst(freq: float, burst_ms: float, rate: int = RATE) -> np.ndarray:
    """One burst: a sine from phase 0 at full amplitude, faded out over its last FADE_OUT_MS."""
    n = round(rate * burst_ms / 1000)
    out = AMPLITUDE * np.sin(2 * np.pi * freq * np.arange(n) / rate)
    fade = min(n, round(rate * FADE_OUT_MS / 1000))
    out[n - fade :] *= np.linspace(1, 0, fade)
    return out.astype(np.float32)


class Bridge:
    """PortAudio's callback times on the pipeline clock: its stamp plus the least delay from stamp to our
    callback among the last BRIDGE_CALLBACKS (the least delayed callback shows the clocks' offset)."""

    def __init__(self) -> None:
        self.delays: deque[int] = deque(maxlen=BRIDGE_CALLBACKS)

    def to_clock(self, arrival_ns: int, stamp_ns: int) -> int:
        self.delays.append(arrival_ns - stamp_ns)
        return stamp_ns + min(self.delays)


class PlayClock:
    """When sample S is played: a least-squares slope over FIT_WINDOW_S, the offset a median over the last
    OFFSET_WINDOW_S; an underflow starts afresh (later samples play later)."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.points: deque[tuple[int, int]] = deque()  # (sample, play time ns)
        self.alpha = 0.0
        self.beta = NS_PER_S / rate  # ns per sample

    @property
    def ready(self) -> bool:
        return len(self.points) >= FIT_MIN_POINTS

    def add(self, sample: int, t_ns: int) -> None:
        self.points.append((sample, t_ns))
        while sample - self.points[0][0] > FIT_WINDOW_S * self.rate:
            self.points.popleft()
        if not self.ready:
            return
        pts = np.array(self.points, np.float64)
        s, t = pts[:, 0] - pts[0, 0], pts[:, 1] - pts[0, 1]
        if s[-1] > self.rate:  # a second of samples: fit the rate, else keep the nominal one
            self.beta = float(np.polyfit(s, t, 1)[0])
        recent = pts[pts[:, 0] >= sample - OFFSET_WINDOW_S * self.rate]
        self.alpha = float(np.median(recent[:, 1] - self.beta * recent[:, 0]))

    def discontinuity(self) -> None:
        self.points.clear()

    def time_of(self, sample: float) -> float:
        return self.alpha + sample * self.beta

    def sample_at(self, t_ns: float) -> float:
        return (t_ns - self.alpha) / self.beta


class Placer:
    """Which samples of each buffer hold a burst, from output times (pure: unit-testable)."""

    def __init__(self, shape: np.ndarray, period_ns: int, rate: int = RATE) -> None:
        self.shape = shape
        self.period_ns = period_ns
        self.rate = rate
        self.sent = 0  # samples handed to the device so far
        self.fit = PlayClock(rate)  # output time of sample S

    def fill(self, out: np.ndarray, first_out_ns: float | None) -> None:
        """Fill ``out`` (frames, channels); ``first_out_ns``: when its first sample is played, if known."""
        frames = len(out)
        if first_out_ns is not None:
            self.fit.add(self.sent, round(first_out_ns))
        out[:] = 0
        if self.fit.ready:
            start = self.fit.time_of(self.sent)  # output time of out[0]
            end = self.fit.time_of(self.sent + frames)
            burst_ns = len(self.shape) * NS_PER_S / self.rate
            second = (int(start - burst_ns) // self.period_ns + 1) * self.period_ns  # first burst that reaches in
            while second < end:
                onset = round(self.fit.sample_at(second)) - self.sent  # index of the burst's first sample
                lo, hi = max(0, onset), min(frames, onset + len(self.shape))
                if lo < hi:
                    out[lo:hi] = self.shape[lo - onset : hi - onset, None]
                second += self.period_ns
        self.sent += frames


def run(
    sink: str, freq: float, burst_ms: float, period_ns: int, info_path: Path | None, duration_s: float | None
) -> dict[str, Any]:
    """Play until SIGTERM/SIGINT or the duration ends; return the stats."""
    os.environ["PULSE_SINK"] = sink
    with contextlib.suppress(OSError):
        os.nice(PRIORITY)  # before PortAudio starts its thread
    import sounddevice as sd

    stop = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    placer = Placer(burst(freq, burst_ms), period_ns)
    latencies: list[int] = []
    underflows = 0

    bridge = Bridge()

    def callback(out: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        nonlocal underflows
        now = now_ns()
        dac, current = time_info.outputBufferDacTime, time_info.currentTime
        first: float | None = None
        if dac > 0 and current > 0 and 0 < dac - current < 10:  # 0: not reported (short buffers)
            latency = round((dac - current) * NS_PER_S)
            latencies.append(latency)
            first = bridge.to_clock(now, round(current * NS_PER_S)) + latency
        if status.output_underflow:  # the sink played silence: later samples play later, re-anchor at once
            underflows += 1
            placer.fit.discontinuity()
        placer.fill(out, first)

    try:
        stream = sd.OutputStream(device="pulse", samplerate=RATE, channels=2, dtype="float32", latency=LATENCY_S,
                                 callback=callback)  # fmt: skip
    except Exception as exc:
        raise ToneError(f"cannot open PulseAudio output for sink {sink}: {exc}") from None
    started = now_ns()
    with stream:
        if info_path is not None:
            info = {"sink": sink, "freq": freq, "burst_ms": burst_ms, "period_ns": period_ns, "phase_ns": 0,
                    "rate": RATE, "amplitude": AMPLITUDE, "pid": os.getpid()}  # fmt: skip
            _write_json(info_path, info)
        while not stop and (duration_s is None or now_ns() - started < duration_s * NS_PER_S):
            time.sleep(0.05)
    lat = np.array(latencies, np.float64) / 1e6
    stats = {
        "callbacks": len(latencies), "underflows": underflows, "samples": placer.sent,
        "latency_ms_p50": round(float(np.median(lat)), 3) if lat.size else None,
        "latency_ms_min": round(float(lat.min()), 3) if lat.size else None,
        "latency_ms_max": round(float(lat.max()), 3) if lat.size else None,
    }  # fmt: skip
    if info_path is not None:
        _write_json(Path(f"{info_path}.stats"), stats)
    return stats


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` to ``path`` atomically (a temporary file, then rename)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def start_tone(
    sink: str,
    *,
    info_path: str | os.PathLike[str],
    freq: float = 1000,
    burst_ms: float = 50,
    env: Mapping[str, str] | None = None,
    timeout_s: float = START_TIMEOUT_S,
) -> subprocess.Popen[bytes]:
    """Start the player as a subprocess (``env``: e.g. PULSE_SERVER); return once it has played a while."""
    info = Path(info_path)
    args = ["--sink", sink, "--freq", str(freq), "--burst-ms", str(burst_ms), "--info", str(info)]
    proc = start_module(
        "framepipe.proof.tone", args, info, env=env, timeout_s=timeout_s, error=ToneError,
        keep_line=lambda ln: "tone:" in ln,
    )
    time.sleep(SETTLE_S)
    return proc


def load_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The info JSON a tone player wrote."""
    data: dict[str, Any] = json.loads(Path(path).read_text())
    return data


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m framepipe.proof.tone", description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--sink", required=True, help="PulseAudio sink to play into (PULSE_SERVER picks the server)")
    parser.add_argument("--freq", type=float, default=1000.0, help="tone frequency in Hz (default 1000)")
    parser.add_argument("--burst-ms", type=float, default=50.0, help="burst length in ms (default 50)")
    parser.add_argument("--period", type=float, default=1.0, help="seconds between bursts (default 1)")
    parser.add_argument("--info", type=Path, help="write the info JSON here (and FILE.stats at the end)")
    parser.add_argument("--duration", type=float, help="stop after S seconds")
    args = parser.parse_args(argv)
    try:
        stats = run(args.sink, args.freq, args.burst_ms, round(args.period * NS_PER_S), args.info, args.duration)
    except ToneError as exc:
        print(f"tone: {exc}", file=sys.stderr)
        return 2
    print(f"tone: {stats['callbacks']} callbacks, latency p50 {stats['latency_ms_p50']} ms, "
          f"{stats['underflows']} underflows", file=sys.stderr)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
