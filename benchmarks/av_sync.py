"""A/V sync and drift of framepipe beside ffmpeg (x11grab + pulse), measured the same way in the same run.

Starts a virtual screen with the test screen (a frame code per state, 60 states a second) and a
private PulseAudio server with a null sink, into which the tone player puts a 1 kHz burst at every
whole second of the pipeline clock. Each recorder records the screen and the sink's monitor for
``--seconds``; each file is then judged by ``framepipe.avsync`` from the file alone: per burst, its
onset in the audio track against the video's time of the same instant (offset), and against the
first frame showing the state on screen then (frame offset). Drift is the slope of the offset over
the run, and the last three bursts against the first three. Writes JSON and a markdown report.

    python benchmarks/av_sync.py [--seconds 60] [--recorders framepipe,ffmpeg] [--out bench-out/av_sync]
                                 [--md benchmarks/AV_SYNC.md]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from framepipe import avsync
from framepipe.benchreport import machine
from framepipe.pulse import PulseServer
from framepipe.testscreen import load_info, start_testscreen
from framepipe.tone import load_info as load_tone
from framepipe.tone import start_tone
from framepipe.xvfb import VirtualScreen

SIZE = (1280, 720)
FPS = 60
SINK = "fp_out"


def record_framepipe(out: Path, seconds: float, env: dict[str, str]) -> dict[str, Any]:
    stats = out.with_suffix(".stats.json")
    cmd = [sys.executable, "-m", "framepipe", "record", str(out), "--duration", str(seconds), "--fps", str(FPS),
           "--audio", "system", "--stats-json", str(stats), "--quiet", "--overwrite"]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"framepipe failed: {done.stderr.strip()[-500:]}")
    data = json.loads(stats.read_text())
    source = data["audio"]["sources"]["system"]
    return {"base_time_ns": data["base_time_ns"], "says": (
        f"silence {source['silence_ms']} ms, drift {source['drift_ppm']} ppm, correction {source['correction_ppm']} "
        f"ppm, resyncs {source['resyncs']}, dropped frames {data['frames']['dropped']}"
    )}  # fmt: skip


def record_ffmpeg(out: Path, seconds: float, env: dict[str, str], display: str) -> dict[str, Any]:
    cmd = ["ffmpeg", "-nostdin", "-y", "-loglevel", "error",
           "-thread_queue_size", "1024", "-f", "x11grab", "-framerate", str(FPS),
           "-video_size", f"{SIZE[0]}x{SIZE[1]}", "-i", display,
           "-thread_queue_size", "1024", "-f", "pulse", "-i", f"{SINK}.monitor",
           "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k",
           "-t", str(seconds), str(out)]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ffmpeg failed: {done.stderr.strip()[-500:]}")
    return {"base_time_ns": None, "says": done.stderr.strip()[-200:] or "-"}


def row(name: str, report: avsync.SyncReport, rec: dict[str, Any], load: list[float]) -> dict[str, Any]:
    clock = [b.clock_error_ms for b in report.bursts if b.clock_error_ms is not None]
    return {
        "recorder": name, "bursts": len(report.bursts), "offset_ms_p50": report.offset_ms_p50,
        "offset_ms_max": report.offset_ms_max, "frame_offset_ms_max": report.frame_offset_ms_max,
        "drift_ms_per_min": report.drift_ms_per_min, "start_end_ms": report.start_end_ms,
        "length_diff_ms": report.length_diff_ms,
        "clock_error_ms_max": max((abs(c) for c in clock), default=None), "load_before": load,
        "says": rec["says"], "report": report.as_dict(),
    }  # fmt: skip


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    m = meta["machine"]
    lines = [
        "# A/V sync: framepipe beside ffmpeg", "",
        f"Command: `{meta['command']}` ({meta['when']})", "",
        f"Machine: {m['cpu']}, {m['cores_logical']} logical cores, {m['memory_gb']} GiB; {m['system']}",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()), "",
        f"Each recorder: {meta['seconds']:g} s of a {SIZE[0]}x{SIZE[1]} Xvfb screen at {FPS} fps with the test screen, "
        f"and the monitor of a PulseAudio null sink carrying a 1 kHz burst at every whole second of the clock that "
        "paints the screen (`framepipe.tone`, placed by PortAudio's output time). One after the other, same rig.", "",
        "| recorder | bursts | offset p50 ms | max abs offset ms | max abs frame offset ms | drift ms/min "
        "| last 3 - first 3 ms | audio end - video end ms | max abs clock error ms | load before | says |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for r in rows:
        clock = "-" if r["clock_error_ms_max"] is None else f"{r['clock_error_ms_max']:.2f}"
        lines.append(
            f"| {r['recorder']} | {r['bursts']} | {r['offset_ms_p50']:+.2f} | {r['offset_ms_max']:.2f} "
            f"| {r['frame_offset_ms_max']:.2f} | {r['drift_ms_per_min']:+.3f} | {r['start_end_ms']:+.2f} "
            f"| {r['length_diff_ms']:+.1f} | {clock} | {r['load_before']} | {r['says']} |"
        )
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
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each recording (default 60)")
    parser.add_argument("--recorders", default="framepipe,ffmpeg", help="comma-separated, in order")
    parser.add_argument("--out", type=Path, default=Path("bench-out/av_sync"), help="folder for files and JSON")
    parser.add_argument("--md", type=Path, help="also write the markdown report here")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    with VirtualScreen(*SIZE) as screen, PulseServer((SINK,)) as pulse:
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
                    rec = record_framepipe(out, args.seconds, env)
                else:
                    rec = record_ffmpeg(out, args.seconds, env, screen.display)
                report = avsync.judge_file(out, load_info(screen_info), load_tone(tone_info), rec["base_time_ns"])
                rows.append(row(name, report, rec, load))
                print(f"{name}: {report.summary()}", file=sys.stderr)
                time.sleep(1)
        finally:
            painter.terminate()
            painter.wait(10)
            player.terminate()
            player.wait(10)
    meta = {"command": " ".join(["python", "benchmarks/av_sync.py", *(argv or sys.argv[1:])]),
            "when": datetime.now(UTC).isoformat(timespec="seconds"), "seconds": args.seconds, "machine": machine(),
            "tone": json.loads(Path(f"{tone_info}.stats").read_text())}  # fmt: skip
    (args.out / "av_sync.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    text = markdown(rows, meta)
    if args.md:
        args.md.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
