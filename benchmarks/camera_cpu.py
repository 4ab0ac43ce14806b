"""CPU cost of a camera in the corner: a 1080p60 recording with ``--camera`` against the same without it.

On a 1920x1080 virtual screen showing the moving test screen at 60 fps, with a green test camera
(ffmpeg pushing ``color=green:size=640x360:rate=30`` in H.264 to a local nginx-rtmp, running through
both kinds of run alike), it records ``--seconds`` with ``framepipe record --config CFG`` alternately
without the camera and with it (``[camera] source = rtmp://127.0.0.1:PORT/live/cam``: fp-camera decodes
and scales, the encoder pastes), A, B, A, B ... for ``--rounds``. CPU is the recorder's whole tree,
measured as in ``outputs_cpu.py`` (``rounds.measure``: ``os.wait4``'s rusage, and the live tree sampled
while recording); the pusher and nginx are not the recorder's and are not counted. Every file is judged
(frame codes, decode errors), and the camera's files also by their corner: the share of frames, sampled
every half second after the first second, whose box is green. Exits 0 whether or not the goal
(camera / screen <= 1.15, medians) is met: it is a measurement.

    python benchmarks/camera_cpu.py [--rounds 3] [--seconds 20] [--shape rect|circle]
                                    [--out bench-out/camera_cpu] [--md benchmarks/CAMERA.md] [--json FILE]
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import av
from rounds import (
    FPS,
    bench_parser,
    check_file,
    conclude,
    interleave,
    load,
    measure,
    medians,
    new_doc,
    num,
    output_folder,
)

from framepipe.proof.rtmp import RtmpServer, push_test_camera
from framepipe.proof.testscreen import load_info, start_testscreen
from framepipe.proof.xvfb import VirtualScreen, stop_process
from pipeline.config import CameraConfig
from stages.video.corner import Box, overlay_box

GOAL = 1.15
MODES = ("screen", "camera")


def green_share(path: Path, box: Box) -> float:
    """The share of frames (every 30th, from 1 s on) whose box, 8 px in, is the camera's green."""
    seen = shown = 0
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i % 30 or (frame.time or 0.0) < 1.0:
                continue
            rows, cols = slice(box.y + 8, box.y + box.height - 8), slice(box.x + 8, box.x + box.width - 8)
            rgb = frame.to_ndarray(format="rgb24")[rows, cols]
            r, g, b = rgb.reshape(-1, 3).mean(axis=0)
            seen += 1
            shown += bool(g > 100 and r < 40 and b < 40)
    return shown / seen if seen else 0.0


def record(mode: str, folder: Path, seconds: float, env: dict[str, str], info_path: Path, url: str,
           shape: str) -> dict[str, Any]:  # fmt: skip
    path = folder / f"{mode}.mkv"
    path.unlink(missing_ok=True)
    config = folder / f"{mode}.toml"
    camera = f'[camera]\nsource = "{url}"\nshape = "{shape}"\n' if mode == "camera" else ""
    config.write_text(f'[screen]\nfps = {FPS}\n{camera}[[output]]\npath = "{path}"\n')
    before = load()
    stats, cpu_s, cpu_rec = measure(config, folder, mode, seconds, env, "camera_cpu")
    box = overlay_box(CameraConfig(source=url, shape=shape), 1920, 1080)
    enc = stats["stages"]["encode"]["stats"]
    return {
        "mode": mode, "cpu_s": round(cpu_s, 3), "cpu_per_s": cpu_s / seconds, "cpu_rec_per_s": cpu_rec,
        "stages_cpu_s": {k: v.get("cpu_s") for k, v in stats.get("stages", {}).items()},
        "written": stats["frames"]["written"], "dropped": stats["frames"]["dropped"],
        "file": check_file(path, load_info(info_path), stats), "loadavg": [before, load()],
        "green": green_share(path, box) if mode == "camera" else None,
        "camera": {k: enc.get(k) for k in ("camera_pictures", "camera_shown", "camera_not_shown")},
    }  # fmt: skip


def per_frame(run: dict[str, Any]) -> float:
    return 1000 * run["cpu_s"] / max(1, run["file"]["frames"])


def markdown(doc: dict[str, Any]) -> str:
    m, med = doc["machine"], doc["median"]
    lines = [
        "# CPU of a camera in the corner (1080p60, with and without `--camera`)", "",
        f"Command: `{doc['command']}` ({doc['started']} UTC)", "",
        f"Machine: {m['cpu']}, {m['cores_logical']} logical cores, {m['memory_gb']} GiB; {m['system']}. "
        f"Load average before {doc['loadavg_before']}, after {doc['loadavg_after']}.", "",
        f"Each run: {doc['seconds']:g} s of a 1920x1080 Xvfb with the test screen at {FPS} fps, "
        "`framepipe record --config CFG --no-audio --no-profile`; camera = the same with `[camera] source = "
        f"rtmp://127.0.0.1:PORT/live/cam` ({doc['shape']}, bottom-right, 25 %), a green 640x360 H.264 camera at "
        "30 fps pushed by ffmpeg to nginx-rtmp through every run; rounds interleaved (screen, camera, ...).", "",
        "| round | CPU s/s screen | CPU s/s camera | camera / screen | while recording screen / camera (ratio) "
        "| fp-camera CPU s | CPU ms a frame written screen / camera | frames screen / camera "
        "| missing / lost (screen; camera) | dropped screen / camera "
        "| corner green | decode errors | load before |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for i, r in enumerate(doc["rounds"], 1):
        a, b = r["screen"], r["camera"]
        fa, fb = a["file"], b["file"]
        lines.append(
            f"| {i} | {a['cpu_per_s']:.3f} | {b['cpu_per_s']:.3f} | {num(r['ratio'], 3)} "
            f"| {num(a['cpu_rec_per_s'], 3)} / {num(b['cpu_rec_per_s'], 3)} ({num(r['ratio_rec'], 3)}) "
            f"| {num(b['stages_cpu_s'].get('camera'), 2)} "
            f"| {per_frame(a):.2f} / {per_frame(b):.2f} | {fa['frames']} / {fb['frames']} "
            f"| {fa['missing']}/{fa['lost']}; {fb['missing']}/{fb['lost']} | {a['dropped']} / {b['dropped']} "
            f"| {b['green']:.0%} | {fa['decode_errors'] + fb['decode_errors']} "
            f"| {a['loadavg'][0][0]} / {b['loadavg'][0][0]} |"
        )
    lines += [
        f"| **median** | {med['cpu_screen']:.3f} | {med['cpu_camera']:.3f} | **{num(med['ratio'], 3)}** "
        f"| {num(med['cpu_rec_screen'], 3)} / {num(med['cpu_rec_camera'], 3)} ({num(med['ratio_rec'], 3)}) "
        "| | | | | | | | |",
        "", doc["verdict"], "",
        "- CPU s/s: user + system seconds of the whole recorder tree (supervisor and stages, from `os.wait4`'s "
        "rusage, start-up and shutdown included) per recorded second. While recording: the live tree sampled "
        "10/s, its rate from the base time to the end of the recording. nginx and the pushing ffmpeg are not "
        "counted (they run through both kinds of run).",
        "- frames: decoded from each file and judged by the frame codes (never covered by the camera); missing: "
        "test-screen states between the first and last shown that no frame shows; lost: missing less swaps.",
        "- CPU ms a frame written: the whole tree's CPU over the frames in the file (fairer than CPU s/s when a "
        "loaded machine made one run drop frames: fewer frames encoded is less CPU).",
        "- corner green: frames sampled every 30th from 1 s on whose camera box (8 px in) is green.",
        "- dropped: the pipeline's own count (stats JSON); decode errors: lines of `ffmpeg -v error -i F -f null -`.",
        "",
    ]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__, "camera_cpu", "CAMERA", "pairs of runs, without then with the camera")
    parser.add_argument("--shape", choices=("rect", "circle"), default="rect", help="the overlay's shape")
    args = parser.parse_args(argv)
    folder = output_folder(args)
    doc = new_doc("camera_cpu.py", argv, seconds=args.seconds, shape=args.shape)
    with VirtualScreen(1920, 1080) as screen, RtmpServer() as server:
        url = server.url("cam")
        pusher = push_test_camera(url)
        time.sleep(1.0)
        env = dict(os.environ, DISPLAY=screen.display)
        info_path = folder / "screen.json"
        painter = start_testscreen(screen.display, FPS, info_path=info_path)
        try:
            doc["rounds"] = interleave("camera_cpu", args.rounds, *MODES,
                                       lambda mode: record(mode, folder, args.seconds, env, info_path, url,
                                                           args.shape))  # fmt: skip
        finally:
            stop_process(painter)
            stop_process(pusher)
    doc["loadavg_after"] = load()
    doc["median"] = medians(doc["rounds"], MODES)
    return conclude(doc, args, folder, "camera_cpu", GOAL, "camera / screen", markdown)


if __name__ == "__main__":
    sys.exit(main())
