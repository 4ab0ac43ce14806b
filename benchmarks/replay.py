"""The replay buffer: memory held against bitrate x seconds, flat over a long run, and time from save to file.

On a 1920x1080 Xvfb showing the test screen at 60 fps (``--heavy``: a large noisy area as well, so the
bitrate is a real one), ``framepipe record main.mkv --replay SECONDS --duration D`` runs while this
script asks ``ctl status --json`` every ``--sample`` seconds for what the buffer holds (MB and seconds)
and samples fp-encode's private memory, and asks ``ctl save-replay`` every ``--save-every`` seconds,
timing the answer (it comes once the saved file is closed). The bound is the one the replay issue
sets: 1.2 x (bitrate x seconds) + one keyframe interval, the bitrate being what the encoder wrote
(packets of every track in the main file, per second).

    python benchmarks/replay.py [--seconds 30] [--duration 600] [--heavy] [--md benchmarks/REPLAY.md]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from framepipe.bench.report import machine
from framepipe.proof.testscreen import start_testscreen
from framepipe.proof.xvfb import VirtualScreen
from pipeline.supervisor import private_rss_mb


def ctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "framepipe", "ctl", *args], capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip


def encoder_pid(supervisor: int) -> int | None:
    for child in psutil.Process(supervisor).children():
        if child.name() == "fp-encode":
            return child.pid
    return None


def run(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    main, stats_path = folder / "main.mkv", folder / "stats.json"
    samples: list[dict[str, float]] = []
    saves: list[dict[str, Any]] = []
    with VirtualScreen(1920, 1080) as screen:
        painter = start_testscreen(screen.display, 60, heavy=args.heavy, info_path=folder / "screen.json")
        env = dict(os.environ, DISPLAY=screen.display, XDG_RUNTIME_DIR=str(folder))
        os.environ["XDG_RUNTIME_DIR"] = str(folder)
        cmd = [sys.executable, "-m", "framepipe", "record", str(main), "--no-audio", "--no-profile", "--quiet",
               "--replay", str(args.seconds), "--duration", str(args.duration), "--stats-json", str(stats_path),
               *(["--bitrate", str(args.bitrate)] if args.bitrate else [])]
        proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
        started = time.monotonic()
        next_save = args.save_every
        try:
            while proc.poll() is None:
                time.sleep(args.sample)
                elapsed = time.monotonic() - started
                done = ctl("status", "--json", "--pid", str(proc.pid))
                if done.returncode != 0:
                    continue
                status = json.loads(done.stdout)
                replay = next(o for o in status["output_details"] if o["kind"] == "replay")
                enc = encoder_pid(proc.pid)
                samples.append({"t_s": round(elapsed, 1), "held_mb": replay.get("held_mb", 0.0),
                                "held_data_mb": replay.get("held_data_mb", 0.0),
                                "held_s": replay.get("held_s", 0.0),
                                "encode_private_mb": round(private_rss_mb(enc), 1) if enc else 0.0})  # fmt: skip
                if elapsed >= next_save and elapsed < args.duration - 5:
                    t0 = time.monotonic()
                    saved = ctl("save-replay", "--pid", str(proc.pid))
                    saves.append({"t_s": round(elapsed, 1), "rc": saved.returncode,
                                  "answer_s": round(time.monotonic() - t0, 3), "path": saved.stdout.strip()})
                    next_save += args.save_every
            _, err = proc.communicate(timeout=60)
        finally:
            painter.terminate()
            painter.wait(10)
    stats = json.loads(stats_path.read_text())
    return {"samples": samples, "saves": saves, "stats": stats, "returncode": proc.returncode, "stderr": err}


def report(args: argparse.Namespace, result: dict[str, Any]) -> str:
    stats, samples = result["stats"], result["samples"]
    main = stats["outputs"][0]
    bitrate_mb_s = main["bytes"] / 1e6 / max(1.0, stats["recorded_s"])
    gop_s = 1.0
    bound = 1.2 * bitrate_mb_s * args.seconds + bitrate_mb_s * gop_s
    full = [s for s in samples if s["t_s"] >= args.seconds + 2 * gop_s] or samples
    peak = max(s["held_mb"] for s in full)
    peak_data = max(s["held_data_mb"] for s in full)
    first, last = full[0], full[-1]
    answers = [s["answer_s"] for s in result["saves"] if s["rc"] == 0]
    median = statistics.median(answers) if answers else float("nan")
    lines = [
        f"Command: `python benchmarks/replay.py --seconds {args.seconds:g} --duration {args.duration:g}"
        f"{' --heavy' if args.heavy else ''}{f' --bitrate {args.bitrate}' if args.bitrate else ''}` "
        f"({time.strftime('%Y-%m-%d %H:%M')})",
        "",
        f"Machine: {machine().get('cpu')}, {os.cpu_count()} cores. Recorder exit status {result['returncode']}; "
        f"main file {main['frames']} frames, dropped {stats['frames']['dropped']}.",
        "",
        "| what | value |",
        "|---|---|",
        f"| bitrate written (every track) | {bitrate_mb_s * 8:.2f} Mb/s ({bitrate_mb_s:.3f} MB/s) |",
        f"| bound: 1.2 x bitrate x {args.seconds:g} s + one keyframe interval | {bound:.2f} MB |",
        f"| replay held, peak once full: packets and their bookkeeping | {peak:.2f} MB ({peak / bound:.2f} of the "
        f"bound) |",
        f"| ... of which packet data | {peak_data:.2f} MB ({peak_data / bound:.2f} of the bound) |",
        f"| replay held, first / last sample once full | {first['held_mb']:.2f} / {last['held_mb']:.2f} MB, "
        f"{first['held_s']:.1f} / {last['held_s']:.1f} s |",
        f"| fp-encode private memory, first / last sample once full | {first['encode_private_mb']:.1f} / "
        f"{last['encode_private_mb']:.1f} MB |",
        f"| saves | {len(answers)} of {len(result['saves'])} answered; save to closed file: median "
        f"{median:.3f} s, max {max(answers, default=float('nan')):.3f} s |",
        "",
        f"Within the bound: {'yes' if peak <= bound else 'NO'}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="replay length (default 30)")
    parser.add_argument("--duration", type=float, default=600.0, help="recording length (default 600)")
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between samples (default 10)")
    parser.add_argument("--save-every", type=float, default=120.0, help="seconds between saves (default 120)")
    parser.add_argument("--heavy", action="store_true", help="add a large noisy moving area (a real bitrate)")
    parser.add_argument("--bitrate", type=int, help="cap the video bitrate (kb/s), as a stream would")
    parser.add_argument("--md", type=Path, default=Path(__file__).parent / "REPLAY.md")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fp-replay-") as tmp:
        result = run(args, Path(tmp))
    text = report(args, result)
    print(text)
    args.md.write_text(f"# Replay buffer memory and save time\n\n{text}", encoding="utf-8")
    if args.json:
        args.json.write_text(json.dumps({k: v for k, v in result.items() if k != "stderr"}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
