"""What ``framepipe tune`` tries, in which order, and which trial wins (tune's process; pure logic).

A ``Candidate`` is one setting of everything tune varies (encoder, preset, threads, placement;
the ring size is the largest /dev/shm holds, up to 1 s); a ``Trial`` is one short real recording
of it, judged from the file. A trial holds its target when the file lost no state the screen
showed at a capture instant, the pipeline dropped nothing, and the ring stayed under half full
and under half a second of frames (a ring filling up would drop in a longer recording).
The search is greedy, one dimension a round. Placement comes first, least intrusive first; a
placement that holds is confirmed at once by a trial three times as long, and the round stops at
the first confirmed. The other rounds (hardware encoders, libx264 threads, presets until one
fails) vary the best candidate so far (the holding one with the most CPU headroom, else the one
closest to holding); the best of all is confirmed in its turn, and one that fails gives way to
the next. When nothing holds at full size, the closest candidate is tried with the video scaled down (every
frame still kept: the encoder has less to do), largest first; when that does not hold either, at
lower targets (fewer fps, a 720p region) to say which one holds.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pipeline.config import EncodeConfig, ScreenConfig

HARDWARE = ("h264_nvenc", "h264_qsv", "h264_amf", "h264_videotoolbox")  # tried where they open
PRESETS = ("ultrafast", "superfast", "veryfast")  # libx264, cheapest first
CAPTURE_NICE = -10  # capture's priority, tried last, where this user may raise priorities ...
ENCODE_NICE = -5  # ... and the encoder's: above a busy program, below capture
YIELD_NICE = 10  # the encoder below other programs: tried for a scaled video, which needs less
PIN_MARGIN = 0.85  # the encoder is pinned to free CPUs only when it needs at most this share of them
RING_LIMIT = 0.5  # a trial whose ring filled past this fraction ...
SUSTAIN_S = 0.5  # ... or past this many seconds of frames is not sustained: it would drop in a longer recording
BUSY_GAP = 30.0  # a core this many percentage points busier than the least busy one is "busy"
CONFIRM_FACTOR = 3  # the winner's confirmation trial is this many times longer
MAX_CONFIRMS = 2  # candidates confirmed before giving up
FALLBACK_FPS = (60.0, 48.0, 30.0)  # lower targets tried when nothing holds ...
FALLBACK_SIZE = (1280, 720)  # ... and a 720p region at the target's fps
SCALE_HEIGHTS = (1440, 1080, 720, 540, 360)  # output heights tried, the two largest below the target's height


@dataclass(frozen=True)
class Target:
    """What a recording must hold: a rate and a region of the display."""

    fps: float
    region: tuple[int, int, int, int]  # x, y, width, height

    def label(self) -> str:
        return f"{self.region[2]}x{self.region[3]} at {self.fps:g} fps"


@dataclass(frozen=True)
class Candidate:
    """One setting of what tune varies; everything else stays at the pipeline's defaults."""

    backend: str = ScreenConfig.backend  # grab backend the probe found cheapest
    encoder: str = EncodeConfig.encoder
    preset: str = EncodeConfig.preset
    thread_type: str = EncodeConfig.thread_type
    threads: int = EncodeConfig.threads  # 0: the encoder decides (x264: 1.5 x the CPUs it may use)
    ring_seconds: float = ScreenConfig.ring_seconds
    capture_cpus: tuple[int, ...] = ()  # affinity of fp-screen and fp-timestamp; empty: any
    encode_cpus: tuple[int, ...] = ()  # affinity of fp-encode; empty: any
    encode_nice: int = EncodeConfig.nice
    capture_nice: int = ScreenConfig.nice  # fp-screen and fp-timestamp; below 0 needs privileges
    output_height: int = EncodeConfig.output_height  # 0: as captured; else the video is scaled to this height

    def settings(self) -> dict[str, dict[str, Any]]:
        """Pipeline config tables, in the config's own key names (a trial's --config, the profile)."""
        encode: dict[str, Any] = {"encoder": self.encoder}
        if self.encoder == "libx264":
            encode |= {"preset": self.preset, "thread_type": self.thread_type, "threads": self.threads}
        if self.output_height:
            encode["output_height"] = self.output_height
        return {
            "screen": {"backend": self.backend, "ring_seconds": self.ring_seconds, "affinity": self.capture_cpus,
                       "nice": self.capture_nice},
            "timestamp": {"affinity": self.capture_cpus, "nice": self.capture_nice},
            "encode": {**encode, "affinity": self.encode_cpus, "nice": self.encode_nice},
        }

    def label(self) -> str:
        """One short line for people."""

        def cpus(c: tuple[int, ...]) -> str:
            return ",".join(map(str, c)) if c else "any"

        enc = self.encoder
        if enc == "libx264":
            enc += f" {self.preset} {self.thread_type} threads {'auto' if not self.threads else self.threads}"
        scaled = f" | scaled to {self.output_height}p" if self.output_height else ""
        return (f"{enc}{scaled} | ring {self.ring_seconds:g} s | encode cpu {cpus(self.encode_cpus)} nice "
                f"{self.encode_nice} | capture cpu {cpus(self.capture_cpus)} nice {self.capture_nice}")


@dataclass(frozen=True)
class Trial:
    """One short recording of a candidate, judged from its file."""

    candidate: Candidate
    target: Target
    seconds: float  # recorded
    cores: int  # logical CPUs of the machine
    cpu_cores: float = 0.0  # the recorder's process tree while recording, in cores
    cpu_total_s: float = 0.0  # its getrusage(RUSAGE_CHILDREN) delta over the whole run, start-up included
    ring_full: int = 0  # pipeline drops: the encoder fell behind
    late: int = 0  # pipeline drops: capture woke after whole ticks
    shed: int = 0  # frames the encoder shed
    lost: int = 0  # states on screen at a capture instant yet missing from the file (plus frames short)
    swaps: int = 0  # of those, a single repeat beside a single skip (a grab at the instant of change)
    screen_late: int = 0  # missing states the test screen painted too late: not the recorder's
    ring_peak: int = 0
    ring_slots: int = 1
    grab_ms: float = 0.0  # mean grab time
    wall_s: float = 0.0  # the trial's wall time, start-up and judging included
    error: str | None = None  # it did not run or could not be judged

    @property
    def dropped(self) -> int:
        return self.ring_full + self.late + self.shed

    @property
    def sustained(self) -> bool:
        """The ring stayed well below full: under half of it, and under SUSTAIN_S of frames whatever its size
        (a short trial cannot fill a big ring, so a bigger ring must not pass for a faster encoder)."""
        return self.ring_peak <= min(RING_LIMIT * self.ring_slots, SUSTAIN_S * self.target.fps)

    @property
    def holds(self) -> bool:
        return self.error is None and self.dropped == 0 and self.lost == 0 and self.sustained

    @property
    def headroom(self) -> float:
        """1 - cores the recorder used / cores."""
        return 1.0 - self.cpu_cores / self.cores

    def badness(self) -> tuple[bool, bool, float, float]:
        """How far from holding: errors last; then a ring filling up (it drops heavily in longer recordings:
        worse than a few losses); then losses a second; then ring fill."""
        losses = (self.dropped + self.lost) / self.seconds
        return self.error is not None, not self.sustained, losses, self.ring_peak / self.ring_slots

    def figures(self) -> str:
        """The trial's figures in one line."""
        if self.error:
            return f"ERROR: {self.error}"
        verdict = "holds" if self.holds else "FAILS"
        drops = f"dropped {self.dropped}" + (f" (ring full {self.ring_full}, late {self.late}, shed {self.shed})"
                                             if self.dropped else "")
        return (f"{verdict}: lost {self.lost}, {drops}, ring peak {self.ring_peak}/{self.ring_slots}, "
                f"grab {self.grab_ms:.1f} ms, CPU {self.cpu_cores:.2f} cores, headroom {self.headroom:.0%}")

    def as_dict(self) -> dict[str, Any]:
        """Figures for the profile."""
        d = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("candidate", "target", "error")}
        return {**d, "fps": self.target.fps, "dropped": self.dropped, "headroom": round(self.headroom, 3)}


@dataclass(frozen=True)
class Space:
    """What the probe found, as far as the search needs it."""

    cores: int
    busy: tuple[int, ...] = ()  # CPUs already busy before tuning (another program)
    free: tuple[int, ...] = ()  # the others, least busy first
    hardware: tuple[str, ...] = ()  # hardware encoders that opened
    backend: str = ScreenConfig.backend
    ring_seconds: float = ScreenConfig.ring_seconds  # the largest ring /dev/shm holds, up to the default
    screen: tuple[int, int] = (1920, 1080)  # the display's size
    raise_priority: bool = False  # this user may set a negative nice
    encode_cores: float = 0.0  # CPUs the default encoder needs at the target (0: unknown)
    quick: bool = False  # only the first round's first candidate: a smoke test


def split_cpus(load: Mapping[int, float]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(busy, free) CPUs from busy percentages by CPU number; both empty when the load is even."""
    if len(load) < 2:
        return (), ()
    low = min(load.values())
    busy = tuple(cpu for cpu, v in sorted(load.items()) if v >= low + BUSY_GAP)
    if not busy:
        return (), ()
    free = tuple(sorted((cpu for cpu in load if cpu not in busy), key=lambda cpu: (load[cpu], cpu)))
    return busy, free


# --- the rounds: each varies one dimension of the best candidate so far -------------------


def placements(space: Space, base: Candidate, holds: bool) -> list[Candidate]:
    """Least intrusive first: as configured; the encoder at normal priority; kept off busy CPUs (niced, then
    not); capture moved beside the busy program; then the encoder above other programs too. Where this
    user may raise priorities and another program keeps a CPU busy, capture runs above it in every
    candidate: it needs a few per cent of a CPU, on time (a grab that waits for a CPU shows the next
    frame: a short trial may pass by luck, a long recording does not)."""
    if space.quick:
        return [base]
    if space.raise_priority and space.busy:
        base = replace(base, capture_nice=CAPTURE_NICE)
    out = [base, replace(base, encode_nice=0)]
    enc = space.free if len(space.free) < 3 else space.free[1:]
    if space.busy and space.free and space.encode_cores <= PIN_MARGIN * len(enc):
        cap = space.busy if len(space.free) < 3 else space.free[:1]
        out += [replace(base, encode_cpus=enc), replace(base, encode_cpus=enc, encode_nice=0),
                replace(base, encode_cpus=enc, encode_nice=0, capture_cpus=cap)]
    if space.raise_priority:
        if not space.busy:
            out.append(replace(out[-1], capture_nice=CAPTURE_NICE))
        out.append(replace(base, capture_nice=CAPTURE_NICE, encode_nice=ENCODE_NICE))
    return list(dict.fromkeys(out))  # as configured may already be one of them


def encoders(space: Space, base: Candidate, holds: bool) -> list[Candidate]:
    """Every hardware encoder that opened (they cost the CPU least)."""
    return [replace(base, encoder=name) for name in space.hardware]


def threads(space: Space, base: Candidate, holds: bool) -> list[Candidate]:
    """libx264 on several CPUs: slice threads; frame threads, one per CPU (auto makes 1.5 per CPU)."""
    n = len(base.encode_cpus) or space.cores
    if base.encoder != "libx264" or n < 2:
        return []  # on one CPU x264 runs one thread whatever the type (it counts the CPUs its affinity allows)
    return [replace(base, thread_type="SLICE", threads=0), replace(base, thread_type="FRAME", threads=n)]


def presets(space: Space, base: Candidate, holds: bool) -> list[Candidate]:
    """It holds: the slower libx264 presets (smaller files), until one fails."""
    if not holds or base.encoder != "libx264" or base.preset not in PRESETS:
        return []
    return [replace(base, preset=p) for p in PRESETS[PRESETS.index(base.preset) + 1:]]


@dataclass(frozen=True)
class Round:
    """One dimension: how to vary the base, and when to stop."""

    name: str
    variants: Callable[[Space, Candidate, bool], list[Candidate]]
    until: str  # "fail": stop at the first that fails; "all"


ROUNDS = (  # after placement, which has a round of its own (Search.place)
    Round("encoder", encoders, "all"),
    Round("threads", threads, "all"),
    Round("preset", presets, "fail"),
)


# --- choosing -----------------------------------------------------------------------------


def by_candidate(trials: Sequence[Trial], target: Target) -> dict[Candidate, list[Trial]]:
    out: dict[Candidate, list[Trial]] = {}
    for t in trials:
        if t.target == target:
            out.setdefault(t.candidate, []).append(t)
    return out


def choose(trials: Sequence[Trial], target: Target, min_seconds: float = 0.0) -> Trial | None:
    """The candidate whose every trial at ``target`` holds, with the most headroom (its longest trial);
    only those with a trial of ``min_seconds`` or more (confirmed ones) when that is given."""
    best: Trial | None = None
    for ts in by_candidate(trials, target).values():
        longest = max(ts, key=lambda t: t.seconds)
        if all(t.holds for t in ts) and longest.seconds >= min_seconds and (
                best is None or longest.headroom > best.headroom):
            best = longest
    return best


def closest(trials: Sequence[Trial], target: Target) -> Trial | None:
    """The worst trial of the candidate nearest to holding at ``target``: each candidate is judged by its worst
    trial (fewest losses, then least ring fill, then most headroom), so a failed confirmation counts."""
    worst = [max(ts, key=Trial.badness) for ts in by_candidate(trials, target).values()]
    return min(worst, key=lambda t: (t.badness(), -t.headroom), default=None)


def diagnose(trial: Trial, grab_ms: float | None = None, encode_cores: float | None = None) -> str:
    """Why ``trial`` did not hold: capture-bound or encode-bound, with the figures that say so (the probe's
    grab time and the CPUs the default encoder needs, when known)."""
    period_ms = 1000 / trial.target.fps
    if trial.error:
        return f"the recorder failed: {trial.error}"
    if grab_ms is not None and grab_ms > 0.5 * period_ms:
        return f"capture-bound: one grab takes {grab_ms:.1f} ms of the {period_ms:.1f} ms a frame has"
    if trial.ring_full or trial.shed or not trial.sustained:
        dropped = f", {trial.ring_full} frames dropped" if trial.ring_full else ": a longer recording would drop"
        need = (f"; libx264 ultrafast needs about {encode_cores:.1f} of the {trial.cores} CPUs at "
                f"{trial.target.fps:g} fps" if encode_cores else "")
        late = f"; capture also slept through {trial.late} ticks" if trial.late else ""
        return (f"encode-bound: the encoder fell behind and the ring filled (peak {trial.ring_peak}/"
                f"{trial.ring_slots}{dropped}){need}{late}")
    return (f"capture-bound: grabs ran late ({trial.late} ticks slept through, {trial.lost} states on screen "
            f"at a capture instant lost): capture, or the X server, did not get a CPU in time")


def output_heights(height: int) -> list[int]:
    """Output heights to try for a target ``height`` pixels high: the two largest common ones below it."""
    return [h for h in SCALE_HEIGHTS if h < height][:2]


def fallback_targets(target: Target, screen: tuple[int, int]) -> list[Target]:
    """Lower targets to try when nothing holds: fewer fps first, then a centred 720p region."""
    lower = [Target(f, target.region) for f in FALLBACK_FPS if f < target.fps]
    w, h = FALLBACK_SIZE
    out = lower[:1]
    if target.region[2] * target.region[3] > w * h:
        x, y = ((screen[0] - w) // 2) & ~1, ((screen[1] - h) // 2) & ~1
        out.append(Target(target.fps, (x, y, w, h)))
    return out + lower[1:]


def nothing_holds(target: Target, near: Trial | None, held: Trial | None, tried: Sequence[Target],
                  grab_ms: float | None = None, encode_cores: float | None = None) -> str:
    """What to tell people when no candidate holds the target: why, and which target does."""
    why = diagnose(near, grab_ms, encode_cores) if near is not None else "no trial ran"
    lines = [f"tune: nothing holds {target.label()} without losing frames: {why}"]
    if held is not None:
        r = held.target.region
        flags = f"--fps {held.target.fps:g}" + (f" --region {','.join(map(str, r))}" if r != target.region else "")
        lines.append(f"tune: {held.target.label()} holds ({held.candidate.label()}; headroom {held.headroom:.0%}): "
                     f"run `framepipe tune {flags}` to save a profile for it")
    elif tried:
        lines.append(f"tune: nor does {', '.join(t.label() for t in tried)}; record a smaller region or fewer fps")
    lines.append("tune: no profile written (a profile must not drop frames)")
    return "\n".join(lines)


# --- the search -------------------------------------------------------------------------


@dataclass
class Verdict:
    """What the search found."""

    trials: list[Trial] = field(default_factory=list)
    chosen: Trial | None = None  # confirmed winner at the target
    fallback: Trial | None = None  # when nothing holds: a lower target that holds
    fallbacks_tried: list[Target] = field(default_factory=list)
    skipped: int = 0  # candidates left out for time
    note: str | None = None  # why the chosen one is not the first that held


Runner = Callable[[Candidate, Target, float], Trial]


class Search:
    """Runs the rounds over a runner of real trials (or fake ones, in tests) within a time budget.

    Placement first, least intrusive first: the first that holds is confirmed at once by a longer trial,
    and placement stops at the first confirmed. Then the other rounds vary the best candidate so far for
    more headroom; the best of all is confirmed in its turn (one that fails gives way to the next).
    """

    def __init__(self, space: Space, target: Target, seconds: float, runner: Runner, budget_s: float,
                 say: Callable[[str], None] = print, clock: Callable[[], float] = time.monotonic) -> None:
        self.space, self.target, self.seconds = space, target, seconds
        self.runner, self.say, self.clock = runner, say, clock
        self.start = clock()
        self.deadline = self.start + budget_s
        self.longer = seconds * CONFIRM_FACTOR  # a confirmation trial
        self.verdict = Verdict()
        self.skipped: set[Candidate] = set()

    def trial(self, cand: Candidate, target: Target, seconds: float, why: str) -> Trial:
        n = len(self.verdict.trials) + 1
        t = self.runner(cand, target, seconds)
        self.verdict.trials.append(t)
        at = "" if target == self.target else f" | {target.label()}"
        self.say(f"tune: {n:2d} {self.clock() - self.start:4.0f} s {why:9s} {cand.label()}{at} | {seconds:g} s: "
                 f"{t.figures()}")
        return t

    def free_cpus(self) -> int:
        return self.space.cores - len(self.space.busy)

    def comfortable(self, trial: Trial) -> bool:
        """A holding trial that did not need CPU from programs already keeping a CPU busy: the recorder used
        at most PIN_MARGIN of the CPUs they leave free (they would take it back in a longer recording)."""
        return not self.space.busy or trial.cpu_cores <= PIN_MARGIN * self.free_cpus()

    def time_left(self) -> bool:
        """Whether one more short trial fits in the budget (judged by the trials so far)."""
        walls = [t.wall_s for t in self.verdict.trials if t.wall_s]
        estimate = (sum(walls) / len(walls)) if walls else self.seconds + 3
        return self.clock() + estimate <= self.deadline

    def tried(self, cand: Candidate) -> bool:
        return cand in by_candidate(self.verdict.trials, self.target)

    def run(self) -> Verdict:
        self.place()
        self.explore()
        self.confirm()
        full = self.verdict.chosen
        if full is not None and not self.comfortable(full):
            self.verdict.chosen = None
            self.scale()
            if self.verdict.chosen is None or not self.comfortable(self.verdict.chosen):
                self.verdict.chosen = full  # scaling did not help: full size it is, thin as it is
            else:
                self.verdict.note = (
                    f"full size holds only with CPU the busy program would otherwise have ({full.cpu_cores:.2f} "
                    f"cores used, {self.free_cpus()} CPU(s) free): a longer recording would fall behind when it "
                    f"takes its CPU back; the video scaled to {self.verdict.chosen.candidate.output_height}p holds "
                    "with room")
        if self.verdict.chosen is None:
            self.scale()
        if self.verdict.chosen is None:
            self.fall_back()
        self.verdict.skipped = len(self.skipped)
        return self.verdict

    def place(self) -> None:
        """The placement round: each holding placement is confirmed at once; stop at the first confirmed."""
        start = Candidate(backend=self.space.backend, ring_seconds=self.space.ring_seconds)
        for cand in placements(self.space, start, False):
            if not self.time_left():
                self.skipped.add(cand)
                continue
            if self.trial(cand, self.target, self.seconds, "placement").holds and \
                    self.trial(cand, self.target, self.longer, "confirm").holds:
                return

    def base(self) -> tuple[Candidate, bool]:
        """The best candidate so far and whether it holds (confirmed ones first)."""
        trials = self.verdict.trials
        best = choose(trials, self.target, self.longer) or choose(trials, self.target) or closest(trials, self.target)
        return (best.candidate, best.holds) if best is not None else (Candidate(), False)

    def explore(self) -> None:
        """The other rounds, each varying the best candidate at its start; quick mode has none."""
        for rnd in () if self.space.quick else ROUNDS:
            base, holds = self.base()
            for cand in rnd.variants(self.space, base, holds):
                if self.tried(cand):
                    continue
                if not self.time_left():
                    self.skipped.add(cand)
                    continue
                if not self.trial(cand, self.target, self.seconds, rnd.name).holds and rnd.until == "fail":
                    break

    def confirm(self) -> None:
        """Confirm the best candidate if it is not yet; one that fails gives way to the next best."""
        for _ in range(MAX_CONFIRMS):
            pick = choose(self.verdict.trials, self.target)
            if pick is None or pick.seconds >= self.longer:
                break
            self.trial(pick.candidate, self.target, self.longer, "confirm")
        self.verdict.chosen = choose(self.verdict.trials, self.target, self.longer)

    def scale(self) -> None:
        """Nothing holds at full size: the closest candidate with the video scaled down, largest first. A
        smaller video needs less of the encoder, so its placement goes back to the least intrusive first:
        the encoder below other programs (the X server, which serves every grab, and the programs on
        screen come first; the ring absorbs its lag), as configured, at normal priority, then as the
        closest was. The first that holds is confirmed at once and, confirmed, chosen."""
        near = closest(self.verdict.trials, self.target)
        if near is None or self.space.quick:
            return
        first = placements(self.space, Candidate(backend=self.space.backend, ring_seconds=self.space.ring_seconds),
                           False)[0]  # fmt: skip
        as_configured = replace(near.candidate, encode_nice=first.encode_nice, encode_cpus=first.encode_cpus,
                                capture_nice=first.capture_nice, capture_cpus=first.capture_cpus)  # fmt: skip
        gentle = replace(near.candidate, encode_nice=max(0, near.candidate.encode_nice))
        yielding = replace(as_configured, encode_nice=YIELD_NICE)
        for height in output_heights(self.target.region[3]):
            for base in dict.fromkeys((yielding, as_configured, gentle, near.candidate)):
                cand = replace(base, output_height=height)
                if self.tried(cand) or not self.time_left():
                    continue
                if self.trial(cand, self.target, self.seconds, "scale").holds and \
                        self.trial(cand, self.target, self.longer, "confirm").holds:
                    self.verdict.chosen = choose(self.verdict.trials, self.target, self.longer)
                    return

    def fall_back(self) -> None:
        """Nothing holds: try the closest candidate at lower targets; keep the first that holds."""
        near = closest(self.verdict.trials, self.target)
        if near is None:
            return
        for target in fallback_targets(self.target, self.space.screen):
            self.verdict.fallbacks_tried.append(target)
            t = self.trial(near.candidate, target, self.seconds, "lower")
            if t.holds:
                self.verdict.fallback = t
                return
