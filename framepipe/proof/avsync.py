"""Judge A/V sync from the file alone: tone bursts in an audio track against the test screen's frames.

The tone player (``framepipe.proof.tone``) starts a burst at every whole second W of the pipeline clock;
the test screen paints state n at ``base_ns + n / fps`` of the same clock. ``read_track`` decodes one
audio track (placed by its timestamps, never packed); ``onsets`` finds each burst's first sample;
``sync_report`` compares each onset with the video:

- ``offset_ms``: onset time minus the video's time of instant W. The video's time of an instant comes
  from the frames within half a second of it: a frame showing state n was grabbed while n was on
  screen, so the file time t of a frame maps to about ``paint(n) + period / 2`` on the clock.
- ``frame_offset_ms``: onset time minus the time of the first frame that shows the state on screen
  at W (the frame a viewer sees with the sound), so it carries up to a frame of grab phase.
- ``clock_error_ms``: with the recorder's base time, onset time against ``W - base_time`` exactly
  (file times counted from the first video frame, which is running time 0).

Drift is the slope of ``offset_ms`` over the run (ms per minute), and the last bursts against the
first. Lengths: where the audio track ends against where the video ends (last frame + one period).

CLI: ``python -m framepipe.proof.avsync FILE --screen-info S.json --tone-info T.json [--base-time-ns N]
[--track I] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np

from framepipe.proof import judge, testscreen, tone
from framepipe.proof.judge import JudgeError

THRESHOLD = 0.5  # an onset is where the tone's envelope first reaches this share of the burst's amplitude
QUIET_S = 0.3  # ... after at least this long below it
MIN_PEAK = 0.05  # a track quieter than this has no bursts


CUT_STATES = 30  # a jump of more than this many states between two frames is a pause's cut (at 60 fps: 0.5 s)
CUT_MARGIN_S = 0.1  # bursts this close to a cut are not judged (a burst may be cut in two there)


@dataclass(frozen=True)
class Track:
    """One decoded audio track, mono (channel 0), placed by its timestamps."""

    title: str
    rate: int
    start: float  # file time of samples[0], s
    samples: np.ndarray  # float32

    @property
    def end(self) -> float:
        return self.start + len(self.samples) / self.rate


def audio_tracks(path: str | Path) -> list[str]:
    """Titles of the audio tracks of ``path``, in order ("" where a track has none)."""
    with av.open(str(path)) as container:
        return [s.metadata.get("title", s.metadata.get("handler_name", "")) for s in container.streams.audio]


def read_track(path: str | Path, index: int = 0) -> Track:
    """Decode audio track ``index``: each frame at its own time (or right after the one before, when
    within a millisecond of it), gaps left as zeros."""
    try:
        container = av.open(str(path))
    except (OSError, av.FFmpegError) as exc:
        raise JudgeError(f"cannot open {path}: {exc}") from exc
    with container:
        if len(container.streams.audio) <= index:
            raise JudgeError(f"{path} has {len(container.streams.audio)} audio track(s), not track {index}")
        stream = container.streams.audio[index]
        title = stream.metadata.get("title", stream.metadata.get("handler_name", ""))
        rate = stream.rate
        pieces: list[tuple[int, np.ndarray]] = []
        for frame in container.decode(stream):
            data = frame.to_ndarray()
            mono = data[0] if frame.format.is_planar else data.reshape(-1, len(frame.layout.channels))[:, 0]
            follows = pieces[-1][0] + len(pieces[-1][1]) if pieces else None  # where the last frame ended
            at = round(frame.time * rate) if frame.time is not None else follows or 0
            if follows is not None and abs(at - follows) <= rate // 1000:
                at = follows  # contiguous: Matroska rounds times to 1 ms, the samples themselves do not
            pieces.append((at, mono.astype(np.float32)))
    if not pieces:
        raise JudgeError(f"audio track {index} of {path} holds no samples")
    first = pieces[0][0]
    total = max(at + len(s) for at, s in pieces) - first
    samples = np.zeros(total, np.float32)
    for at, s in pieces:
        samples[at - first : at - first + len(s)] = s
    return Track(title, rate, first / rate, samples)


def _window(rate: int, freq: float) -> int:
    """Samples averaged by ``envelope``: whole periods of the tone and of 1 kHz, so other kHz tones cancel."""
    return max(1, round(rate * max(1 / freq, 0.001)))


def envelope(samples: np.ndarray, rate: int, freq: float) -> np.ndarray:
    """Amplitude of the ``freq`` component: demodulate, then average over one period (kills 2f)."""
    t = np.arange(len(samples)) / rate
    base = samples * np.exp(-2j * np.pi * freq * t)
    width = _window(rate, freq)
    kernel = np.ones(width) / width
    return 2 * np.abs(np.convolve(base, kernel, mode="full")[: len(samples)])


def _detector_delay(rate: int, freq: float) -> float:
    """Seconds from a clean burst's first sample to where ``onsets`` finds it (subtracted)."""
    shape = tone.burst(freq, 50, rate)
    clean = np.concatenate([np.zeros(rate // 2, np.float32), shape, np.zeros(rate // 10, np.float32)])
    found = _crossings(clean, rate, freq)
    return found[0] - 0.5 if found else 0.0


def _crossings(samples: np.ndarray, rate: int, freq: float) -> list[float]:
    env = envelope(samples, rate, freq)
    peak = float(np.percentile(env, 99.9))
    if peak < MIN_PEAK:
        return []
    above = np.flatnonzero(env >= THRESHOLD * peak)
    if not above.size:
        return []
    starts = above[np.r_[True, np.diff(above) > QUIET_S * rate]]
    out = []
    for i in starts[starts > 2 * _window(rate, freq)]:  # a burst sounding as the track starts has no onset
        # interpolate between the sample below and the one at or above the threshold
        lo, hi = env[i - 1], env[i]
        frac = (THRESHOLD * peak - lo) / (hi - lo) if hi > lo else 0.0
        out.append((i - 1 + frac) / rate)
    return out


def onsets(track: Track, freq: float) -> list[float]:
    """File times (s) where each burst of ``freq`` Hz starts."""
    delay = _detector_delay(track.rate, freq)
    return [track.start + t - delay for t in _crossings(track.samples, track.rate, freq)]


@dataclass(frozen=True)
class Burst:
    """One burst against the video."""

    second_ns: int  # W: the clock time it was played at
    onset_s: float  # where the file has it
    offset_ms: float  # onset minus the video's time of W
    frame_offset_ms: float  # onset minus the first frame showing the state on screen at W
    clock_error_ms: float | None  # onset minus (W - base time), with the base time


@dataclass(frozen=True)
class SyncReport:
    """A/V sync of one audio track against the video of a recording."""

    track: str
    bursts: tuple[Burst, ...]
    offset_ms_p50: float
    offset_ms_max: float  # largest |offset|
    frame_offset_ms_max: float  # largest |frame offset|
    drift_ms_per_min: float  # slope of the offset over the run
    start_end_ms: float  # mean offset of the last 3 bursts minus the first 3
    audio_start_s: float
    audio_end_s: float
    video_start_s: float
    video_end_s: float  # last frame + one period
    length_diff_ms: float  # audio end minus video end

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        return (f"track {self.track or '?'}: {len(self.bursts)} bursts, offset p50 {self.offset_ms_p50:+.2f} ms, "
                f"max |offset| {self.offset_ms_max:.2f} ms, max |frame offset| {self.frame_offset_ms_max:.2f} ms, "
                f"drift {self.drift_ms_per_min:+.3f} ms/min (last-first {self.start_end_ms:+.2f} ms), "
                f"audio ends {self.length_diff_ms:+.1f} ms from the video")  # fmt: skip


def sync_report(
    frames: Sequence[judge.Frame],
    track: Track,
    screen: Mapping[str, Any],
    sound: Mapping[str, Any],
    base_time_ns: int | None = None,
    found: Sequence[float] | None = None,
) -> SyncReport:
    """Compare the bursts in ``track`` with the video ``frames`` (from ``judge.read_codes``).

    States are taken as unwrapped from the first frame's code (the test screen ran less than
    65536 frames before the recording began).
    """
    fps = float(screen["fps"])
    period_ns = 1e9 / fps
    base_ns = int(screen["base_ns"])
    shown = [(f.time, f.state) for f in frames if f.state is not None]
    if not shown:
        raise JudgeError("no video frame shows a readable state")
    times = np.array([t for t, _ in shown])
    states = np.array([n for _, n in shown])
    # clock time of each frame's grab, as the video tells it: its state's paint time plus half a period
    clock_of_frame = base_ns + states * period_ns + period_ns / 2 - times * 1e9
    global_offset = float(np.median(clock_of_frame))
    video_start = float(frames[0].time)
    every = int(sound["period_ns"])
    bursts = []
    for onset in onsets(track, float(sound["freq"])) if found is None else found:
        w = round((onset * 1e9 + global_offset) / every) * every
        near = np.abs(times * 1e9 + global_offset - w) < 0.5e9
        local = float(np.median(clock_of_frame[near])) if near.any() else global_offset
        offset = (onset * 1e9 - (w - local)) / 1e6
        n_w = int(np.floor((w - base_ns) / period_ns))
        later = np.flatnonzero(states >= n_w)
        if not later.size:
            continue
        k = later[0]  # first frame showing the state on screen at W (or the next one, if none shows it)
        frame_time = times[k] - (states[k] - n_w) * period_ns / 1e9
        clock = None if base_time_ns is None else (onset - video_start - (w - base_time_ns) / 1e9) * 1e3
        bursts.append(Burst(w, onset, round(offset, 3), round((onset - frame_time) * 1e3, 3),
                            None if clock is None else round(clock, 3)))  # fmt: skip
    if not bursts:
        raise JudgeError(f"no {sound['freq']:g} Hz burst found in audio track {track.title!r}")
    offs = np.array([b.offset_ms for b in bursts])
    ws = np.array([b.second_ns for b in bursts], np.float64) / 60e9
    slope = float(np.polyfit(ws - ws[0], offs, 1)[0]) if len(bursts) >= 3 else 0.0
    k = min(3, len(bursts))
    video_end = float(frames[-1].time) + 1 / fps
    return SyncReport(
        track=track.title, bursts=tuple(bursts), offset_ms_p50=round(float(np.median(offs)), 3),
        offset_ms_max=round(float(np.abs(offs).max()), 3),
        frame_offset_ms_max=round(float(max(abs(b.frame_offset_ms) for b in bursts)), 3),
        drift_ms_per_min=round(slope, 4), start_end_ms=round(float(offs[-k:].mean() - offs[:k].mean()), 3),
        audio_start_s=round(track.start, 6), audio_end_s=round(track.end, 6),
        video_start_s=round(video_start, 6), video_end_s=round(video_end, 6),
        length_diff_ms=round((track.end - video_end) * 1e3, 3),
    )  # fmt: skip


def pieces(frames: Sequence[judge.Frame]) -> list[list[judge.Frame]]:
    """The recorded parts of a paused recording: runs of frames whose states go on without a jump
    of more than a second (a pause leaves its states out; a lost frame or two is not a cut)."""
    parts: list[list[judge.Frame]] = [[]]
    last: int | None = None
    for frame in frames:
        if frame.state is None:
            continue
        if last is not None and frame.state - last > CUT_STATES:
            parts.append([])
        parts[-1].append(frame)
        last = frame.state
    return [p for p in parts if p]


def sync_by_piece(
    frames: Sequence[judge.Frame], track: Track, screen: Mapping[str, Any], sound: Mapping[str, Any]
) -> list[SyncReport]:
    """A/V sync of each recorded part on its own (each part's picture is shifted by the pauses before it);
    bursts within CUT_MARGIN_S of a cut are left out (one may be cut in two there)."""
    found = onsets(track, float(sound["freq"]))
    reports = []
    for part in pieces(frames):
        start, end = part[0].time, part[-1].time
        inside = [o for o in found if start + CUT_MARGIN_S <= o <= end - CUT_MARGIN_S]
        if inside:
            reports.append(sync_report(part, track, screen, sound, found=inside))
    return reports


def judge_file(
    path: str | Path,
    screen_info: Mapping[str, Any],
    tone_info: Mapping[str, Any],
    base_time_ns: int | None = None,
    track: int = 0,
    origin: Sequence[int] = (0, 0),
) -> SyncReport:
    """Read the video's states and audio track ``track`` of ``path``; the report."""
    frames = judge.read_codes(path, screen_info["code_rect"], origin)
    return sync_report(frames, read_track(path, track), screen_info, tone_info, base_time_ns)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m framepipe.proof.avsync",
                                     description=(__doc__ or "").split("\n")[0])
    parser.add_argument("file", type=Path, help="recorded file (video of the test screen, audio of the tone)")
    parser.add_argument("--screen-info", type=Path, required=True, help="the test screen's info JSON")
    parser.add_argument("--tone-info", type=Path, required=True, help="the tone player's info JSON")
    parser.add_argument("--base-time-ns", type=int, help="recorder's base time, for errors against the clock")
    parser.add_argument("--track", type=int, default=0, help="audio track index (default 0)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of one line")
    args = parser.parse_args(argv)
    try:
        report = judge_file(args.file, testscreen.load_info(args.screen_info), tone.load_info(args.tone_info),
                            args.base_time_ns, args.track)  # fmt: skip
    except (OSError, ValueError, KeyError, JudgeError) as exc:
        print(f"avsync: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report.as_dict()) if args.json else f"{args.file}: {report.summary()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
