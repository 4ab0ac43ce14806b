"""``framepipe bench``: dropped frames, timing, CPU and memory, judged from the files, beside baselines.

For each scenario the bench starts a virtual screen of its size (or uses ``--display``), paints the
frame-numbered test screen on it, and records it, one after another on the same screen, with
framepipe, with ffmpeg's x11grab at the same encoder settings, and with a naive one-loop Python
grab-then-encode script. Then it decodes every file, reads the frame numbers back and counts
(``framepipe.bench.count``), writes bench.json and bench.md into ``--out`` and draws a PNG per run.
``--micro`` adds the pipeline's micro-benchmarks (``framepipe.bench.micro``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from framepipe.bench import count as benchcount
from framepipe.bench import report as benchreport
from framepipe.bench import run as benchrun
from framepipe.proof.xvfb import stop_process
from pipeline.errors import ConfigError, SetupError

SETTLE_S = 1.0  # pause between two recorders, so one's exit does not overlap the next one's start
LATENCY_SECONDS = 5.0  # the framepipe-only run that --micro makes for capture-to-packet latency


@dataclass(frozen=True)
class Scenario:
    """What one run records."""

    name: str
    width: int  # pixels
    height: int  # pixels
    fps: int  # frames per second
    duration_s: float = 30.0  # seconds each recorder records
    heavy: bool = False  # a large noisy moving area, like camera video in a call
    cpu_load: bool = False  # a busy loop pinned on one core competes with the recorders
    about: str = ""  # one line for --help and the report


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("1080p60", 1920, 1080, 60, about="the default: full HD at 60 fps"),
        Scenario("720p120", 1280, 720, 120, about="HD at 120 fps"),
        Scenario("1440p60", 2560, 1440, 60, about="QHD at 60 fps"),
        Scenario("4k30", 3840, 2160, 30, about="UHD at 30 fps"),
        Scenario("heavy", 1920, 1080, 60, heavy=True, about="1080p60 with a large noisy moving area"),
        Scenario("load", 1920, 1080, 60, cpu_load=True, about="1080p60 beside a busy loop pinned on one core"),
        Scenario("soak", 1920, 1080, 60, duration_s=600, about="1080p60 for 10 minutes"),
    )
}
DEFAULT_SCENARIO = "1080p60"
QUICK_SECONDS = 10.0


@dataclass(frozen=True)
class BenchOptions:
    """What people asked the bench for."""

    scenarios: tuple[str, ...] = (DEFAULT_SCENARIO,)  # scenario names, in order
    seconds: float | None = None  # record this long instead of each scenario's duration
    heavy: bool = False  # heavy content in every scenario
    out: Path = Path("bench-out")  # where results, recordings and plots go
    display: str | None = None  # record this X display instead of a new virtual screen
    recorders: tuple[str, ...] = tuple(benchrun.LAUNCHERS)  # which recorders run, in order
    preset: str = "ultrafast"  # libx264 preset for every recorder
    crf: int = 23  # libx264 quality for every recorder
    micro: bool = False  # run the micro-benchmarks too
    plots: bool = True  # draw a PNG per run

    def command_line(self) -> str:
        """The framepipe command that runs these options, for the report."""
        words = ["framepipe", "bench", *(f"--scenario {name}" for name in self.scenarios)]
        if self.seconds:
            words.append(f"--seconds {self.seconds:g}")
        if self.heavy:
            words.append("--heavy")
        if self.recorders != tuple(benchrun.LAUNCHERS):
            words.append(f"--recorders {','.join(self.recorders)}")
        if self.display:
            words.append(f"--display {self.display}")
        if self.micro:
            words.append("--micro")
        return " ".join([*words, f"--out {self.out}"])


def check(options: BenchOptions) -> None:
    """Fail in one line, before anything starts, on unknown names or missing programs."""
    for name in options.scenarios:
        if name not in SCENARIOS:
            raise ConfigError(f"unknown scenario {name!r}; choose from: {', '.join(SCENARIOS)}")
    for name in options.recorders:
        if name not in benchrun.LAUNCHERS:
            raise ConfigError(f"unknown recorder {name!r}; choose from: {', '.join(benchrun.LAUNCHERS)}")
    if "ffmpeg" in options.recorders and shutil.which("ffmpeg") is None:
        raise SetupError("ffmpeg is not installed: apt-get install ffmpeg, or leave it out with --recorders")
    if "naive" in options.recorders and not benchrun.NAIVE_SCRIPT.exists():
        raise SetupError(f"the naive baseline {benchrun.NAIVE_SCRIPT} is missing: run the bench from a checkout")
    if options.display is None and shutil.which("Xvfb") is None:
        raise SetupError("Xvfb is not installed (apt-get install xvfb); or pass --display to record a screen")


@contextlib.contextmanager
def screen(scenario: Scenario, display: str | None) -> Iterator[tuple[str, int | None]]:
    """The display to record on and its X server's pid (None when not ours)."""
    if display is not None:
        yield display, None
        return
    from framepipe.proof.xvfb import VirtualScreen

    with VirtualScreen(scenario.width, scenario.height) as xvfb:
        yield xvfb.display, xvfb.pid


def centred(info: dict[str, Any], scenario: Scenario) -> tuple[int, int, int, int]:
    """The scenario's region in the middle of the screen (where the code is), on even pixels."""
    x = ((info["width"] - scenario.width) // 2) & ~1
    y = ((info["height"] - scenario.height) // 2) & ~1
    return x, y, scenario.width, scenario.height


@dataclass(frozen=True)
class Recorded:
    """One scenario recorded by every recorder: what judging needs."""

    cap: benchrun.Capture  # what each recorder recorded
    info: dict[str, Any]  # the test screen's info JSON
    painter: dict[str, Any] | None  # the test screen's stats (paint delays); None if it did not write them
    runs: dict[str, tuple[benchrun.Launch, benchrun.Usage, int]]  # by recorder: launch, usage, clock offset
    loadavg: list[float]  # load average before the first recorder


def record_all(scenario: Scenario, options: BenchOptions, folder: Path) -> Recorded | str:
    """Record the scenario with every recorder on one screen; or why it cannot be recorded here."""
    from framepipe.proof.testscreen import load_info, start_testscreen

    folder.mkdir(parents=True, exist_ok=True)
    info_path = folder / "screen.json"
    with screen(scenario, options.display) as (display, xserver_pid):
        painter = start_testscreen(display, scenario.fps, scenario.heavy, info_path=info_path)
        load = None
        try:
            info = load_info(info_path)
            if info["width"] < scenario.width or info["height"] < scenario.height:
                return f"the screen is {info['width']}x{info['height']}"
            cap = benchrun.Capture(display, centred(info, scenario), scenario.fps, scenario.duration_s,
                                   options.preset, options.crf)
            if scenario.cpu_load:
                load = benchrun.start_cpu_load(max(os.sched_getaffinity(0)))
            env = dict(os.environ, DISPLAY=display)
            env.pop("WAYLAND_DISPLAY", None)  # the bench's X display, not a Wayland desktop's screencopy
            loadavg = [round(v, 2) for v in os.getloadavg()]
            runs = {}
            for name in options.recorders:
                launch = benchrun.LAUNCHERS[name](cap, folder)
                offset = benchrun.clock_offset_ns()
                runs[name] = (launch, benchrun.run_measured(launch, env, cap.duration_s, xserver_pid), offset)
                time.sleep(SETTLE_S)
        finally:
            for helper in (load, painter):
                if helper is not None:
                    stop_process(helper)  # terminate, wait, kill: the test screen writes its stats on the way
    stats_path = Path(f"{info_path}.stats")
    painter_stats = json.loads(stats_path.read_text()) if stats_path.exists() else None
    return Recorded(cap, info, painter_stats, runs, loadavg)


def timing_of(launch: benchrun.Launch, offset_ns: int) -> tuple[benchcount.Timing, dict[str, Any], dict[str, Any]]:
    """Where the recorder's file sits on the clock, its own counters, and its stats series (framepipe)."""
    if launch.name == "framepipe":
        assert launch.sidecar is not None
        stats = json.loads(launch.sidecar.read_text())
        base = int(stats["base_time_ns"])
        f = stats["frames"]
        own = {
            "written": f["written"], "dropped": f["dropped"], "dropped_by_reason": f["dropped_by_reason"],
            "repeats": f["repeats"], "skips": f["skips"], "latency_ms": stats["latency_ms"],
            "ring_peak": stats["ring"]["peak_fill"], "ring_slots": stats["ring"]["slots"],
            "ring_mb": round((stats["ring"]["allocated_bytes"] + stats["ring"].get("staging_bytes", 0)) / 2**20, 1),
        }  # fmt: skip
        timing = benchcount.Timing(base, "framepipe's base time from its stats JSON")
        return timing, own, {"series": stats.get("series"), "slots": stats["ring"]["slots"]}
    if launch.name == "ffmpeg":
        log = benchrun.read_ffmpeg_log(launch.log.read_text(errors="replace"))
        if log.start_s is None:
            raise SetupError(f"ffmpeg's log has no input start time; see {launch.log}")
        base = round(log.start_s * 1e9) - offset_ns
        source = "x11grab's wall-clock start (`start:` in its log) minus CLOCK_REALTIME - CLOCK_MONOTONIC"
        own = {"frames": log.frames, "dropped": log.dropped, "duplicated": log.duplicated}
        return benchcount.Timing(base, source), own, {}
    assert launch.sidecar is not None
    base = int(json.loads(launch.sidecar.read_text())["base_time_ns"])
    return benchcount.Timing(base, "its loop start; frame i claims i/fps"), {}, {}


@dataclass(frozen=True)
class Judged:
    """One recorder's figures, and what only its plot needs."""

    result: dict[str, Any]  # every figure, for the JSON and the table
    frames: tuple[Any, ...] = ()  # judge.Frame of the file
    late: frozenset[int] = frozenset()  # missing states the screen showed late
    series: dict[str, Any] | None = None  # framepipe: ring fill over time
    slots: int | None = None  # framepipe: ring slots


def judge_one(launch: benchrun.Launch, usage: benchrun.Usage, offset_ns: int, rec: Recorded) -> Judged:
    """Every figure of one recorder in one run."""
    from framepipe.proof import judge

    cap, info, painter = rec.cap, rec.info, rec.painter
    result: dict[str, Any] = {
        "name": launch.name, "command": " ".join(launch.cmd), "file": str(launch.output), "log": str(launch.log),
        "usage": usage.as_dict(), "cpu_per_s": usage.cpu_s / cap.duration_s,
        "xserver_cpu_per_s": None if usage.xserver_cpu_s is None else usage.xserver_cpu_s / cap.duration_s,
    }  # fmt: skip
    if usage.exit_code != 0 or not launch.output.exists():
        result["error"] = f"exit status {usage.exit_code}; see {launch.log}"
        return Judged(result)
    try:
        timing, own, extra = timing_of(launch, offset_ns)
        frames = judge.read_codes(launch.output, info["code_rect"], cap.region[:2])
        expected = round(cap.duration_s * cap.fps)
        counts, late = benchcount.count_recording(frames, info, painter, timing, expected)
        ts = judge.timestamp_errors(frames, info, timing.base_time_ns, painter)
        reading = benchcount.independent_missing(launch.output, info["code_rect"], cap.region[:2])
    except (judge.JudgeError, SetupError, OSError, ValueError, KeyError) as exc:
        result["error"] = f"cannot judge {launch.output}: {exc}"
        return Judged(result)
    period_ns = info["period_ns"]
    end_ns = timing.base_time_ns + round(cap.duration_s * 1e9)
    recording = benchrun.cpu_rate(usage.cpu_curve, timing.base_time_ns, end_ns)
    result.update({
        "cpu_per_s_recording": recording,
        "frames": counts.as_dict(),
        "timestamps": {
            **ts.as_dict(), "base_time_ns": timing.base_time_ns, "source": timing.source,
            "grid_phase_ms": round(((timing.base_time_ns - info["base_ns"]) % period_ns) / 1e6, 3),
        },
        "check": {**dataclasses.asdict(reading), "agrees": abs(reading.missing - counts.missing) <= 1,
                  "reader": "ffmpeg program, centre pixel of each code block"},
        "self_reported": own,
        "x264": benchreport.x264_of_file(launch.output),
        "file_mb": round(launch.output.stat().st_size / 2**20, 1),
    })  # fmt: skip
    return Judged(result, tuple(frames), late, extra.get("series"), extra.get("slots"))


def run_scenario(scenario: Scenario, options: BenchOptions) -> dict[str, Any]:
    """Record, judge and plot one scenario."""
    folder = options.out / scenario.name
    print(f"bench: {scenario.name}: recording {scenario.duration_s:g} s with {', '.join(options.recorders)}",
          file=sys.stderr)
    rec = record_all(scenario, options, folder)
    run: dict[str, Any] = {"scenario": dataclasses.asdict(scenario)}
    if isinstance(rec, str):
        return {**run, "skipped": rec}
    print(f"bench: {scenario.name}: judging the files", file=sys.stderr)
    judged = {name: judge_one(launch, usage, offset, rec) for name, (launch, usage, offset) in rec.runs.items()}
    painter = rec.painter or {}
    run.update({
        "display": rec.cap.display, "region": list(rec.cap.region), "loadavg": rec.loadavg,
        "screen": {k: painter.get(k) for k in ("paints", "skipped", "delay_p50_us", "delay_max_us")},
        "recorders": {name: j.result for name, j in judged.items()},
    })  # fmt: skip
    if options.plots:
        run["plot"] = str(plot(scenario, judged, options.out / f"{scenario.name}.png"))
    return run


def plot(scenario: Scenario, judged: dict[str, Judged], path: Path) -> Path:
    from framepipe.bench import plot as benchplot

    period = 1 / scenario.fps
    tracks = [benchplot.track(name, j.frames, period, j.late) for name, j in judged.items() if j.frames]
    fp = judged.get("framepipe", Judged({}))
    title = f"{scenario.name}: {scenario.width}x{scenario.height} at {scenario.fps} fps, {scenario.duration_s:g} s"
    return benchplot.plot_run(path, title, tracks, period, fp.series, fp.slots)


def micro(options: BenchOptions) -> tuple[dict[str, Any], dict[str, Any]]:
    """The transport micro-benchmark, and a short framepipe-only run for capture-to-packet latency."""
    from framepipe.bench import micro as benchmicro

    print("bench: micro: ring transport against memcpy and multiprocessing.Queue", file=sys.stderr)
    result = benchmicro.run_micro()
    scenario = dataclasses.replace(SCENARIOS[DEFAULT_SCENARIO], name="latency", duration_s=LATENCY_SECONDS)
    run = run_scenario(scenario, dataclasses.replace(options, recorders=("framepipe",)))
    framepipe = run.get("recorders", {}).get("framepipe", {})
    latency = (framepipe.get("self_reported") or {}).get("latency_ms")
    result["latency_ms"] = latency
    said = f"p50 {latency['p50']} ms, p99 {latency['p99']} ms" if latency else "not measured (the run failed)"
    result["summary"] += f"\nCapture-to-packet latency, framepipe at 1080p60 ({LATENCY_SECONDS:g} s run): {said}"
    return result, run


def bench(options: BenchOptions) -> int:
    """Run the bench; print the table; 0 when every recorder left a judged file."""
    check(options)
    doc: dict[str, Any] = {
        "command": options.command_line(),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": benchreport.machine(),
        "loadavg_start": [round(v, 2) for v in os.getloadavg()],
        "runs": [],
    }
    if options.micro:
        doc["micro"], latency_run = micro(options)
        doc["runs"].append(latency_run)
    for name in options.scenarios:
        scenario = SCENARIOS[name]
        scenario = dataclasses.replace(scenario, heavy=scenario.heavy or options.heavy,
                                       duration_s=options.seconds or scenario.duration_s)
        doc["runs"].append(run_scenario(scenario, options))
    doc["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    json_path, md_path = benchreport.write(doc, options.out)
    print(benchreport.markdown(doc))
    print(f"bench: wrote {json_path} and {md_path}", file=sys.stderr)
    failed = [r for run in doc["runs"] for r in run.get("recorders", {}).values() if r.get("error")]
    return 1 if failed else 0
