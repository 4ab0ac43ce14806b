"""A/V sync and drift of framepipe beside ffmpeg (x11grab + pulse), measured the same way in the same run.

Starts a virtual screen with the test screen (a frame code per state, 60 states a second) and a
private PulseAudio server with a null sink, into which the tone player puts a 1 kHz burst at every
whole second of the pipeline clock. Each recorder records the screen and the sink's monitor for
``--seconds``; each file is then judged by ``framepipe.proof.avsync`` from the file alone: per burst, its
onset in the audio track against the video's time of the same instant (offset), and against the
first frame showing the state on screen then (frame offset). Drift is the slope of the offset over
the run, and the last three bursts against the first three. The file's frames are judged too (states
missing). While framepipe records, its processes' private memory (USS) is sampled: growth is the
end against the sample at a tenth of the run (after the start-up). Writes JSON and a markdown report.

    python benchmarks/av_sync.py [--seconds 60] [--recorders framepipe,ffmpeg] [--out bench-out/av_sync]
                                 [--md benchmarks/AV_SYNC.md] [--size 1280x720] [--hog N] [--overload drop|shed]

The soak (issue 5): ``--seconds 1800 --size 1920x1080 --recorders framepipe``. Under overload:
``--hog 2`` runs two busy loops (normal priority, any CPU) for the whole run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from framepipe.bench.report import machine
from framepipe.bench.run import start_cpu_load
from framepipe.proof import avsync, judge
from framepipe.proof.pulse import PulseServer
from framepipe.proof.testscreen import load_info, start_testscreen
from framepipe.proof.tone import load_info as load_tone
from framepipe.proof.tone import start_tone
from framepipe.proof.xvfb import VirtualScreen

FPS = 60
SINK = "fp_out"


class MemorySampler(threading.Thread):
    """Samples the private memory (USS, MiB) of a process and its children every ``every`` seconds."""

    def __init__(self, pid: int, every: float) -> None:
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.samples: list[tuple[float, dict[str, float]]] = []  # (seconds since start, {process name: MiB})
        self.done = threading.Event()

    def run(self) -> None:
        start = time.monotonic()
        while not self.done.wait(self.every):
            try:
                root = psutil.Process(self.pid)
                procs = [root, *root.children(recursive=True)]
                sample = {}
                for p in procs:
                    sample[f"{p.name()}:{p.pid}"] = p.memory_full_info().uss / 2**20
            except psutil.Error:
                continue  # a process came or went mid-sample
            self.samples.append((time.monotonic() - start, sample))

    def growth(self, seconds: float) -> dict[str, Any]:
        """Total USS at a tenth of the run against the last sample, and the peak, with the series per minute."""
        totals = [(t, sum(s.values())) for t, s in self.samples if len(s) > 1]
        if len(totals) < 2:
            return {}
        early = next(v for t, v in totals if t >= seconds / 10) if totals[-1][0] >= seconds / 10 else totals[0][1]
        end = totals[-1][1]
        per_minute = [round(v, 1) for t, v in totals if t % 60 < self.every] or [round(v, 1) for _, v in totals]
        last = next(s for _, s in reversed(self.samples) if len(s) > 1)
        return {
            "uss_mb_early": round(early, 1), "uss_mb_end": round(end, 1),
            "uss_mb_peak": round(max(v for _, v in totals), 1), "growth_pct": round(100 * (end - early) / early, 2),
            "uss_mb_per_minute": per_minute, "last": {k.split(":")[0]: round(v, 1) for k, v in last.items()},
        }  # fmt: skip


def record_framepipe(out: Path, seconds: float, env: dict[str, str], extra: list[str], every: float) -> dict[str, Any]:
    stats = out.with_suffix(".stats.json")
    cmd = [sys.executable, "-m", "framepipe", "record", str(out), "--duration", str(seconds), "--fps", str(FPS),
           "--audio", "system", "--stats-json", str(stats), "--quiet", "--overwrite", *extra]  # fmt: skip
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        sampler = MemorySampler(proc.pid, every)
        sampler.start()
        try:
            _, err = proc.communicate(timeout=seconds + 120)
        finally:
            sampler.done.set()
    if proc.returncode != 0:
        raise RuntimeError(f"framepipe failed: {err.strip()[-500:]}")
    data = json.loads(stats.read_text())
    source = data["audio"]["sources"]["system"]
    frames = data["frames"]
    return {"base_time_ns": data["base_time_ns"], "memory": sampler.growth(seconds), "says": (
        f"silence {source['silence_ms']} ms, drift {source['drift_ppm']} ppm, correction {source['correction_ppm']} "
        f"ppm, resyncs {source['resyncs']}, dropped frames {frames['dropped']} ({frames['dropped_by_reason']})"
    )}  # fmt: skip


def record_ffmpeg(
    out: Path, seconds: float, env: dict[str, str], display: str, size: tuple[int, int]
) -> dict[str, Any]:
    cmd = ["ffmpeg", "-nostdin", "-y", "-loglevel", "error",
           "-thread_queue_size", "1024", "-f", "x11grab", "-framerate", str(FPS),
           "-video_size", f"{size[0]}x{size[1]}", "-i", display,
           "-thread_queue_size", "1024", "-f", "pulse", "-i", f"{SINK}.monitor",
           "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k",
           "-t", str(seconds), str(out)]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ffmpeg failed: {done.stderr.strip()[-500:]}")
    return {"base_time_ns": None, "memory": {}, "says": done.stderr.strip()[-200:] or "-"}


def row(
    name: str, report: avsync.SyncReport, frames: judge.Report, rec: dict[str, Any], load: list[float]
) -> dict[str, Any]:
    clock = [b.clock_error_ms for b in report.bursts if b.clock_error_ms is not None]
    return {
        "recorder": name, "bursts": len(report.bursts), "offset_ms_p50": report.offset_ms_p50,
        "offset_ms_max": report.offset_ms_max, "frame_offset_ms_max": report.frame_offset_ms_max,
        "drift_ms_per_min": report.drift_ms_per_min, "start_end_ms": report.start_end_ms,
        "length_diff_ms": report.length_diff_ms,
        "clock_error_ms_max": max((abs(c) for c in clock), default=None), "load_before": load,
        "frames_written": frames.frames_written, "states_missing": frames.missing, "memory": rec["memory"],
        "says": rec["says"], "report": report.as_dict(),
    }  # fmt: skip


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    m = meta["machine"]
    lines = [
        "# A/V sync: framepipe beside ffmpeg", "",
        f"Command: `{meta['command']}` ({meta['when']})", "",
        f"Machine: {m['cpu']}, {m['cores_logical']} logical cores, {m['memory_gb']} GiB; {m['system']}",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()), "",
        f"Each recorder: {meta['seconds']:g} s of a {meta['size']} Xvfb screen at {FPS} fps with the test screen, "
        f"and the monitor of a PulseAudio null sink carrying a 1 kHz burst at every whole second of the clock that "
        "paints the screen (`framepipe.proof.tone`, placed by PortAudio's output time). One after the other, same rig."
        + (f" Overload: {meta['hog']} busy loop(s) at normal priority ran for the whole run." if meta["hog"] else "")
        + (f" framepipe's overload policy: {meta['overload']}." if meta["overload"] else ""), "",
        "| recorder | bursts | offset p50 ms | max abs offset ms | max abs frame offset ms | drift ms/min "
        "| last 3 - first 3 ms | audio end - video end ms | max abs clock error ms | frames written | states missing "
        "| private memory MiB (at 1/10, end, growth) | load before | says |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for r in rows:
        clock = "-" if r["clock_error_ms_max"] is None else f"{r['clock_error_ms_max']:.2f}"
        m = r["memory"]
        memory = f"{m['uss_mb_early']:.0f}, {m['uss_mb_end']:.0f}, {m['growth_pct']:+.2f} %" if m else "-"
        lines.append(
            f"| {r['recorder']} | {r['bursts']} | {r['offset_ms_p50']:+.2f} | {r['offset_ms_max']:.2f} "
            f"| {r['frame_offset_ms_max']:.2f} | {r['drift_ms_per_min']:+.3f} | {r['start_end_ms']:+.2f} "
            f"| {r['length_diff_ms']:+.1f} | {clock} | {r['frames_written']} | {r['states_missing']} | {memory} "
            f"| {r['load_before']} | {r['says']} |"
        )
    for r in rows:
        if r["memory"]:
            m = r["memory"]
            lines += [
                "",
                f"{r['recorder']}'s private memory (USS of all its processes, MiB) about once a minute: "
                + " ".join(f"{v:.0f}" for v in m["uss_mb_per_minute"])
                + f"; peak {m['uss_mb_peak']:.0f}; "
                "by process at the end: " + ", ".join(f"{k} {v:.0f}" for k, v in m["last"].items()),
            ]
    lines += ["", "Offset of every burst, in order (ms):", ""]
    lines += [f"- {r['recorder']}: " + " ".join(f"{b['offset_ms']:+.1f}" for b in r["report"]["bursts"]) for r in rows]
    lines += [
        "",
        "- offset: burst onset in the audio track minus the video's time of that instant (frames within 0.5 s "
        "of it: a frame showing state n maps to n's paint time plus half a period); + means audio late.",
        "- frame offset: onset minus the first frame that shows the state on screen at that instant (what a "
        "viewer sees with the sound); it carries up to a frame of the grab's phase.",
        "- drift: least-squares slope of the offset over the run; last 3 - first 3: the same as a difference.",
        "- clock error (framepipe only, it records its base time): onset minus the burst's time on the "
        "clock, with the file's t=0 at the base time.",
        "- states missing: test-screen states between the first and last in the file that no frame shows "
        "(the judge's count; the screen's own late paints are among them).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each recording (default 60)")
    parser.add_argument("--recorders", default="framepipe,ffmpeg", help="comma-separated, in order")
    parser.add_argument("--out", type=Path, default=Path("bench-out/av_sync"), help="folder for files and JSON")
    parser.add_argument("--md", type=Path, help="also write the markdown report here")
    parser.add_argument("--size", default="1280x720", help="virtual screen WIDTHxHEIGHT (default 1280x720)")
    parser.add_argument("--hog", type=int, default=0, metavar="N", help="run N busy loops for the whole run")
    parser.add_argument("--overload", choices=("drop", "shed"), help="framepipe's overload policy (default: its own)")
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between memory samples (default 5)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    width, height = (int(v) for v in args.size.lower().split("x"))
    size = (width, height)
    extra = []
    if args.overload:
        config = args.out / "overload.toml"
        config.write_text(f'[encode]\noverload = "{args.overload}"\n')
        extra = ["--config", str(config)]
    rows = []
    hogs = [start_cpu_load(None) for _ in range(args.hog)]
    with VirtualScreen(*size) as screen, PulseServer((SINK,)) as pulse:
        env = dict(os.environ, DISPLAY=screen.display, **pulse.env())
        env.pop("PULSE_SOURCE", None)
        tone_info, screen_info = args.out / "tone.json", args.out / "screen.json"
        player = start_tone(SINK, info_path=tone_info, env=pulse.env())
        painter = start_testscreen(screen.display, FPS, info_path=screen_info)
        try:
            for name in [r.strip() for r in args.recorders.split(",") if r.strip()]:
                out = args.out / f"{name}.mkv"
                load = [round(x, 2) for x in os.getloadavg()]
                if name == "framepipe":
                    rec = record_framepipe(out, args.seconds, env, extra, args.sample)
                else:
                    rec = record_ffmpeg(out, args.seconds, env, screen.display, size)
                info = load_info(screen_info)
                frames = judge.read_codes(out, info["code_rect"])
                report = avsync.sync_report(frames, avsync.read_track(out), info, load_tone(tone_info),
                                            rec["base_time_ns"])  # fmt: skip
                states = judge.judge(frames, 1 / FPS)
                del frames
                rows.append(row(name, report, states, rec, load))
                print(f"{name}: {report.summary()}; {states.summary()}; memory {rec['memory'] or '-'}", file=sys.stderr)
                time.sleep(1)
        finally:
            for hog in hogs:
                hog.kill()
                hog.wait()
            painter.terminate()
            painter.wait(10)
            player.terminate()
            player.wait(10)
    meta = {"command": " ".join(["python", "benchmarks/av_sync.py", *(argv or sys.argv[1:])]),
            "when": datetime.now(UTC).isoformat(timespec="seconds"), "seconds": args.seconds, "machine": machine(),
            "size": args.size, "hog": args.hog, "overload": args.overload,
            "tone": json.loads(Path(f"{tone_info}.stats").read_text())}  # fmt: skip
    (args.out / "av_sync.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    text = markdown(rows, meta)
    if args.md:
        args.md.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
