"""Count what one bench recording shows, the same way for every recorder.

The judge reads every frame's code back (``framepipe.proof.judge``); here its report becomes the bench's
figures. ``lost`` counts screen states that were on screen at one of the recorder's own capture
instants (its nominal grid, ``start + k / fps``, with a 2 ms margin either side) yet are not in
the file, plus frames short at the ends; a state the test screen painted too late to be on screen
at any such instant counts as ``screen_late``, not against the recorder. ``independent_missing``
reads the same file a second way (the ffmpeg program, the centre pixel of each code block) so the
count can be checked.
"""

from __future__ import annotations

import math
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from framepipe.proof import judge
from framepipe.proof.testscreen import CODE_BITS, CODE_BLOCK, CODE_BORDER, CODE_HEIGHT, CODE_WIDTH

TOLERANCE_NS = 2_000_000  # a state counts as seeable at an instant this far inside its time on screen


@dataclass(frozen=True)
class Timing:
    """Where a recorder's file sits on the clock the test screen paints by."""

    base_time_ns: int  # clock time of the file's t = 0: also the recorder's first nominal capture instant
    source: str  # how base_time_ns was found, for people


@dataclass(frozen=True)
class Counts:
    """A recording counted in test-screen states."""

    expected: int  # duration x fps: frames the recording should hold
    written: int  # frames in the file
    span: int  # states from the first shown to the last shown
    distinct: int  # different states shown
    missing: int  # states in the span never shown
    lost: int  # missing states on screen at one of the recorder's capture instants, plus ``short``
    screen_late: int  # missing states the test screen showed too late (or never) for any capture instant
    short: int  # expected - span where positive: frames missing at the ends
    repeated: int  # frames showing an already shown state
    swaps: int  # a single repeat next to a single skip (a grab at the instant of change)
    unreadable: int  # frames whose code could not be read
    backwards: int  # steps back to an earlier state

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def missing_states(report: judge.Report) -> Iterator[int]:
    """The states (as the report numbers them) in the report's gaps."""
    for first, count in report.gaps:
        yield from range(first, first + count)


def wrap_offset(frames: Sequence[judge.Frame], info: Mapping[str, Any], base_time_ns: int) -> int:
    """What to add to the judge's states to get the test screen's state numbers (codes wrap at 2**16)."""
    modulo = 1 << CODE_BITS
    for f in frames:
        if f.state is not None:
            guess = (base_time_ns + f.time * 1e9 - int(info["base_ns"])) * float(info["fps"]) / 1e9
            return modulo * round((guess - f.state) / modulo)
    return 0


def seeable(n: int, info: Mapping[str, Any], painter: Mapping[str, Any] | None, grid_ns: int, frames: int) -> bool:
    """True if state ``n`` was on screen, with a margin, at one of ``frames`` instants ``grid_ns + k / fps``."""
    shown_ns = judge.on_screen_ns(n, info, painter)
    if shown_ns is None:
        return False  # the test screen skipped it
    start, end = shown_ns[0] + TOLERANCE_NS, shown_ns[1] - TOLERANCE_NS
    period = 1e9 / float(info["fps"])
    k = max(0, math.ceil((start - grid_ns) / period))
    return k < frames and grid_ns + k * period <= end


def count(report: judge.Report, expected: int, late: int) -> Counts:
    """The bench's counts from a judge report, ``expected`` frames, and ``late`` missing states not seeable."""
    short = max(0, expected - report.expected)
    return Counts(
        expected=expected, written=report.frames_written, span=report.expected, distinct=report.distinct,
        missing=report.missing, lost=report.missing - late + short, screen_late=late, short=short,
        repeated=report.repeated, swaps=report.swaps, unreadable=report.unreadable, backwards=report.backwards,
    )  # fmt: skip


def count_recording(
    frames: Sequence[judge.Frame], info: Mapping[str, Any], painter: Mapping[str, Any] | None, timing: Timing,
    expected: int,
) -> tuple[Counts, frozenset[int]]:
    """Judge decoded ``frames`` and count them; also the missing states (judge's numbers) the screen showed late."""
    report = judge.judge(frames, 1 / float(info["fps"]))
    offset = wrap_offset(frames, info, timing.base_time_ns)
    late = frozenset(
        n for n in missing_states(report) if not seeable(n + offset, info, painter, timing.base_time_ns, expected)
    )
    return count(report, expected, len(late)), late


# --- an independent reading: the ffmpeg program decodes, the centre pixel of each block is read -------------


def block_centre_code(code: bytes) -> int | None:
    """The code in a CODE_HEIGHT x CODE_WIDTH gray image, read from each block's centre pixel."""
    half = CODE_BLOCK // 2
    rows = (CODE_BORDER + half, CODE_BORDER + CODE_BLOCK + half)
    value = 0
    for bit in range(CODE_BITS):
        col = CODE_BORDER + bit * CODE_BLOCK + half
        top, bottom = (code[r * CODE_WIDTH + col] > 128 for r in rows)
        if top == bottom:
            return None
        value = value << 1 | top
    return value


@dataclass(frozen=True)
class Reading:
    """States seen by the independent reading."""

    frames: int
    unreadable: int
    distinct: int
    missing: int  # states between the first and last shown never shown


def independent_missing(path: str | Path, code_rect: Sequence[int], origin: Sequence[int] = (0, 0)) -> Reading:
    """Read ``path`` with the ffmpeg program (every frame as stored, gray, cropped to the code)."""
    x, y = int(code_rect[0]) - int(origin[0]), int(code_rect[1]) - int(origin[1])
    cmd = [
        "ffmpeg", "-v", "error", "-nostdin", "-i", str(path), "-map", "0:v:0", "-vsync", "passthrough",
        "-vf", f"crop={CODE_WIDTH}:{CODE_HEIGHT}:{x}:{y},format=gray", "-f", "rawvideo", "-",
    ]  # fmt: skip
    size = CODE_WIDTH * CODE_HEIGHT
    states: set[int] = set()
    frames = unreadable = 0
    state: int | None = None
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as proc:
        assert proc.stdout is not None
        while len(image := proc.stdout.read(size)) == size:
            frames += 1
            code = block_centre_code(image)
            if code is None:
                unreadable += 1
                continue
            half = 1 << (CODE_BITS - 1)
            state = code if state is None else state + (code - state + half) % (2 * half) - half
            states.add(state)
    span = max(states) - min(states) + 1 if states else 0
    return Reading(frames, unreadable, len(states), span - len(states))
