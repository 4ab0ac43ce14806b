"""CPU cost of a second output: one [[output]] (a.mkv) against two (a.mkv + b.mp4) from one encode.

On a 1920x1080 virtual screen showing the moving test screen at 60 fps, it records ``--seconds`` with
``framepipe record --config CFG`` alternately with one output and with two (A, B, A, B ... for
``--rounds``), so a machine that gets busier or quieter shows in both alike.

CPU: the recorder runs as a subprocess and is reaped with ``os.wait4``, whose rusage is the kernel's
exact user + system time of the supervisor and of every process it waited for (its stage processes,
all joined), start-up and shutdown included; divided by ``--seconds`` it is "CPU s/s". As a second
figure, the live tree is sampled ten times a second (``framepipe.bench.run.TreeSampler``) and its rate
between the recording's base time and ``--seconds`` later is "CPU s/s while recording" (steady state,
without start-up). Every file is decoded and judged (``framepipe.proof.judge``: frames, states missing,
lost) and decoded once more by the ffmpeg program (``-v error``: any output is a decode error).
Prints a markdown table and writes it to --md, and everything to --json. Exits 0 whether or not the
goal (two / one <= 1.15, medians) is met: it is a measurement.

    python benchmarks/outputs_cpu.py [--rounds 3] [--seconds 20] [--out bench-out/outputs_cpu]
                                     [--md benchmarks/OUTPUTS.md] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from framepipe.bench import run as benchrun
from framepipe.bench.report import machine
from framepipe.proof import judge
from framepipe.proof.testscreen import load_info, start_testscreen
from framepipe.proof.xvfb import VirtualScreen, stop_process

FPS = 60
GOAL = 1.15
OUTPUTS = {"one": ("a.mkv",), "two": ("a.mkv", "b.mp4")}


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


def record(mode: str, folder: Path, seconds: float, env: dict[str, str], info_path: Path) -> dict[str, Any]:
    """One recording with the outputs of ``mode``, measured, and its files checked."""
    paths = [folder / name for name in OUTPUTS[mode]]
    for p in paths:
        p.unlink(missing_ok=True)
    config, stats_path = folder / f"{mode}.toml", folder / f"{mode}.stats.json"
    config.write_text(f"[screen]\nfps = {FPS}\n" + "".join(f'[[output]]\npath = "{p}"\n' for p in paths))
    cmd = [sys.executable, "-m", "framepipe", "record", "--config", str(config), "--duration", f"{seconds:g}",
           "--no-audio", "--no-profile", "--quiet", "--stats-json", str(stats_path)]  # fmt: skip
    before = load()
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
        raise SystemExit(f"outputs_cpu: {mode} recording failed (exit {proc.returncode}): {tail}")
    stats = json.loads(stats_path.read_text())
    base = int(stats["base_time_ns"])
    cpu_s = usage.ru_utime + usage.ru_stime
    return {
        "mode": mode, "cpu_s": round(cpu_s, 3), "cpu_per_s": cpu_s / seconds,
        "cpu_rec_per_s": benchrun.cpu_rate(sampler.cpu, base, base + round(seconds * 1e9)),
        "stages_cpu_s": {k: v.get("cpu_s") for k, v in stats.get("stages", {}).items()},
        "written": stats["frames"]["written"], "dropped": stats["frames"]["dropped"],
        "files": [check_file(p, load_info(info_path), stats) for p in paths], "loadavg": [before, load()],
    }  # fmt: skip


def ratio(two: float | None, one: float | None) -> float | None:
    return None if two is None or not one else two / one


def num(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def markdown(doc: dict[str, Any]) -> str:
    m, med = doc["machine"], doc["median"]
    lines = [
        "# CPU of a second output (one encode, two files)", "",
        f"Command: `{doc['command']}` ({doc['started']} UTC)", "",
        f"Machine: {m['cpu']}, {m['cores_logical']} logical cores, {m['memory_gb']} GiB; {m['system']}. "
        f"Load average before {doc['loadavg_before']}, after {doc['loadavg_after']}.", "",
        f"Each run: {doc['seconds']:g} s of a 1920x1080 Xvfb with the test screen at {FPS} fps, "
        "`framepipe record --config CFG --no-audio --no-profile`; one = a.mkv, two = a.mkv + b.mp4; "
        "rounds interleaved (one, two, one, two ...).", "",
        "| round | CPU s/s one | CPU s/s two | two / one | while recording one / two (ratio) | frames one: a "
        "| frames two: a / b | a = b | missing / lost (one a; two a, b) | dropped one / two | decode errors "
        "| load before |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for i, r in enumerate(doc["rounds"], 1):
        one, two = r["one"], r["two"]
        (oa,), (ta, tb) = one["files"], two["files"]
        errors = sum(f["decode_errors"] for f in (oa, ta, tb))
        same = "yes" if ta["frames"] == tb["frames"] else "**no**"
        lines.append(
            f"| {i} | {one['cpu_per_s']:.3f} | {two['cpu_per_s']:.3f} | {num(r['ratio'], 3)} "
            f"| {num(one['cpu_rec_per_s'], 3)} / {num(two['cpu_rec_per_s'], 3)} ({num(r['ratio_rec'], 3)}) "
            f"| {oa['frames']} | {ta['frames']} / {tb['frames']} | {same} "
            f"| {oa['missing']}/{oa['lost']}; {ta['missing']}/{ta['lost']}, {tb['missing']}/{tb['lost']} "
            f"| {one['dropped']} / {two['dropped']} | {errors} | {one['loadavg'][0][0]} / {two['loadavg'][0][0]} |"
        )
    lines += [
        f"| **median** | {med['cpu_one']:.3f} | {med['cpu_two']:.3f} | **{num(med['ratio'], 3)}** "
        f"| {num(med['cpu_rec_one'], 3)} / {num(med['cpu_rec_two'], 3)} ({num(med['ratio_rec'], 3)}) "
        "| | | | | | | |",
        "", doc["verdict"], "",
        "- CPU s/s: user + system seconds of the whole recorder tree (supervisor and stages, from `os.wait4`'s "
        "rusage, start-up and shutdown included) per recorded second. While recording: the live tree sampled "
        "10/s, its rate from the base time to the end of the recording.",
        "- frames: decoded from each file and judged by the frame codes; missing: test-screen states between "
        "the first and last shown that no frame shows; lost: missing less capture-instant swaps.",
        "- dropped: the pipeline's own count (stats JSON); decode errors: lines of `ffmpeg -v error -i F -f null -`.",
        "",
    ]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="pairs of runs, one then two outputs (default 3)")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each recording (default 20)")
    parser.add_argument("--out", type=Path, default=Path("bench-out/outputs_cpu"), help="recordings, logs")
    parser.add_argument("--md", type=Path, default=Path("benchmarks/OUTPUTS.md"), help="markdown report")
    parser.add_argument("--json", type=Path, help="JSON of every figure (default: outputs_cpu.json in --out)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    folder = args.out.resolve()
    doc: dict[str, Any] = {
        "command": " ".join(["python", "benchmarks/outputs_cpu.py", *(sys.argv[1:] if argv is None else argv)]),
        "started": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(), "seconds": args.seconds,
        "loadavg_before": load(), "rounds": [],
    }  # fmt: skip
    with VirtualScreen(1920, 1080) as screen:
        env = dict(os.environ, DISPLAY=screen.display)
        info_path = folder / "screen.json"
        painter = start_testscreen(screen.display, FPS, info_path=info_path)
        try:
            for i in range(args.rounds):
                runs = {}
                for mode in OUTPUTS:
                    print(f"outputs_cpu: round {i + 1}/{args.rounds}, {mode} output(s)", file=sys.stderr, flush=True)
                    runs[mode] = record(mode, folder, args.seconds, env, info_path)
                one, two = runs["one"], runs["two"]
                doc["rounds"].append({**runs, "ratio": ratio(two["cpu_per_s"], one["cpu_per_s"]),
                                      "ratio_rec": ratio(two["cpu_rec_per_s"], one["cpu_rec_per_s"])})  # fmt: skip
        finally:
            stop_process(painter)
    doc["loadavg_after"] = load()

    def median(values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return statistics.median(known) if known else None

    rounds = doc["rounds"]
    doc["median"] = {key: median([r[key] for r in rounds]) for key in ("ratio", "ratio_rec")}
    for mode in OUTPUTS:
        doc["median"][f"cpu_{mode}"] = median([r[mode]["cpu_per_s"] for r in rounds])
        doc["median"][f"cpu_rec_{mode}"] = median([r[mode]["cpu_rec_per_s"] for r in rounds])
    med = doc["median"]["ratio"]
    within = med is not None and med <= GOAL
    doc["verdict"] = (f"**Goal two / one <= {GOAL}: {'within' if within else 'MISSED'}** (median {num(med, 3)}; "
                      f"while recording {num(doc['median']['ratio_rec'], 3)}).")  # fmt: skip
    text = markdown(doc)
    (args.json or folder / "outputs_cpu.json").write_text(json.dumps(doc, indent=2) + "\n")
    args.md.write_text(text)
    print(text)
    print(doc["verdict"].replace("**", ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
