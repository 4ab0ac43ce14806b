"""What the CPU benchmarks beside a baseline share: one recording measured from outside, interleaved
rounds and their medians, a file judged by what it shows (imported by outputs_cpu.py and stream.py)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from framepipe.bench import run as benchrun
from framepipe.bench.report import machine
from framepipe.proof import judge

FPS = 60


def load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def check_file(path: Path, info: dict[str, Any], stats: dict[str, Any]) -> dict[str, Any]:
    """Frames and states in one file (the judge), ffmpeg's decode errors, and what the stats say of it."""
    report = judge.judge(judge.read_codes(path, info["code_rect"]), 1 / FPS)
    done = subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-i", str(path), "-f", "null", "-"],
                          capture_output=True, text=True, check=False)  # fmt: skip
    errors = (done.stdout + done.stderr).strip()
    said: dict[str, Any] = next((o for o in stats.get("outputs", []) if Path(o["path"]).name == path.name), {})
    return {
        "path": path.name, "frames": report.frames_written, "missing": report.missing, "lost": report.lost,
        "unreadable": report.unreadable, "decode_errors": len(errors.splitlines()), "decode_error_text": errors[:500],
        "file_bytes": path.stat().st_size, "stats_frames": said.get("frames"), "stats_bytes": said.get("bytes"),
        "stats_dropped": said.get("dropped"),
    }  # fmt: skip


def ratio(two: float | None, one: float | None) -> float | None:
    return None if two is None or not one else two / one


def num(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def measure(config: Path, folder: Path, mode: str, seconds: float, env: dict[str, str],
            name: str) -> tuple[dict[str, Any], float, float | None]:  # fmt: skip
    """Record ``seconds`` with ``config``; its stats, CPU seconds of the whole tree (``os.wait4``: exact, start-up
    and shutdown included) and its CPU rate while recording (the live tree sampled 10/s)."""
    stats_path = folder / f"{mode}.stats.json"
    cmd = [sys.executable, "-m", "framepipe", "record", "--config", str(config), "--duration", f"{seconds:g}",
           "--no-audio", "--no-profile", "--quiet", "--stats-json", str(stats_path)]  # fmt: skip
    with open(folder / f"{mode}.log", "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    sampler = benchrun.TreeSampler(proc.pid)
    sampler.start()
    killer = threading.Timer(seconds + benchrun.START_GRACE_S, os.kill, (proc.pid, signal.SIGKILL))
    killer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        killer.cancel()
        sampler.stop()
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here; Popen must not wait again
    if proc.returncode != 0:
        tail = (folder / f"{mode}.log").read_text(errors="replace")[-500:]
        raise SystemExit(f"{name}: {mode} recording failed (exit {proc.returncode}): {tail}")
    stats: dict[str, Any] = json.loads(stats_path.read_text())
    base = int(stats["base_time_ns"])
    return stats, usage.ru_utime + usage.ru_stime, benchrun.cpu_rate(sampler.cpu, base, base + round(seconds * 1e9))


def paired(runs: dict[str, dict[str, Any]], test: str, base: str) -> dict[str, Any]:
    """One round: both runs and the ratios of their CPU (whole run, and while recording)."""
    return {**runs, "ratio": ratio(runs[test]["cpu_per_s"], runs[base]["cpu_per_s"]),
            "ratio_rec": ratio(runs[test]["cpu_rec_per_s"], runs[base]["cpu_rec_per_s"])}  # fmt: skip


def interleave(name: str, rounds: int, base: str, test: str,
               one: Callable[[str], dict[str, Any]]) -> list[dict[str, Any]]:  # fmt: skip
    """``rounds`` pairs of runs, base then test, so a machine that gets busier or quieter shows in both alike."""
    out = []
    for i in range(rounds):
        runs = {}
        for mode in (base, test):
            print(f"{name}: round {i + 1}/{rounds}, {mode}", file=sys.stderr, flush=True)
            runs[mode] = one(mode)
        out.append(paired(runs, test, base))
    return out


def median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def medians(rounds: list[dict[str, Any]], modes: tuple[str, ...]) -> dict[str, float | None]:
    out = {key: median([r[key] for r in rounds]) for key in ("ratio", "ratio_rec")}
    for mode in modes:
        out[f"cpu_{mode}"] = median([r[mode]["cpu_per_s"] for r in rounds])
        out[f"cpu_rec_{mode}"] = median([r[mode]["cpu_rec_per_s"] for r in rounds])
    return out


def new_doc(script: str, argv: list[str] | None, **extra: Any) -> dict[str, Any]:
    return {"command": " ".join(["python", f"benchmarks/{script}", *(sys.argv[1:] if argv is None else argv)]),
            "started": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(), **extra,
            "loadavg_before": load(), "rounds": []}  # fmt: skip


def bench_parser(doc: str | None, name: str, report: str, rounds_help: str) -> argparse.ArgumentParser:
    """The flags every interleaved CPU benchmark takes."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help=f"{rounds_help} (default 3)")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each CPU recording (default 20)")
    parser.add_argument("--out", type=Path, default=Path(f"bench-out/{name}"), help="recordings, logs")
    parser.add_argument("--md", type=Path, default=Path(__file__).parent / f"{report}.md",
                        help="markdown report (default: beside this script, from any folder)")  # fmt: skip
    parser.add_argument("--json", type=Path, help=f"JSON of every figure (default: {name}.json in --out)")
    return parser


def output_folder(args: argparse.Namespace) -> Path:
    args.out.mkdir(parents=True, exist_ok=True)
    return Path(args.out).resolve()


def conclude(doc: dict[str, Any], args: argparse.Namespace, folder: Path, name: str, goal: float, label: str,
             markdown: Callable[[dict[str, Any]], str]) -> int:  # fmt: skip
    """The verdict on the median ratio, then the report written (--md, --json: ``name``.json) and printed."""
    med = doc["median"]["ratio"]
    within = med is not None and med <= goal
    doc["verdict"] = (f"**Goal {label} <= {goal}: {'within' if within else 'MISSED'}** (median {num(med, 3)}; "
                      f"while recording {num(doc['median']['ratio_rec'], 3)}).")  # fmt: skip
    text = markdown(doc)
    (args.json or folder / f"{name}.json").write_text(json.dumps(doc, indent=2) + "\n")
    args.md.write_text(text)
    print(text)
    print(doc["verdict"].replace("**", ""))
    return 0
