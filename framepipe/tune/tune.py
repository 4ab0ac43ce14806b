"""``framepipe tune``: find by real trials the settings that hold a target here, and save them.

Runs in the CLI process. It probes the machine (``framepipe.tune.probe``), paints the test screen
on the display being tuned (a new virtual screen when there is none), then runs the search of
``framepipe.tune.search``: each trial is ``python -m framepipe record`` in a subprocess with the
candidate as its --config, measured by the bench's launcher (the tree's CPU by
getrusage(RUSAGE_CHILDREN), and sampled while recording), and judged by reading the file back
(``framepipe.proof.judge``: a state on screen at a capture instant yet missing is lost). The winner
goes to this machine's profile (``framepipe.tune.profile``); when nothing holds, no profile is
written and tune says which lower target holds, and why the target does not.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from framepipe.bench import run as benchrun
from framepipe.demo import display as tuning_display
from framepipe.plan import MIN_SLOTS
from framepipe.proof import judge
from framepipe.proof.testscreen import (
    CODE_HEIGHT,
    CODE_WIDTH,
    TestscreenError,
    code_origin,
    load_info,
    start_testscreen,
)
from framepipe.proof.xvfb import XvfbError, stop_process
from framepipe.tune import profile
from framepipe.tune.probe import Probe, probe
from framepipe.tune.search import (
    Candidate,
    Search,
    Space,
    Target,
    Trial,
    Verdict,
    closest,
    nothing_holds,
    split_cpus,
)
from pipeline.config import ScreenConfig, build_section
from pipeline.errors import ConfigError, SetupError

DEFAULT_SECONDS = 2.5  # each trial records this long (the winner's confirmation three times)
SEARCH_BUDGET_S = 100.0  # the search stops starting trials after this (scaled with longer trials)
MAX_SECONDS = 60.0
CANDIDATES = ("full", "quick")  # quick: the default candidate only, confirmed (a smoke test)
RING_MARGIN = 3  # the tuned ring holds this many times the peak fill the trials measured ...
RING_MOST_S = 2.0  # ... up to this


@dataclass(frozen=True)
class TuneOptions:
    """What people asked tune for."""

    fps: float = 60.0  # target frames per second
    region: tuple[int, ...] = ()  # x, y, width, height on monitor 1; empty: the whole monitor
    seconds: float = DEFAULT_SECONDS  # seconds per trial
    display: str | None = None  # X display to tune; None: $DISPLAY, else a new virtual screen
    candidates: str = "full"  # full | quick
    show: bool = False  # print this machine's profile instead


def check(options: TuneOptions) -> ScreenConfig:
    """Bad input fails here in one line (ConfigError), before anything starts."""
    if options.candidates not in CANDIDATES:
        raise ConfigError(f"--candidates {options.candidates!r} is unknown; choose one of: {', '.join(CANDIDATES)}")
    if not 0.5 <= options.seconds <= MAX_SECONDS:
        raise ConfigError(f"--seconds-per-trial must be from 0.5 to {MAX_SECONDS:g}, not {options.seconds:g}")
    config: ScreenConfig = build_section("screen", {"fps": options.fps, "region": options.region})
    return config


def resolve_target(config: ScreenConfig, screen: tuple[int, int]) -> tuple[Target, dict[str, int]]:
    """The target (region relative to monitor 1) and its rectangle on the screen; it must hold the test code."""
    from stages.video.screen import screen_rect

    rect = screen_rect(config)
    cx, cy = code_origin(*screen)
    if not (rect["left"] <= cx and cx + CODE_WIDTH <= rect["left"] + rect["width"]
            and rect["top"] <= cy and cy + CODE_HEIGHT <= rect["top"] + rect["height"]):
        raise ConfigError(f"--region must hold the middle of the screen ({cx},{cy} to {cx + CODE_WIDTH},"
                          f"{cy + CODE_HEIGHT}), where tune paints its test code")
    region = config.region or (0, 0, rect["width"], rect["height"])
    return Target(config.fps, (region[0], region[1], region[2], region[3])), rect


class TrialRunner:
    """Runs one candidate as a real recording of the test screen and judges the file (tune's process)."""

    def __init__(self, display: str, work: Path, cores: int, monitor: tuple[int, int]) -> None:
        self.display, self.work, self.cores, self.monitor = display, work, cores, monitor
        self.env = dict(os.environ, DISPLAY=display)
        self.env.pop("WAYLAND_DISPLAY", None)  # the X display tune chose, not a Wayland desktop's screencopy
        self.count = 0

    def __call__(self, cand: Candidate, target: Target, seconds: float) -> Trial:
        self.count += 1
        folder = self.work / f"trial{self.count:02d}"
        folder.mkdir(parents=True)
        config = folder / "config.toml"
        config.write_text(profile.to_toml(cand.settings()), encoding="utf-8")
        out, stats, info = folder / "trial.mkv", folder / "stats.json", folder / "screen.json"
        cmd = (
            sys.executable, "-m", "framepipe", "record", str(out), "--duration", f"{seconds:g}",
            "--fps", f"{target.fps:g}", "--region", benchrun.region_arg(target.region), "--config", str(config),
            "--no-profile", "--no-audio", "--stats-json", str(stats), "--quiet", "--overwrite",
        )  # fmt: skip
        launch = benchrun.Launch("framepipe", cmd, out, folder / "record.log", sidecar=stats)
        t0 = time.monotonic()
        painter = start_testscreen(self.display, target.fps, info_path=info)
        try:
            usage = benchrun.run_measured(launch, self.env, seconds, None)
        finally:
            stop_process(painter)  # it writes its paint times on the way out
        try:
            trial = self.judge(Trial(cand, target, seconds, self.cores), launch, usage, info)
        finally:
            shutil.rmtree(folder, ignore_errors=True)  # recordings are large
        return replace(trial, wall_s=time.monotonic() - t0)

    def judge(self, trial: Trial, launch: benchrun.Launch, usage: benchrun.Usage, info_path: Path) -> Trial:
        """The trial's figures, read from the file, the stats and the painter's paint times."""
        log = launch.log.read_text(errors="replace").strip().splitlines() if launch.log.exists() else []
        if usage.exit_code != 0 or not launch.output.exists() or launch.sidecar is None:
            return replace(trial, error=f"record exited {usage.exit_code}: {log[-1] if log else 'no output'}")
        stats = json.loads(launch.sidecar.read_text())
        info = load_info(info_path)
        paints = Path(f"{info_path}.stats")  # the painter's paint times; absent if it died: nominal times
        painter = json.loads(paints.read_text()) if paints.exists() else {}
        fell_back = stats["stages"].get("encode", {}).get("info", {}).get("fallback")
        if fell_back or stats["errors"]:
            return replace(trial, error=f"encoder fell back ({fell_back})" if fell_back else stats["errors"][0])
        try:
            origin = (self.monitor[0] + trial.target.region[0], self.monitor[1] + trial.target.region[1])
            frames = judge.read_codes(launch.output, info["code_rect"], origin, trial.target.region[2:])
        except judge.JudgeError as exc:
            return replace(trial, error=str(exc))
        report = judge.judge(frames, 1 / trial.target.fps)
        if not report.frames_written:
            return replace(trial, error=f"no frames in the file ({log[-1] if log else 'record said nothing'})")
        if report.unreadable == report.frames_written:
            raise SetupError(f"the test code cannot be read back from display {self.display} (a window covers "
                             "the screen's middle?): tune on a clear screen, or on a virtual one (Xvfb)")
        who = judge.attribute_missing(frames, info, stats["base_time_ns"], painter)
        short = max(0, round(trial.seconds * trial.target.fps) - report.expected)
        base = stats["base_time_ns"]
        rate = benchrun.cpu_rate(usage.cpu_curve, base, base + round(trial.seconds * 1e9))
        dropped, screen = stats["frames"]["dropped_by_reason"], stats["stages"]["screen"]["stats"]
        return replace(
            trial, cpu_cores=rate if rate is not None else usage.cpu_s / max(usage.wall_s, 1e-9),
            cpu_total_s=round(usage.cpu_s, 3),
            ring_full=dropped["ring_full"], late=dropped["capture_late"], shed=dropped["encoder_shed"],
            lost=who.recorder_lost + short + report.unreadable, swaps=report.swaps, screen_late=who.screen_late,
            ring_peak=stats["ring"]["peak_fill"], ring_slots=stats["ring"]["slots"],
            grab_ms=screen.get("grab_ms_mean", 0.0),
        )  # fmt: skip


def space_of(found: Probe, target: Target, quick: bool) -> Space:
    busy, free = split_cpus(dict(zip(found.cpus, found.cpu_load, strict=True)))
    return Space(cores=found.cores, busy=busy, free=free, hardware=found.hardware(), backend=found.backend(),
                 ring_seconds=found.ring_seconds(target), screen=found.screen, quick=quick,
                 raise_priority=found.raise_priority, encode_cores=found.encode_cores(target.fps))


def save(found: Probe, here: profile.Machine, chosen: Trial, trials: list[Trial], options: TuneOptions,
         took_s: float) -> Path:
    """Write the winner and the figures to this machine's profile."""
    tuned = {
        "date": datetime.now().strftime("%Y-%m-%d %H:%M"), "fps": chosen.target.fps,
        "region": list(chosen.target.region), "seconds_per_trial": options.seconds,
        "candidates": options.candidates, "trials": len(trials), "tune_seconds": round(took_s, 1),
        "loadavg": [round(v, 2) for v in os.getloadavg()],
        "tried": [f"{t.candidate.label()} [{t.target.label()}, {t.seconds:g} s]: {t.figures()}" for t in trials],
    }  # fmt: skip
    ring = ring_for(chosen)
    tuned["ring"] = f"peak fill {chosen.ring_peak} of {chosen.ring_slots} slots: {ring.ring_seconds:g} s kept"
    return profile.write(here, ring.settings(), tuned, chosen.as_dict(), found.as_dict())


def ring_for(chosen: Trial) -> Candidate:
    """The winner with a ring sized from what it needed: three times the peak fill its trials measured (a
    short trial sees fewer bursts than an hour), at least the default (a ring takes memory only for the
    slots it used: ``pipeline.ring``), at most 2 s."""
    fps = chosen.target.fps
    needed = math.ceil(RING_MARGIN * chosen.ring_peak / fps * 20) / 20
    seconds = max(MIN_SLOTS / fps, ScreenConfig.ring_seconds, needed)
    return replace(chosen.candidate, ring_seconds=round(min(seconds, RING_MOST_S), 3))


def search(config: ScreenConfig, options: TuneOptions, display: str, work: Path) -> tuple[
        Probe, profile.Machine, Target, Verdict]:
    """Probe the machine and run the search on ``display``, printing as it goes."""
    here = profile.machine_here(display)
    width, height = (int(v) for v in here.display.split("x"))
    target, rect = resolve_target(config, (width, height))
    print(f"tune: target {target.label()} on display {display}; {options.seconds:g} s trials", flush=True)
    found = probe(display, (width, height), rect, target, here.cpu)
    for line in found.lines():
        print(line, flush=True)
    monitor = (rect["left"] - target.region[0], rect["top"] - target.region[1])
    runner = TrialRunner(display, work, found.cores, monitor)
    budget = SEARCH_BUDGET_S * max(1.0, options.seconds / DEFAULT_SECONDS)
    space = space_of(found, target, options.candidates == "quick")
    verdict = Search(space, target, options.seconds, runner, budget, say=lambda line: print(line, flush=True)).run()
    return found, here, target, verdict


def tune(options: TuneOptions) -> int:
    """Probe, search, save; 0 with a profile written, 1 when nothing holds the target."""
    if options.show:
        return show(options.display)
    config = check(options)
    started = time.monotonic()
    if options.display:
        os.environ["DISPLAY"] = options.display
    try:
        with tuning_display(False) as display, tempfile.TemporaryDirectory(prefix="framepipe-tune-") as work:
            found, here, target, verdict = search(config, options, display, Path(work))
    except (XvfbError, TestscreenError) as exc:
        raise SetupError(str(exc)) from None
    took = time.monotonic() - started
    skipped = f", {verdict.skipped} candidates left out for time" if verdict.skipped else ""
    print(f"tune: {len(verdict.trials)} trials in {took:.0f} s{skipped}")
    if verdict.chosen is None:
        grab, need = found.grab_ms.get(found.backend()), found.encode_cores(target.fps)
        print(nothing_holds(target, closest(verdict.trials, target), verdict.fallback, verdict.fallbacks_tried, grab,
                            need))
        return 1
    chosen = verdict.chosen
    if verdict.note:
        print(f"tune: {verdict.note}")
    path = save(found, here, chosen, verdict.trials, options, took)
    print(f"tune: chose {chosen.candidate.label()}: holds {target.label()}, lost 0, dropped 0, "
          f"CPU {chosen.cpu_cores:.2f} of {chosen.cores} cores (headroom {chosen.headroom:.0%})")
    print(f"tune: wrote {path}; `framepipe record` uses it from now on (--no-profile ignores it)")
    return 0


def show(display: str | None) -> int:
    """Print this machine's profile; 1 when there is none."""
    try:
        here: profile.Machine | None = profile.machine_here(display)
    except SetupError:
        here = None
    if here is not None and profile.path_for(here).is_file():
        path = profile.path_for(here)
        print(f"# {path}\n{path.read_text(encoding='utf-8')}", end="")
        try:
            why = profile.problems(profile.read(path), here)
        except profile.ProfileError as exc:
            why = [str(exc)]
        if why:
            print(f"framepipe: warning: this profile is ignored: {'; '.join(why)}", file=sys.stderr)
        return 0
    where = f"this machine ({here.display} display)" if here is not None else "this machine (no display to key by)"
    print(f"framepipe: no tuned profile for {where} in {profile.folder()}: run `framepipe tune`")
    for path in sorted(profile.folder().glob("profile-*.toml")):
        try:
            other = profile.read(path)
            about = f"tuned {other.tuned.get('date')} on {other.machine.hostname} ({other.machine.cpu}, " \
                    f"{other.machine.display}) for {other.target()}"
        except profile.ProfileError as exc:
            about = f"unreadable: {exc}"
        print(f"  {path}: {about}")
    return 1
