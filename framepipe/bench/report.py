"""The bench's output for people and programs: the machine it ran on, a markdown table, the JSON file."""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

from framepipe.tune.profile import cpu_model

X264_SEI = re.compile(rb"x264 - core (\d+[^-]*?) - H\.264/MPEG-4 AVC codec.*?options: ([ -~]*)")


def x264_of(data: bytes) -> dict[str, str] | None:
    """The libx264 version and options written in an H.264 stream's first SEI, if any."""
    found = X264_SEI.search(data)
    if found is None:
        return None
    return {"version": found.group(1).decode().strip(), "options": found.group(2).decode().strip()}


def x264_of_file(path: Path, head: int = 1 << 16) -> dict[str, str] | None:
    """The libx264 that wrote a recording (its SEI lies near the start of the file)."""
    try:
        with open(path, "rb") as f:
            return x264_of(f.read(head))
    except OSError:
        return None


def _pyav_x264() -> dict[str, str] | None:
    """The libx264 inside PyAV's wheel, from one encoded frame."""
    import av

    ctx: Any = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = 64, 64, "yuv420p"
    ctx.time_base = Fraction(1, 25)
    frame = av.VideoFrame(64, 64, "yuv420p")
    frame.pts = 0
    data = b"".join(bytes(p) for p in [*ctx.encode(frame), *ctx.encode(None)])
    return x264_of(data)


def _command_output(cmd: Sequence[str]) -> bytes:
    try:
        return subprocess.run(list(cmd), capture_output=True, timeout=30, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return b""


def machine() -> dict[str, Any]:
    """What the bench ran on: CPU, memory, system, and the versions of everything measured."""
    import av
    import mss
    import numpy
    import psutil

    ffmpeg_version = _command_output(["ffmpeg", "-version"]).decode(errors="replace").split(" Copyright")[0]
    ffmpeg_x264 = x264_of(_command_output([
        "ffmpeg", "-v", "error", "-f", "lavfi", "-i", "color=s=64x64:d=0.04", "-c:v", "libx264", "-f", "h264", "-",
    ]))  # fmt: skip
    libs = getattr(av, "library_versions", {})
    return {
        "cpu": cpu_model(),
        "cores_logical": os.cpu_count(),
        "cores_physical": psutil.cpu_count(logical=False),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "system": platform.platform(),
        "versions": {
            "python": platform.python_version(),
            "av": av.__version__,
            "libavcodec (PyAV)": ".".join(str(v) for v in libs.get("libavcodec", ())),
            "numpy": numpy.__version__,
            "mss": mss.__version__,
            "psutil": psutil.__version__,
            "ffmpeg": ffmpeg_version.removeprefix("ffmpeg version ") or None,
            "x264 (PyAV)": (_pyav_x264() or {}).get("version"),
            "x264 (ffmpeg)": (ffmpeg_x264 or {}).get("version"),
        },
    }


# --- the table ---------------------------------------------------------------------------


COLUMNS = (
    "scenario", "recorder", "expected", "written", "lost", "repeated", "swaps", "screen late",
    "missing (check)", "ts err p50 / max ms", "outside", "CPU s/s", "CPU s/s rec", "others' cores", "peak RSS MB",
    "memory MB", "says",
)  # fmt: skip


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None or value != value else f"{value:.{digits}f}"


def says(result: Mapping[str, Any]) -> str:
    """What the recorder itself reports, in a few words."""
    own = result.get("self_reported") or {}
    if result["name"] == "framepipe" and own:
        lat = own.get("latency_ms") or {}
        return (f"dropped {own.get('dropped')}, ring peak {own.get('ring_peak')}/{own.get('ring_slots')}, "
                f"latency p50/p99 {_num(lat.get('p50'), 1)}/{_num(lat.get('p99'), 1)} ms")
    if result["name"] == "ffmpeg" and own:
        return f"frame={own.get('frames')} drop={own.get('dropped')} dup={own.get('duplicated')}"
    return "-"


def memory_mb(result: Mapping[str, Any]) -> float | None:
    """What a recorder takes: framepipe's proportional memory plus its ring; any other's peak RSS."""
    usage, own = result["usage"], result.get("self_reported") or {}
    if result["name"] == "framepipe":
        pss = usage.get("peak_pss_mb")
        return None if pss is None or own.get("ring_mb") is None else pss + own["ring_mb"]
    return usage.get("peak_rss_mb")


def others_cores(usage: Mapping[str, Any]) -> float | None:
    """Cores busy with everything but the recorder and the X server during its run (noise, and the test screen)."""
    if not usage.get("wall_s"):
        return None
    return (usage["system_busy_s"] - usage["cpu_s"] - (usage.get("xserver_cpu_s") or 0.0)) / usage["wall_s"]


def row(scenario: str, result: Mapping[str, Any]) -> list[str]:
    """One table row for one recorder of one run."""
    if result.get("error"):
        return [scenario, result["name"], *["-"] * (len(COLUMNS) - 3), f"failed: {result['error']}"]
    f, ts, check, usage = result["frames"], result["timestamps"], result.get("check") or {}, result["usage"]
    mark = "" if check.get("agrees", True) else " ≠"
    return [
        scenario, result["name"], str(f["expected"]), str(f["written"]), str(f["lost"]), str(f["repeated"]),
        str(f["swaps"]), str(f["screen_late"]), f"{f['missing']} ({check.get('missing', '-')}){mark}",
        f"{_num(ts['p50_ms'], 1)} / {_num(ts['max_ms'], 1)}", str(ts["outside"]), _num(result["cpu_per_s"]),
        _num(result.get("cpu_per_s_recording")), _num(others_cores(usage)), _num(usage["peak_rss_mb"], 0),
        _num(memory_mb(result), 0), says(result),
    ]  # fmt: skip


def table(runs: Sequence[Mapping[str, Any]]) -> str:
    """The markdown table of every recorder of every run."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for run in runs:
        if run.get("skipped"):
            cells = [run["scenario"]["name"], "-", *["-"] * (len(COLUMNS) - 3), f"skipped: {run['skipped']}"]
            lines.append("| " + " | ".join(cells) + " |")
            continue
        for result in run["recorders"].values():
            lines.append("| " + " | ".join(row(run["scenario"]["name"], result)) + " |")
    return "\n".join(lines)


NOTES = """\
- expected: duration x fps. lost: screen states that were on screen at one of the recorder's own capture
  instants (start + k/fps, 2 ms margin) but are not in the file, plus frames short at the ends. screen late:
  missing states the test screen painted too late to be seen (not the recorder's fault). swaps: a repeat next
  to a skip. missing (check): states missing by the judge (PyAV) and, in brackets, by an independent reading
  (the ffmpeg program, centre pixel of each code block); ≠ marks a difference of more than one.
- ts err: capture time the file claims minus the time the shown state was painted; outside: frames whose
  claimed time lies outside the time their state was on screen (±2 ms). framepipe: file t=0 is its base
  time (stats JSON). ffmpeg: x11grab stamps grabs with the wall clock; t=0 is its first grab (`start:` in
  its log) moved to the monotonic clock by CLOCK_REALTIME - CLOCK_MONOTONIC read at the run. naive: t=0 is
  its loop start and frame i claims i/fps.
- CPU s/s: CPU seconds of the recorder's whole process tree per recorded second, start-up and shutdown
  included (getrusage of waited-for children). rec: the tree's CPU rate while recording (sampled at 10 Hz).
  others' cores: the machine's busy CPU during the run less the recorder's and the X server's, per second
  (the test screen's painter, about 0.2, plus whatever else runs: the noise). The X server's CPU (grabs and
  paints) is in the JSON. peak RSS: the tree's resident memory without shared-memory pages, each process's
  libraries counted in full. memory: what the recorder takes: framepipe's proportional memory (Pss_Anon +
  Pss_File of every process: a library page its stages share counts once) plus the ring's allocated slots
  (it grows as it needs) and the grab's staging slot; ffmpeg's and naive's peak RSS.
- says: the recorder's own counters (framepipe: stats JSON; ffmpeg: its last progress line)."""


def markdown(doc: Mapping[str, Any]) -> str:
    """The whole report: command, machine, load, table and notes."""
    m = doc["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
    loads = [f"{run['scenario']['name']}: {run.get('loadavg')}" for run in doc["runs"]]
    lines = [
        f"Command: `{doc['command']}` ({doc['started']})",
        "",
        f"Machine: {m['cpu']}, {m['cores_logical']} logical cores, {m['memory_gb']} GiB; {m['system']}",
        f"Versions: {versions}",
        f"Load average (1, 5, 15 min) before each run: {'; '.join(loads)}",
        "",
        table(doc["runs"]),
        "",
        NOTES,
    ]
    plots = [f"- {run['scenario']['name']}: {run['plot']}" for run in doc["runs"] if run.get("plot")]
    if plots:
        lines += ["", "Plots:", *plots]
    if doc.get("micro"):
        lines += ["", doc["micro"]["summary"]]
    return "\n".join(lines) + "\n"


def write(doc: Mapping[str, Any], folder: Path) -> tuple[Path, Path]:
    """Write bench.json and bench.md into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    json_path, md_path = folder / "bench.json", folder / "bench.md"
    json_path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    md_path.write_text(markdown(doc), encoding="utf-8")
    return json_path, md_path
