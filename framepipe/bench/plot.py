"""The bench's picture of one run (matplotlib, Agg): frame intervals per recorder, and framepipe's ring fill.

Each recorder gets a panel over screen time (when each frame's state was painted): the step of
screen content from one frame to the next (what a viewer sees advance: one period normally, more
where states are missing, zero on a repeat), with gaps marked as lost or as shown late by the test
screen, repeats marked, and, faint, the interval between the file's timestamps. The last panel
shows framepipe's ring fill (from its stats series) against its slots.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from framepipe.proof.judge import Frame


@dataclass(frozen=True)
class Track:
    """One recorder's frames for the plot, placed at the time their state was on screen."""

    name: str
    times: tuple[float, ...]  # screen time of each frame after the first readable one, s
    content_ms: tuple[float, ...]  # state advance x period, ms
    pts_ms: tuple[float, ...]  # timestamp difference to the previous readable frame, ms
    late_gap: tuple[bool, ...]  # every state skipped before this frame was shown late by the screen


def track(name: str, frames: Sequence[Frame], period_s: float, late: frozenset[int] = frozenset()) -> Track:
    """Intervals between consecutive readable frames of a judged recording; ``late``: missing states not lost."""
    states = [(f.state, f.time) for f in frames if f.state is not None]
    if not states:
        return Track(name, (), (), (), ())
    first = min(s for s, _ in states)
    pairs = list(itertools.pairwise(states))
    return Track(
        name,
        tuple((b - first) * period_s for (_, _), (b, _) in pairs),
        tuple((b - a) * period_s * 1000 for (a, _), (b, _) in pairs),
        tuple((tb - ta) * 1000 for (_, ta), (_, tb) in pairs),
        tuple(all(n in late for n in range(a + 1, b)) for (a, _), (b, _) in pairs),
    )


def plot_run(path: Path, title: str, tracks: Sequence[Track], period_s: float,
             series: Mapping[str, Any] | None = None, slots: int | None = None) -> Path:
    """Draw the run's panels into the PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = len(tracks) + (1 if series else 0)
    fig, axes = plt.subplots(rows, 1, figsize=(13, 2.2 * rows + 0.6), sharex=True, squeeze=False)
    period_ms = period_s * 1000
    for ax, t in zip(axes[:, 0], tracks, strict=False):
        ax.plot(t.times, t.pts_ms, color="0.7", lw=0.8, label="timestamp interval")
        ax.plot(t.times, t.content_ms, color="tab:blue", lw=0.9, drawstyle="steps-pre", label="content step")
        steps = list(zip(t.times, t.content_ms, t.late_gap, strict=True))
        marks = {
            "lost": ([(x, y) for x, y, late in steps if y > period_ms * 1.5 and not late], "tab:red", "x"),
            "screen late": ([(x, y) for x, y, late in steps if y > period_ms * 1.5 and late], "0.4", "x"),
            "repeated": ([(x, y) for x, y, _ in steps if y < period_ms * 0.5], "tab:orange", "o"),
        }
        for label, (points, colour, marker) in marks.items():
            if points:
                ax.scatter(*zip(*points, strict=True), color=colour, marker=marker, s=14, lw=0.8, zorder=3,
                           label=f"{label}: {len(points)} {'frames' if label == 'repeated' else 'gaps'}")
        ax.axhline(period_ms, color="k", lw=0.5, ls="--")
        ax.set_ylabel(f"{t.name}\nms")
        ax.set_ylim(-period_ms * 0.3, period_ms * 4.5)
        ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), borderaxespad=0, fontsize=7)
    if series:
        ax = axes[-1, 0]
        ax.step(series["t_s"], series["ring_fill"], where="post", color="tab:green", label="ring fill")
        if slots:
            ax.axhline(slots, color="tab:red", lw=0.8, ls="--", label=f"{slots} slots")
        ax.set_ylabel("framepipe\nring slots")
        ax.set_ylim(bottom=0)
        ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), borderaxespad=0, fontsize=7)
    axes[-1, 0].set_xlabel("screen time (s): when the frame's state was painted, from the first state recorded")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
