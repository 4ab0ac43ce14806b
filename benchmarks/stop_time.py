"""How long Ctrl+C takes to leave a finished file, beside ffmpeg's x11grab stopped the same way.

Starts a virtual screen with the moving test screen, records with each
recorder for a while, sends SIGINT to the whole process group (as a terminal
does), and measures the time until the recorder exits. The file is then
probed: its duration must equal the time recorded. Prints a markdown table
and writes JSON.

    python benchmarks/stop_time.py [--runs 5] [--record-s 6] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from framepipe.proof.judge import count_frames
from framepipe.proof.testscreen import start_testscreen
from framepipe.proof.xvfb import VirtualScreen


def probe_seconds(path: Path, fps: float = 60) -> float:
    """Decoded video length: frames counted by ffprobe times the frame period."""
    return count_frames(path) / fps


def stop_once(cmd: list[str], env: dict[str, str], record_s: float, ready: str | None) -> tuple[float, float]:
    """Start, wait, SIGINT the group; return (seconds from SIGINT to exit, seconds recorded before it)."""
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    started = time.monotonic()
    time.sleep(record_s)
    sent = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    proc.communicate(timeout=60)
    return time.monotonic() - sent, sent - started


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--record-s", type=float, default=6.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows: dict[str, list[dict[str, float]]] = {"framepipe": [], "ffmpeg": []}
    with VirtualScreen(1920, 1080) as screen, tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, DISPLAY=screen.display)
        painter = start_testscreen(screen.display, 60, info_path=Path(tmp) / "ts.json")
        try:
            for i in range(args.runs):
                for name in rows:
                    out = Path(tmp) / f"{name}{i}.mkv"
                    if name == "framepipe":
                        cmd = [sys.executable, "-m", "framepipe", "record", str(out), "--quiet"]
                    else:
                        cmd = ["ffmpeg", "-v", "error", "-f", "x11grab", "-framerate", "60", "-video_size",
                               "1920x1080", "-i", screen.display, "-c:v", "libx264", "-preset", "ultrafast",
                               "-crf", "23", "-g", "60", str(out)]  # fmt: skip
                    stop_s, _ = stop_once(cmd, env, args.record_s, None)
                    rows[name].append({"stop_s": stop_s, "file_s": probe_seconds(out)})
        finally:
            painter.terminate()
    result: dict[str, Any] = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "python": platform.python_version()},
        "runs": rows,
        "summary": {
            name: {"stop_s_median": statistics.median(r["stop_s"] for r in runs),
                   "stop_s_max": max(r["stop_s"] for r in runs)}
            for name, runs in rows.items()
        },
    }  # fmt: skip
    print("| recorder | SIGINT to exit, median | max | file seconds (each run) |")
    print("|---|---|---|---|")
    for name, runs in rows.items():
        s = result["summary"][name]
        files = ", ".join(f"{r['file_s']:.2f}" for r in runs)
        print(f"| {name} | {s['stop_s_median']:.2f} s | {s['stop_s_max']:.2f} s | {files} |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
