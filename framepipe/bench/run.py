"""Run one recorder of the bench as a subprocess, measured the same way for every recorder.

CPU: ``getrusage(RUSAGE_CHILDREN)`` before and after the wait, so it counts the whole process tree
that the recorder waited for (framepipe's supervisor joins its stage processes), start-up and
shutdown included; and the tree's CPU sampled ten times a second, for the rate while recording.
Memory: the tree's resident memory, sampled too, without shared-memory pages (framepipe's ring,
the XShm segments). Around each run: the X server's CPU, the whole machine's busy CPU and the load
average, so a noisy machine shows in the figures.
"""

from __future__ import annotations

import contextlib
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

#: Where the naive baseline script lives (a checkout; it is not part of the installed package).
NAIVE_SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "naive_grab_encode.py"
SAMPLE_S = 0.1  # memory sampling interval
START_GRACE_S = 60.0  # time a recorder may take beyond its duration to start and finish the file
STOP_WAIT_S = 10.0  # after each stop request, how long to wait before the next, harder one


@dataclass(frozen=True)
class Capture:
    """What every recorder of one run records."""

    display: str  # X display, e.g. ":91"
    region: tuple[int, int, int, int]  # x, y, width, height on the display
    fps: int  # frames per second
    duration_s: float  # seconds to record
    preset: str  # libx264 preset
    crf: int  # libx264 constant rate factor


@dataclass(frozen=True)
class Launch:
    """One recorder's command line and the files it leaves."""

    name: str  # framepipe, ffmpeg or naive
    cmd: tuple[str, ...]  # the command run
    output: Path  # the recording
    log: Path  # its stdout and stderr
    sidecar: Path | None = None  # framepipe: stats JSON; naive: start and grab times
    quit_input: bytes | None = None  # written to stdin to stop it early (ffmpeg: "q")


@dataclass(frozen=True)
class Usage:
    """What one recorder cost, measured from outside."""

    exit_code: int
    wall_s: float  # start to exit
    cpu_s: float  # user + system of the whole waited-for process tree
    peak_rss_mb: float  # peak of the tree's resident memory without shared-memory pages
    peak_shm_mb: float  # peak resident shared memory of one process of the tree (ring, XShm segment)
    peak_pss_mb: float  # peak of the tree's proportional memory without shared-memory pages (see _rss_kb)
    xserver_cpu_s: float | None  # the X server's CPU over the run (grabs and the test screen's paints)
    system_busy_s: float  # busy CPU of the whole machine over the run (all processes)
    loadavg_before: tuple[float, float, float]
    loadavg_after: tuple[float, float, float]
    stopped_early: bool  # it overran and was asked to stop
    cpu_curve: tuple[tuple[int, float], ...] = ()  # (clock ns, CPU s of the live tree), sampled

    def as_dict(self) -> dict[str, Any]:
        return {
            "exit_code": self.exit_code, "wall_s": round(self.wall_s, 3), "cpu_s": round(self.cpu_s, 3),
            "peak_rss_mb": round(self.peak_rss_mb, 1), "peak_shm_mb": round(self.peak_shm_mb, 1),
            "peak_pss_mb": round(self.peak_pss_mb, 1),
            "xserver_cpu_s": None if self.xserver_cpu_s is None else round(self.xserver_cpu_s, 3),
            "system_busy_s": round(self.system_busy_s, 3), "loadavg_before": list(self.loadavg_before),
            "loadavg_after": list(self.loadavg_after), "stopped_early": self.stopped_early,
        }  # fmt: skip


def region_arg(region: tuple[int, int, int, int]) -> str:
    return ",".join(str(v) for v in region)


def framepipe_launch(cap: Capture, folder: Path) -> Launch:
    """``framepipe record`` with the capture's settings and a stats file."""
    out, stats = folder / "framepipe.mkv", folder / "framepipe.stats.json"
    cmd = (
        sys.executable, "-m", "framepipe", "record", str(out), "--duration", str(cap.duration_s),
        "--fps", str(cap.fps), "--region", region_arg(cap.region), "--preset", cap.preset, "--crf", str(cap.crf),
        "--no-audio", "--no-profile", "--stats-json", str(stats), "--quiet", "--overwrite",
    )  # fmt: skip
    return Launch("framepipe", cmd, out, folder / "framepipe.log", sidecar=stats)


def ffmpeg_launch(cap: Capture, folder: Path) -> Launch:
    """ffmpeg's x11grab with the same encoder settings: libx264, preset, crf, a keyframe a second, yuv420p.

    ``-draw_mouse 0`` because framepipe does not draw the pointer either; ``-t`` ends it after the
    same number of seconds, and the file is finalised normally.
    """
    x, y, w, h = cap.region
    out = folder / "ffmpeg.mkv"
    cmd = (
        "ffmpeg", "-hide_banner", "-y", "-f", "x11grab", "-draw_mouse", "0", "-framerate", str(cap.fps),
        "-video_size", f"{w}x{h}", "-i", f"{cap.display}+{x},{y}", "-t", str(cap.duration_s),
        "-c:v", "libx264", "-preset", cap.preset, "-crf", str(cap.crf), "-g", str(cap.fps), "-pix_fmt", "yuv420p",
        str(out),
    )  # fmt: skip
    return Launch("ffmpeg", cmd, out, folder / "ffmpeg.log", quit_input=b"q")


def naive_launch(cap: Capture, folder: Path) -> Launch:
    """The one-loop Python baseline from benchmarks/ (mss grab, PyAV encode)."""
    out, times = folder / "naive.mkv", folder / "naive.times.json"
    cmd = (
        sys.executable, str(NAIVE_SCRIPT), str(out), "--region", region_arg(cap.region), "--fps", str(cap.fps),
        "--duration", str(cap.duration_s), "--preset", cap.preset, "--crf", str(cap.crf), "--times", str(times),
    )  # fmt: skip
    return Launch("naive", cmd, out, folder / "naive.log", sidecar=times)


LAUNCHERS = {"framepipe": framepipe_launch, "ffmpeg": ffmpeg_launch, "naive": naive_launch}


def _rss_kb(pid: int) -> tuple[int, int, int]:
    """(private, shared-memory, proportional) resident kB of a process: RssAnon + RssFile, RssShmem, and
    Pss_Anon + Pss_File (each page shared with other processes counted by its share: libraries that every
    stage maps count once over the tree, as they take memory once)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            rss = {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in f if line.startswith("Rss"))}
        private = rss["RssAnon"] + rss["RssFile"]
    except (OSError, KeyError, ValueError):
        try:
            kb = int(psutil.Process(pid).memory_info().rss) // 1024
        except psutil.Error:
            return 0, 0, 0
        return kb, 0, kb
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as f:
            pss = {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in f if line.startswith("Pss_"))}
        proportional = pss["Pss_Anon"] + pss["Pss_File"]
    except (OSError, KeyError, ValueError):
        proportional = private
    return private, rss["RssShmem"], proportional


class TreeSampler(threading.Thread):
    """Samples a process and its descendants ten times a second: memory peaks, and CPU over time."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_private_kb = 0
        self.peak_shm_kb = 0
        self.peak_pss_kb = 0
        self.cpu: list[tuple[int, float]] = []  # (clock ns, CPU s of the processes alive then)
        self.done = threading.Event()

    def run(self) -> None:
        known: dict[int, psutil.Process] = {}
        while not self.done.is_set():
            try:
                root = known.setdefault(self.pid, psutil.Process(self.pid))
                procs = [root, *(known.setdefault(p.pid, p) for p in root.children(recursive=True))]
            except psutil.Error:
                procs = []
            sizes = [_rss_kb(p.pid) for p in procs]
            self.peak_private_kb = max(self.peak_private_kb, sum(s[0] for s in sizes))
            self.peak_shm_kb = max(self.peak_shm_kb, *(s[1] for s in sizes), 0)  # shared: count once
            self.peak_pss_kb = max(self.peak_pss_kb, sum(s[2] for s in sizes))
            cpu = 0.0
            for proc in procs:
                with contextlib.suppress(psutil.Error):
                    times = proc.cpu_times()
                    cpu += times.user + times.system
            self.cpu.append((time.monotonic_ns(), cpu))
            self.done.wait(SAMPLE_S)

    def stop(self) -> None:
        self.done.set()
        self.join()


def cpu_rate(curve: Sequence[tuple[int, float]], start_ns: int, end_ns: int) -> float | None:
    """CPU seconds per second between the first and last samples within [start_ns, end_ns] (None: too few)."""
    inside = [(t, c) for t, c in curve if start_ns <= t <= end_ns]
    if len(inside) < 2 or inside[-1][0] - inside[0][0] < 500_000_000:
        return None
    (t0, c0), (t1, c1) = inside[0], inside[-1]
    return (c1 - c0) / ((t1 - t0) / 1e9)


def _children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _process_cpu_s(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        t = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return float(t.user + t.system)


def _busy_s() -> float:
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


def _wait(proc: subprocess.Popen[bytes], launch: Launch, timeout_s: float) -> bool:
    """Wait for the recorder; if it overruns, ask it to stop (stdin quit, SIGINT), then kill. True if it overran."""
    try:
        proc.wait(timeout_s)
        return False
    except subprocess.TimeoutExpired:
        pass
    if launch.quit_input is not None and proc.stdin is not None:
        try:
            proc.stdin.write(launch.quit_input)
            proc.stdin.flush()
        except OSError:
            pass
    for stop in (lambda: None, lambda: proc.send_signal(signal.SIGINT), proc.kill):
        stop()
        try:
            proc.wait(STOP_WAIT_S)
            break
        except subprocess.TimeoutExpired:
            continue
    proc.wait()
    return True


def run_measured(launch: Launch, env: dict[str, str], duration_s: float, xserver_pid: int | None) -> Usage:
    """Run ``launch`` to its end and measure it; no other child of this process may end meanwhile."""
    launch.log.parent.mkdir(parents=True, exist_ok=True)
    with open(launch.log, "wb") as log:
        load_before = psutil.getloadavg()
        x0, busy0, cpu0, t0 = _process_cpu_s(xserver_pid), _busy_s(), _children_cpu_s(), time.monotonic()
        stdin = subprocess.PIPE if launch.quit_input is not None else subprocess.DEVNULL
        proc = subprocess.Popen(launch.cmd, env=env, stdin=stdin, stdout=log, stderr=subprocess.STDOUT)
        sampler = TreeSampler(proc.pid)
        sampler.start()
        try:
            overran = _wait(proc, launch, duration_s + START_GRACE_S)
        finally:
            sampler.stop()
            if proc.stdin is not None:
                proc.stdin.close()
        t1, cpu1, busy1, x1 = time.monotonic(), _children_cpu_s(), _busy_s(), _process_cpu_s(xserver_pid)
    return Usage(
        exit_code=proc.returncode, wall_s=t1 - t0, cpu_s=cpu1 - cpu0,
        peak_rss_mb=sampler.peak_private_kb / 1024, peak_shm_mb=sampler.peak_shm_kb / 1024,
        peak_pss_mb=sampler.peak_pss_kb / 1024,
        xserver_cpu_s=None if x0 is None or x1 is None else x1 - x0, system_busy_s=busy1 - busy0,
        loadavg_before=load_before, loadavg_after=psutil.getloadavg(), stopped_early=overran,
        cpu_curve=tuple(sampler.cpu),
    )  # fmt: skip


def clock_offset_ns(samples: int = 9) -> int:
    """CLOCK_REALTIME minus CLOCK_MONOTONIC now, in ns: the pair read closest together wins."""
    best: tuple[int, int] | None = None
    for _ in range(samples):
        a = time.monotonic_ns()
        r = time.time_ns()
        b = time.monotonic_ns()
        if best is None or b - a < best[0]:
            best = (b - a, r - (a + b) // 2)
    assert best is not None
    return best[1]


@dataclass(frozen=True)
class FfmpegLog:
    """What ffmpeg's log says: its input's start time and its own frame counters."""

    start_s: float | None  # the first grab's timestamp, wall clock (x11grab stamps with av_gettime)
    frames: int | None  # frames it says it wrote
    dropped: int  # frames it says it dropped
    duplicated: int  # frames it says it duplicated


def read_ffmpeg_log(text: str) -> FfmpegLog:
    """Parse an ffmpeg log: ``start:`` of input #0 and the last progress line's frame/drop/dup."""
    start = re.search(r"Input #0.*?start: (-?\d+\.\d+)", text, re.S)

    def last(key: str) -> int | None:
        found = re.findall(rf"\b{key}=\s*(\d+)", text)
        return int(found[-1]) if found else None

    return FfmpegLog(float(start.group(1)) if start else None, last("frame"), last("drop") or 0, last("dup") or 0)


def start_cpu_load(cpu: int | None) -> subprocess.Popen[bytes]:
    """A busy loop pinned on one CPU (None: free to run on any): a competing load at normal priority."""
    pin = "" if cpu is None else f"import os\nos.sched_setaffinity(0, {{{cpu}}})\n"
    code = f"{pin}while True:\n    pass\n"
    return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
