"""Judge a recording by what it shows: read the test screen's frame codes back and count.

``read_codes`` decodes a file (PyAV, av 18 and 19) and reads each frame's code from the luma
plane; ``judge`` counts states written, missing, repeated and swapped; ``timestamp_errors``
compares capture times with the times the shown states were painted.

CLI: ``python -m framepipe.proof.judge FILE --info INFO [--origin X,Y] [--base-time-ns N] [--json]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np

from framepipe.proof.testscreen import CODE_BITS, CODE_BLOCK, CODE_BORDER, CODE_HEIGHT, CODE_WIDTH, load_info
from pipeline.errors import FramepipeError

#: Codes wrap at this value.
CODE_MODULO = 1 << CODE_BITS
#: A block reads as white at a mean luma above 128 + margin, black below 128 - margin; else unreadable.
LUMA_MARGIN = 48
#: How far a pts may be from the period grid (MKV stores milliseconds), in seconds.
PTS_TOLERANCE_S = 0.001
#: Pixel formats whose plane 0 is 8-bit luma, read without conversion.
_LUMA_PLANE_FORMATS = frozenset({
    "yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "yuv440p", "yuvj440p",
    "yuv411p", "yuv410p", "nv12", "nv21", "nv16", "gray",
})
_WEIGHTS = 1 << np.arange(CODE_BITS - 1, -1, -1)


class JudgeError(FramepipeError, RuntimeError):
    """The recording cannot be judged; the message says why."""


@dataclass(frozen=True)
class Frame:
    """One decoded frame: its index in the file, pts time, code read, and unwrapped state."""

    index: int  # position in decode order, from 0
    time: float  # pts in seconds
    code: int | None  # code read (n mod 65536), None if unreadable
    state: int | None = None  # code unwrapped across 65536 wraps, None if unreadable


def count_frames(path: str | Path) -> int:
    """Video frames that decode from ``path``, counted by ffprobe (an independent reader)."""
    done = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_frames", "-show_entries",
         "stream=nb_read_frames", "-of", "csv=p=0", str(path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    text = done.stdout.strip().rstrip(",")
    return int(text) if text.isdigit() else 0


def video_span_s(path: str | Path) -> float:
    """Seconds from the first video frame to the end of the last one, by the packets' times (a file with pts
    gaps, where an overloaded encoder left repeats out, spans its whole time with fewer frames)."""
    try:
        container = av.open(str(path))
    except (OSError, av.FFmpegError) as exc:
        raise JudgeError(f"cannot open {path}: {exc}") from exc
    with container:
        stream = container.streams.video[0]
        times = [(float(p.pts * p.time_base), float((p.duration or 0) * p.time_base))
                 for p in container.demux(stream) if p.pts is not None]  # fmt: skip
    if not times:
        return 0.0
    first = min(t for t, _ in times)
    last, duration = max(times)
    return last + duration - first


def read_code(luma: np.ndarray) -> int | None:
    """The code in ``luma`` (CODE_HEIGHT x CODE_WIDTH, 8-bit), or None if any bit disagrees."""
    inner = luma[CODE_BORDER:CODE_BORDER + 2 * CODE_BLOCK, CODE_BORDER:CODE_BORDER + CODE_BITS * CODE_BLOCK]
    q = CODE_BLOCK // 4
    blocks = inner.reshape(2, CODE_BLOCK, CODE_BITS, CODE_BLOCK)[:, q:CODE_BLOCK - q, :, q:CODE_BLOCK - q]
    means = blocks.mean(axis=(1, 3))
    if np.any(np.abs(means - 128) < LUMA_MARGIN):
        return None
    bits = means > 128
    if np.any(bits[0] == bits[1]):
        return None
    return int(bits[0] @ _WEIGHTS)


def unwrap(frames: Sequence[Frame]) -> list[Frame]:
    """Frames with ``state`` set: codes unwrapped by the nearest step (|step| < 32768) from the last code."""
    out: list[Frame] = []
    prev_code: int | None = None
    state = 0
    for f in frames:
        if f.code is None:
            out.append(dataclasses.replace(f, state=None))
            continue
        if prev_code is None:
            state = f.code
        else:
            state += (f.code - prev_code + CODE_MODULO // 2) % CODE_MODULO - CODE_MODULO // 2
        prev_code = f.code
        out.append(dataclasses.replace(f, state=state))
    return out


def _luma(frame: Any, reformatter: Any) -> np.ndarray:
    """The frame's 8-bit luma as an H x W view (plane 0 of YUV/gray formats, else one conversion)."""
    if frame.format.name in _LUMA_PLANE_FORMATS:
        plane = frame.planes[0]
        return np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[:frame.height, :frame.width]
    gray: np.ndarray = reformatter.reformat(frame, format="gray").to_ndarray()
    return gray


def _scaled_pixels(x: int, y: int, sx: float, sy: float, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of a picture scaled by sx, sy nearest to each pixel of the code at x, y."""
    rows = np.minimum(((y + np.arange(CODE_HEIGHT) + 0.5) * sy).astype(np.intp), height - 1)
    cols = np.minimum(((x + np.arange(CODE_WIDTH) + 0.5) * sx).astype(np.intp), width - 1)
    return rows, cols


def read_codes(path: str | Path, code_rect: Sequence[int], origin: Sequence[int] = (0, 0),
               size: Sequence[int] | None = None) -> list[Frame]:
    """Decode ``path`` and read each frame's code at ``code_rect`` (screen coordinates) minus ``origin``.

    ``size``: the recorded area's width and height, when the video may be scaled from it (the code is
    then read from the scaled picture, resampled to its own size by nearest pixels).
    """
    from av.video.reformatter import VideoReformatter

    x, y = int(code_rect[0]) - int(origin[0]), int(code_rect[1]) - int(origin[1])
    pick: tuple[np.ndarray, np.ndarray] | None = None  # rows and columns of a scaled code
    frames: list[Frame] = []
    try:
        container = av.open(str(path))
    except (OSError, av.FFmpegError) as exc:
        raise JudgeError(f"cannot open {path}: {exc}") from exc
    with container:
        if not container.streams.video:
            raise JudgeError(f"{path} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        reformatter = VideoReformatter()
        for i, frame in enumerate(container.decode(stream)):
            width, height = (int(size[0]), int(size[1])) if size else (frame.width, frame.height)
            if x < 0 or y < 0 or x + CODE_WIDTH > width or y + CODE_HEIGHT > height:
                raise JudgeError(f"code at {x},{y} ({CODE_WIDTH}x{CODE_HEIGHT}) is outside the "
                                 f"{width}x{height} video; check --origin")
            luma = _luma(frame, reformatter)
            if (frame.width, frame.height) == (width, height):
                code = read_code(luma[y:y + CODE_HEIGHT, x:x + CODE_WIDTH])
            else:
                if pick is None:
                    pick = _scaled_pixels(x, y, frame.width / width, frame.height / height, frame.width, frame.height)
                code = read_code(luma[np.ix_(*pick)])
            t = frame.time
            frames.append(Frame(i, float(t) if t is not None else float("nan"), code))
    return unwrap(frames)


@dataclass(frozen=True)
class Report:
    """What a recording shows, counted in test-screen states."""

    frames_written: int  # frames in the file
    unreadable: int  # frames whose code could not be read
    first_state: int | None  # lowest state shown
    last_state: int | None  # highest state shown
    expected: int  # states spanned: last - first + 1
    distinct: int  # different states shown
    missing: int  # states in the span never shown
    repeated: int  # readable frames showing an already shown state
    swaps: int  # a single skipped state next to a single repeat (capture at the instant of change)
    lost: int  # missing - swaps: states a viewer never sees beyond timing swaps
    backwards: int  # steps to an earlier state (frames out of order)
    pts_on_grid: bool  # every pts within 1 ms of first pts + k * period
    pts_increasing: bool  # every pts later than the one before
    pts_max_error_ms: float  # largest distance of a pts from the grid
    gaps: tuple[tuple[int, int], ...]  # (first missing state, how many) per run of missing states

    def as_dict(self) -> dict[str, Any]:
        """The report as plain JSON-able values."""
        d = dataclasses.asdict(self)
        d["gaps"] = [list(g) for g in self.gaps]
        return d

    def summary(self) -> str:
        """One line for people."""
        span = "no states" if self.first_state is None else f"states {self.first_state}..{self.last_state}"
        grid = "pts on grid" if self.pts_on_grid else f"pts off grid by up to {self.pts_max_error_ms:.2f} ms"
        return (f"{self.frames_written} frames, {self.unreadable} unreadable, {span} ({self.expected}), "
                f"{self.distinct} distinct, missing {self.missing} (swaps {self.swaps}, lost {self.lost}), "
                f"repeated {self.repeated}, backwards {self.backwards}, {grid}")


def _count_swaps(deltas: Sequence[int]) -> int:
    """Adjacent (repeat, skip-one) or (skip-one, repeat) steps, each repeat and skip single."""
    swaps, i = 0, 0
    while i < len(deltas) - 1:
        a, b = deltas[i], deltas[i + 1]
        repeat_then_skip = (a, b) == (0, 2) and (i == 0 or deltas[i - 1] != 0)
        skip_then_repeat = (a, b) == (2, 0) and (i + 2 >= len(deltas) or deltas[i + 2] != 0)
        if repeat_then_skip or skip_then_repeat:
            swaps += 1
            i += 2
        else:
            i += 1
    return swaps


def judge(frames: Sequence[Frame], period_s: float) -> Report:
    """Count what ``frames`` (from ``read_codes``) show, for a screen changing every ``period_s``."""
    states = [f.state for f in frames if f.state is not None]
    distinct_states = sorted(set(states))
    deltas = [b - a for a, b in itertools.pairwise(states)]
    gaps = tuple((a + 1, b - a - 1) for a, b in itertools.pairwise(distinct_states) if b - a > 1)
    expected = distinct_states[-1] - distinct_states[0] + 1 if states else 0
    missing = expected - len(distinct_states)
    repeated = len(states) - len(distinct_states)
    swaps = min(_count_swaps(deltas), missing, repeated)
    times = np.array([f.time for f in frames], dtype=np.float64)
    if times.size:
        steps = (times - times[0]) / period_s
        err = float(np.max(np.abs(steps - np.round(steps)))) * period_s
    else:
        err = 0.0
    return Report(
        frames_written=len(frames), unreadable=len(frames) - len(states),
        first_state=distinct_states[0] if states else None,
        last_state=distinct_states[-1] if states else None,
        expected=expected, distinct=len(distinct_states), missing=missing, repeated=repeated,
        swaps=swaps, lost=missing - swaps, backwards=sum(1 for d in deltas if d < 0),
        pts_on_grid=bool(err <= PTS_TOLERANCE_S + 1e-9),
        pts_increasing=bool(np.all(np.diff(times) > 0)),
        pts_max_error_ms=round(err * 1000, 3), gaps=gaps,
    )


@dataclass(frozen=True)
class TimestampErrors:
    """Capture time minus paint time of the shown state, over readable frames, in ms."""

    errors_ms: tuple[float, ...]  # per readable frame
    p50_ms: float  # median error
    max_ms: float  # largest absolute error
    outside: int  # frames stamped outside the time their state was on screen (beyond the tolerance)

    def as_dict(self) -> dict[str, Any]:
        return {"p50_ms": self.p50_ms, "max_ms": self.max_ms, "outside": self.outside,
                "frames": len(self.errors_ms)}


def paint_time_ns(n: int, info: Mapping[str, Any], stats: Mapping[str, Any] | None = None) -> float:
    """When state ``n`` was on screen: its deadline, plus its measured paint delay when ``stats`` has it."""
    t = int(info["base_ns"]) + n * 1e9 / float(info["fps"])
    delays = stats.get("paint_delay_us") if stats is not None else None
    if delays is not None and 0 <= n < len(delays) and delays[n] is not None:
        t += delays[n] * 1000  # measured: done (after XSync) this long after the deadline
    return t


def on_screen_ns(n: int, info: Mapping[str, Any], stats: Mapping[str, Any] | None = None) -> tuple[float, float] | None:
    """When state ``n`` was on screen for certain: from its paint done (after XSync) to the moment the paint of
    ``n + 1`` began (it cannot show before; the done time after it may come late, the painter descheduled past
    the server's reply). Older stats without begin times: to the paint of ``n + 1`` done. None: skipped."""
    stats = stats or {}
    delays = stats.get("paint_delay_us") or []
    if 0 <= n < len(delays) and delays[n] is None:
        return None
    starts = stats.get("paint_start_us") or []
    begun = starts[n + 1] if 0 <= n + 1 < len(starts) else None
    end = paint_time_ns(n + 1, info, stats) if begun is None else paint_time_ns(n + 1, info) + begun * 1000
    return paint_time_ns(n, info, stats), end


@dataclass(frozen=True)
class Attribution:
    """Who lost the missing states: the recorder unsaid, the screen (painted too late to be seen), or the
    recorder said so (a tick it repeated for want of a grab, a grab it stamped as late)."""

    recorder_lost: int  # states on screen through a capture instant, yet absent from the file
    screen_late: int  # states never on screen at any capture instant (painter late or skipped)
    counted: int = 0  # states on screen only at ticks the recorder said it repeated or grabbed late


@dataclass(frozen=True)
class Grabs:
    """What the recorder's stats say of the file's frames (by index): which repeat the held picture (no grab
    of their own), and how long after its tick each of the others was grabbed and within how long more its
    picture was made (the X server's copy), where that ended over 1 ms after the tick; and the ticks the file
    leaves out (seconds from its start: repeats the encoder, behind, did not write)."""

    repeats: frozenset[int] = frozenset()
    late_ns: Mapping[int, int] = dataclasses.field(default_factory=dict)
    left_out_s: tuple[float, ...] = ()
    window_ns: Mapping[int, int] = dataclasses.field(default_factory=dict)


def recorder_grabs(frames: Sequence[Frame], stats: Mapping[str, Any]) -> Grabs:
    """The encoder's ``repeat_runs`` and ``late_grabs`` (file ticks at the recording's frame rate) as frame
    indices of ``frames``; nothing for stats without them (older files, variable frame rate)."""
    enc = stats.get("stages", {}).get("encode", {}).get("stats", {})
    fps = float(stats.get("fps") or 0)
    if not fps:
        return Grabs()
    ticks = {pts + k for pts, n in enc.get("repeat_runs") or [] for k in range(n)}
    late = {pts: (us * 1000, window[0] * 1000 if window else 0) for pts, us, *window in enc.get("late_grabs") or []}
    at = {round(f.time * fps): f.index for f in frames}
    gaps = tuple(t / fps for t in range(min(at), max(at)) if t not in at) if at else ()
    return Grabs(frozenset(at[t] for t in ticks if t in at), {at[t]: ns for t, (ns, _) in late.items() if t in at},
                 gaps, {at[t]: ns for t, (_, ns) in late.items() if t in at and ns})  # fmt: skip


def repeats_not_held(frames: Sequence[Frame], grabs: Grabs) -> list[int]:
    """The recorder's repeats that do not show the state of the frame before them: a count that is not
    what the file holds (empty when every repeat the stats name is one in the file)."""
    wrong = []
    for prev, frame in itertools.pairwise(frames):
        if frame.index in grabs.repeats and None not in (frame.state, prev.state) and frame.state != prev.state:
            wrong.append(frame.index)
    return wrong


def attribute_missing(frames: Sequence[Frame], info: Mapping[str, Any], base_time_ns: int,
                      stats: Mapping[str, Any], tolerance_ms: float = 2.0,
                      grabs: Grabs | None = None) -> Attribution:  # fmt: skip
    """Split the missing states by cause, using the recorder's capture instants and measured paint times.

    Frame ``i`` stands for the screen at ``base_time_ns + time_i``. A missing state counts against the
    recorder when it was on screen (``on_screen_ns``) from ``tolerance_ms`` before to ``tolerance_ms`` after
    some frame's instant (so even a late grab would have seen it); otherwise the screen was late. With the
    recorder's ``grabs`` (``recorder_grabs``), a frame's instant is when it was grabbed, through the window in
    which the server made its picture; a state on screen only at the tick of a repeat or of a tick left out,
    or between the tick of a late grab and its picture, is ``counted`` (the recorder said so).
    """
    states = sorted({f.state for f in frames if f.state is not None})
    if not states:
        return Attribution(0, 0)
    grabs = grabs or Grabs()
    shown = set(states)
    missing = [n for n in range(states[0], states[-1] + 1) if n not in shown]
    base = np.float64(base_time_ns)

    def tick(f: Frame) -> float:
        return float(base + f.time * 1e9)

    def made(f: Frame) -> tuple[float, float]:  # when its picture was made: from its grab to the server's copy
        t = tick(f) + grabs.late_ns.get(f.index, 0)
        return t, t + grabs.window_ns.get(f.index, 0)

    grabbed = _spans([made(f) for f in frames if f.index not in grabs.repeats])
    said = _spans([(tick(f), tick(f)) for f in frames if f.index in grabs.repeats]
                  + [(tick(f), made(f)[1]) for f in frames if f.index in grabs.late_ns]  # (window_ns has only these)
                  + [(float(base + t * 1e9),) * 2 for t in grabs.left_out_s])  # fmt: skip
    tol = tolerance_ms * 1e6
    recorder = counted = 0
    for n in missing:
        shown_ns = on_screen_ns(n, info, stats)
        if shown_ns is None:
            continue  # the painter skipped it: never on screen
        low, high = shown_ns[0] + tol, shown_ns[1] - tol
        if np.any((grabbed[:, 0] >= low) & (grabbed[:, 1] <= high)):  # a picture made wholly while it showed
            recorder += 1
        elif np.any((said[:, 0] <= high) & (said[:, 1] >= low)):
            counted += 1
    return Attribution(recorder, len(missing) - recorder - counted, counted)


def _spans(spans: Sequence[tuple[float, float]]) -> np.ndarray:
    return np.array(spans, dtype=np.float64).reshape(-1, 2)


def timestamp_errors(frames: Sequence[Frame], info: Mapping[str, Any], base_time_ns: int,
                     stats: Mapping[str, Any] | None = None, tolerance_ms: float = 2.0) -> TimestampErrors:
    """Per-frame (capture time) - (time the shown state was painted), in ms.

    A frame with pts time ``t`` was captured at ``base_time_ns + t * 1e9`` (the recorder's clock,
    the same as the test screen's). State ``n`` is painted at ``info["base_ns"] + n / fps``, or at
    its measured paint time when the test screen's ``stats`` (its ``.stats`` file) is given. A frame
    is ``outside`` when its capture time is before its state was painted or after the next state was.
    """
    base_ns, fps = int(info["base_ns"]), float(info["fps"])

    def painted_ns(n: int) -> float:
        return paint_time_ns(n, info, stats)

    errors: list[float] = []
    outside = 0
    for f in frames:
        if f.code is None:
            continue
        captured = base_time_ns + f.time * 1e9
        guess = (captured - base_ns) * fps / 1e9  # the state on screen at capture, nominally
        n = f.code + CODE_MODULO * round((guess - f.code) / CODE_MODULO)
        err = (captured - painted_ns(n)) / 1e6
        errors.append(err)
        if err < -tolerance_ms or (captured - painted_ns(n + 1)) / 1e6 > tolerance_ms:
            outside += 1
    arr = np.array(errors, dtype=np.float64)
    return TimestampErrors(
        errors_ms=tuple(round(e, 3) for e in errors),
        p50_ms=round(float(np.median(arr)), 3) if arr.size else float("nan"),
        max_ms=round(float(np.max(np.abs(arr))), 3) if arr.size else float("nan"),
        outside=outside,
    )


def _origin(text: str) -> tuple[int, int]:
    try:
        x, y = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"origin must be X,Y in pixels, got {text!r}") from None
    return x, y


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m framepipe.proof.judge",
                                     description=(__doc__ or "").split("\n")[0])
    parser.add_argument("file", type=Path, help="recorded video file")
    parser.add_argument("--info", type=Path, required=True, help="the test screen's info JSON")
    parser.add_argument("--origin", type=_origin, default=(0, 0), help="top-left of the recorded area: X,Y")
    parser.add_argument("--base-time-ns", type=int, help="recorder's base time, to report timestamp errors")
    parser.add_argument("--json", action="store_true", help="print JSON instead of one line")
    args = parser.parse_args(argv)
    try:
        info = load_info(args.info)
        frames = read_codes(args.file, info["code_rect"], args.origin)
        report = judge(frames, info["period_ns"] / 1e9)
        out: dict[str, Any] = report.as_dict()
        line = f"{args.file}: {report.summary()}"
        if args.base_time_ns is not None:
            stats_path = Path(f"{args.info}.stats")
            stats = json.loads(stats_path.read_text()) if stats_path.exists() else None
            ts = timestamp_errors(frames, info, args.base_time_ns, stats)
            out["timestamps"] = ts.as_dict()
            line += f", timestamp error p50 {ts.p50_ms:.2f} ms max {ts.max_ms:.2f} ms ({ts.outside} outside)"
    except KeyError as exc:
        print(f"judge: {args.info} lacks the key {exc}; is it a test screen info file?", file=sys.stderr)
        return 2
    except (OSError, ValueError, JudgeError) as exc:
        print(f"judge: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(out) if args.json else line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
