"""Window capture beside the same rectangle of the root window, in one run: grab cost per frame.

    python benchmarks/window_grab.py [--grabs 300] [--rounds 3] [--json FILE]

On a fresh 1920x1080 Xvfb with a 960x540 numbered test window (painting at 60 fps) half under a cover,
interleaved rounds time, per grab into a ring slot: the root's rectangle where the window is (the
baseline, what ``--region`` does), the window's own pixmap (``--window``), and the window resized to
1440x810 and scaled back into 960x540 by RENDER. Reported: wall ms (median, p90), this process's CPU ms
and the X server's CPU ms per grab (its /proc stat), and each as a ratio to the baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from framepipe.proof.testscreen import load_info, start_testscreen
from framepipe.proof.xvfb import VirtualScreen
from pipeline.ring import Geometry, Ring
from stages.video.screen import XshmRoot
from stages.video.window import WindowGrabber

TICK = os.sysconf("SC_CLK_TCK")


def server_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def measure(grabber: Any, server_pid: int, grabs: int, slots: int) -> dict[str, float]:
    walls = []
    cpu0, srv0 = time.process_time(), server_cpu_s(server_pid)
    for i in range(grabs):
        t = time.perf_counter()
        grabber.grab(i % slots)
        walls.append((time.perf_counter() - t) * 1000)
        time.sleep(0.004)  # let the painter and the server breathe, as a 60 fps capture would
    walls.sort()
    return {"wall_ms": statistics.median(walls), "wall_p90_ms": walls[int(grabs * 0.9)],
            "cpu_ms": (time.process_time() - cpu0) * 1000 / grabs,
            "server_cpu_ms": (server_cpu_s(server_pid) - srv0) * 1000 / grabs}  # fmt: skip


def _ratio(value: float, base: float) -> str:
    return f"x{value / base:.2f}" if base else "x?"


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--grabs", type=int, default=300, help="grabs per method per round (default 300)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args()
    runs: dict[str, list[dict[str, float]]] = {"root region": [], "window": [], "window scaled": []}
    with VirtualScreen(1920, 1080) as screen, tempfile.TemporaryDirectory() as tmp:
        os.environ["DISPLAY"] = screen.display
        folder = Path(tmp)
        procs = [start_testscreen(screen.display, 60, info_path=folder / "w.json", window="960x540+400+200")]
        procs.append(start_testscreen(screen.display, info_path=folder / "c.json", window="480x540+880+200",
                                      cover=True))  # fmt: skip
        wid = int(load_info(folder / "w.json")["window"], 16)
        ring = Ring.create(f"winbench{os.getpid()}", Geometry(960, 540, 960 * 4), 8)
        ring.allocate()
        assert screen.pid is not None
        try:
            for _ in range(args.rounds):
                for name in runs:
                    if name == "window scaled":
                        subprocess.run(["xdotool", "windowsize", str(wid), "1440", "810"], check=True)
                    grabber: Any = XshmRoot(ring, {"left": 400, "top": 200, "width": 960, "height": 540}) \
                        if name == "root region" else WindowGrabber(ring, wid)  # fmt: skip
                    for slot in range(ring.slots):  # the first lap maps the pages
                        grabber.grab(slot)
                    runs[name].append(measure(grabber, screen.pid, args.grabs, ring.slots))
                    grabber.close()
                    if name == "window scaled":
                        subprocess.run(["xdotool", "windowsize", str(wid), "960", "540"], check=True)
        finally:
            ring.close()
            for proc in procs:
                proc.terminate()
                proc.wait(10)
    result: dict[str, Any] = {"machine": os.uname().nodename, "cpus": os.cpu_count(), "load": os.getloadavg()}
    base = {k: statistics.median(r[k] for r in runs["root region"]) for k in runs["root region"][0]}
    lines = []
    for name, rounds in runs.items():
        med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
        result[name] = {"median": med, "rounds": rounds, "ratio": {k: med[k] / base[k] if base[k] else None
                                                                   for k in med}}  # fmt: skip
        lines.append(f"{name:14s} wall {med['wall_ms']:.2f} ms (p90 {med['wall_p90_ms']:.2f}, "
                     f"{_ratio(med['wall_ms'], base['wall_ms'])}), capture CPU {med['cpu_ms']:.3f} ms, "
                     f"X server CPU {med['server_cpu_ms']:.2f} ms "
                     f"({_ratio(med['server_cpu_ms'], base['server_cpu_ms'])})")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
