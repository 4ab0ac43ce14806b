"""CPU of a live stream beside the file, and glass-to-glass latency to a viewer, on loopback (nginx-rtmp).

On a 1920x1080 virtual screen showing the moving test screen at 60 fps, it records ``--seconds`` with
``framepipe record --config CFG`` alternately with a file alone and with the file and a stream to a local
nginx-rtmp (file, file+stream, file, ... for ``--rounds``), so a machine that gets busier or quieter shows in
both alike. Both configs set the encoder as streaming does (2 s keyframes, 6000 kb/s cap), so the only
difference is the output. CPU is measured as ``benchmarks/outputs_cpu.py`` does (``os.wait4``'s rusage of the
recorder tree, and the tree sampled while recording); nginx is not counted (the server is elsewhere in use).

Latency: one more recording with the stream, watched by a viewer in this process (PyAV, no buffering, the
decoder on one thread). The test screen paints state n at a known instant (its info file's ``base_ns`` and
fps, plus the measured paint delay); for each frame the viewer decodes, latency = the clock when it was
decoded minus the paint time of the state it shows. The first ``--warmup`` seconds of viewing are left out
(the viewer joins mid-interval and its decoder starts on the next keyframe).

    python benchmarks/stream.py [--rounds 3] [--seconds 20] [--latency-seconds 20] [--out bench-out/stream]
                                [--md benchmarks/STREAM.md] [--json FILE]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
from rounds import bench_parser, check_file, interleave, load, measure, medians, new_doc, num, output_folder

from framepipe.proof import judge
from framepipe.proof.rtmp import RtmpServer
from framepipe.proof.testscreen import CODE_HEIGHT, CODE_WIDTH, load_info, start_testscreen
from framepipe.proof.xvfb import VirtualScreen, stop_process
from pipeline.clock import now_ns

FPS = 60
GOAL_CPU = 1.15
GOAL_LATENCY_MS = 1000.0
ENCODE = "[encode]\ngop_seconds = 2.0\nmax_kbps = 6000\n"  # as streaming sets it, in both modes


def config(folder: Path, mode: str, url: str) -> Path:
    path = folder / f"{mode}.toml"
    stream = f'[[output]]\nkind = "stream"\nurl = "{url}"\n' if mode == "stream" else ""
    path.write_text(f'[screen]\nfps = {FPS}\n{ENCODE}[[output]]\npath = "{folder / "a.mkv"}"\n{stream}')
    return path


def record(mode: str, folder: Path, seconds: float, env: dict[str, str], url: str) -> dict[str, Any]:
    """One recording (file, or file + stream), its CPU from outside, and its stats."""
    (folder / "a.mkv").unlink(missing_ok=True)
    stats, cpu_s, cpu_rec = measure(config(folder, mode, url), folder, mode, seconds, env, "stream bench")
    return {"mode": mode, "cpu_per_s": cpu_s / seconds, "loadavg": load(), "stats": stats, "cpu_rec_per_s": cpu_rec}


class Viewer(threading.Thread):
    """Plays the stream live and notes, for each decoded frame, when it was decoded and the code it shows."""

    def __init__(self, url: str, code_rect: list[int], seconds: float) -> None:
        super().__init__(daemon=True)
        self.url, self.seconds = url, seconds
        self.x, self.y = int(code_rect[0]), int(code_rect[1])
        self.seen: list[tuple[int, int | None]] = []  # (decoded at, code)
        self.error = ""

    def run(self) -> None:
        options = {"fflags": "nobuffer", "flags": "low_delay", "probesize": "32768", "analyzeduration": "0"}
        try:
            with av.open(self.url, options=options, timeout=(15, 10)) as player:
                video = player.streams.video[0]
                video.thread_type, video.thread_count = "SLICE", 1
                end = None
                for packet in player.demux(video):
                    for frame in packet.decode():
                        t = now_ns()
                        plane = frame.planes[0]
                        luma = np.frombuffer(memoryview(plane), np.uint8).reshape(-1, plane.line_size)
                        self.seen.append((t, judge.read_code(luma[self.y:self.y + CODE_HEIGHT,
                                                                  self.x:self.x + CODE_WIDTH])))  # fmt: skip
                        end = end or t + round(self.seconds * 1e9)
                    if end is not None and now_ns() > end:
                        return
        except (OSError, av.FFmpegError) as exc:
            self.error = str(exc)


def latency(folder: Path, seconds: float, warmup: float, env: dict[str, str], url: str, info_path: Path,
            painter: subprocess.Popen[bytes]) -> dict[str, Any]:  # fmt: skip
    """One recording with the stream watched live; the latency of each frame the viewer decoded."""
    info = load_info(info_path)
    viewer = Viewer(url, info["code_rect"], seconds - 4)
    viewer.start()  # it waits for the publisher (nginx keeps an idle player)
    run = record("stream", folder, seconds, env, url)
    viewer.join(30)
    stop_process(painter)  # its paint times, measured, are written now
    paints = json.loads(Path(f"{info_path}.stats").read_text())
    start = viewer.seen[0][0] + round(warmup * 1e9) if viewer.seen else 0
    lat, unreadable = [], 0
    for t, code in viewer.seen:
        if t < start:
            continue
        if code is None:
            unreadable += 1
            continue
        guess = (t - int(info["base_ns"])) * FPS / 1e9  # the state on screen when it was decoded
        n = code + judge.CODE_MODULO * round((guess - code) / judge.CODE_MODULO)
        lat.append((t - judge.paint_time_ns(n, info, paints)) / 1e6)
    arr = np.array(lat)
    stream = run["stats"]["outputs"][1]
    return {
        "frames_decoded": len(viewer.seen), "frames_measured": len(lat), "unreadable": unreadable,
        "error": viewer.error, "p50_ms": float(np.percentile(arr, 50)) if lat else None,
        "p95_ms": float(np.percentile(arr, 95)) if lat else None, "max_ms": float(arr.max()) if lat else None,
        "min_ms": float(arr.min()) if lat else None, "encoder_latency_ms": run["stats"]["latency_ms"],
        "stream": {k: stream.get(k) for k in ("frames", "bytes_sent", "bitrate_kbps", "dropped", "reconnects")},
    }  # fmt: skip


def markdown(doc: dict[str, Any]) -> str:
    m, med, lat = doc["machine"], doc["median"], doc["latency"]
    lines = [
        "# A live stream beside the file: CPU, and latency to a viewer", "",
        f"Command: `{doc['command']}` ({doc['started']} UTC)", "",
        f"Machine: {m['cpu']}, {m['cores_logical']} logical cores, {m['memory_gb']} GiB; {m['system']}. "
        f"Load average before {doc['loadavg_before']}, after {doc['loadavg_after']}.", "",
        f"Each run: {doc['seconds']:g} s of a 1920x1080 Xvfb with the test screen at {FPS} fps, "
        "`framepipe record --config CFG --no-audio --no-profile`, the encoder as streaming sets it (2 s keyframes, "
        "6000 kb/s cap) in both; file = a.mkv, stream = a.mkv + rtmp to nginx-rtmp on 127.0.0.1; rounds "
        "interleaved (file, stream, file, stream ...).", "",
        "| round | CPU s/s file | CPU s/s file+stream | ratio | while recording (ratio) | frames: file / stream "
        "| lost (file) | stream dropped | stream kb/s | load before |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for i, r in enumerate(doc["rounds"], 1):
        one, two = r["file"], r["stream"]
        out = two["stats"]["outputs"][1]
        lines.append(
            f"| {i} | {one['cpu_per_s']:.3f} | {two['cpu_per_s']:.3f} | {num(r['ratio'], 3)} "
            f"| {num(one['cpu_rec_per_s'], 3)} / {num(two['cpu_rec_per_s'], 3)} ({num(r['ratio_rec'], 3)}) "
            f"| {two['file']['frames']} / {out['frames']} | {one['file']['lost']} / {two['file']['lost']} "
            f"| {sum(out['dropped'].values())} | {out.get('bitrate_kbps')} "
            f"| {one['loadavg'][0]} / {two['loadavg'][0]} |"
        )
    lines += [
        f"| **median** | {num(med['cpu_file'], 3)} | {num(med['cpu_stream'], 3)} | **{num(med['ratio'], 3)}** "
        f"| ({num(med['ratio_rec'], 3)}) | | | | | |", "",
        f"Latency, glass to glass (paint on the screen to a decoded frame in a viewer on the same machine): "
        f"p50 **{num(lat['p50_ms'], 0)} ms**, p95 **{num(lat['p95_ms'], 0)} ms** (min {num(lat['min_ms'], 0)}, "
        f"max {num(lat['max_ms'], 0)}) over {lat['frames_measured']} frames of a {doc['latency_seconds']:g} s "
        f"recording, after {doc['warmup']:g} s of viewing; {lat['unreadable']} unreadable. Capture to packet in "
        f"the encoder: p50 {lat['encoder_latency_ms']['p50']} ms, p99 {lat['encoder_latency_ms']['p99']} ms.", "",
        doc["verdict"], "",
        "- CPU s/s: user + system seconds of the whole recorder tree per recorded second (`os.wait4`); while "
        "recording: the live tree sampled 10/s between its base time and the end. nginx is not counted.",
        "- frames: the file's, judged by the frame codes, and the packets the stream sent; lost: states missing "
        "from the file, less capture-instant swaps; stream dropped: packets never sent (any cause).",
        "- The viewer: PyAV with `fflags=nobuffer`, `flags=low_delay`, a small probe, one decoding thread; "
        "latency = `monotonic_ns()` at decode - the paint time of the shown state (deadline + measured delay).",
        "",
    ]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__, "stream", "STREAM", "pairs of runs, file then file+stream")
    parser.add_argument("--latency-seconds", type=float, default=20.0, help="the latency recording (default 20)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of viewing left out (default 2)")
    args = parser.parse_args(argv)
    folder = output_folder(args)
    doc = new_doc("stream.py", argv, seconds=args.seconds, latency_seconds=args.latency_seconds, warmup=args.warmup)
    with VirtualScreen(1920, 1080) as screen, RtmpServer() as server:
        env = dict(os.environ, DISPLAY=screen.display)
        info_path = folder / "screen.json"
        painter = start_testscreen(screen.display, FPS, info_path=info_path)
        try:
            def one(mode: str) -> dict[str, Any]:
                run = record(mode, folder, args.seconds, env, server.url("bench"))
                return {**run, "file": check_file(folder / "a.mkv", load_info(info_path), run["stats"])}

            doc["rounds"] = interleave("stream bench", args.rounds, "file", "stream", one)
            print("stream bench: latency", file=sys.stderr, flush=True)
            time.sleep(1)
            doc["latency"] = latency(folder, args.latency_seconds, args.warmup, env, server.url("live"), info_path,
                                     painter)  # fmt: skip
        finally:
            stop_process(painter)
    doc["loadavg_after"] = load()

    rounds = doc["rounds"]
    doc["median"] = medians(rounds, ("file", "stream"))
    cpu, p95 = doc["median"]["ratio"], doc["latency"]["p95_ms"]
    cpu_ok, lat_ok = cpu is not None and cpu <= GOAL_CPU, p95 is not None and p95 < GOAL_LATENCY_MS
    doc["verdict"] = (f"**Goals: CPU file+stream / file <= {GOAL_CPU}: {'within' if cpu_ok else 'MISSED'} "
                      f"(median {num(cpu, 3)}); latency under {GOAL_LATENCY_MS:.0f} ms: "
                      f"{'within' if lat_ok else 'MISSED'} (p95 {num(p95, 0)} ms).**")  # fmt: skip
    for r in rounds:
        for mode in ("file", "stream"):
            r[mode]["stats"] = {k: r[mode]["stats"][k] for k in ("frames", "outputs", "latency_ms", "warnings")}
    text = markdown(doc)
    (args.json or folder / "stream.json").write_text(json.dumps(doc, indent=2) + "\n")
    args.md.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
