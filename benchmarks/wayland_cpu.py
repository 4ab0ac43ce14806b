"""CPU of recording a Wayland desktop (sway, wlroots screencopy) against recording X11 (Xvfb, MIT-SHM) at 1280x720.

Both desktops run through the whole benchmark, each showing the moving test screen at 60 fps (on sway in a
fullscreen window through Xwayland): headless sway (``framepipe.proof.sway``, one 1280x720 output) and a
1280x720 Xvfb. Each round records ``--seconds`` of X11 (DISPLAY set, WAYLAND_DISPLAY unset: the xshm grab)
then of sway (WAYLAND_DISPLAY set, DISPLAY unset: screencopy, chosen by itself), with the same
``framepipe record --config CFG`` as benchmarks/outputs_cpu.py (shared: benchmarks/rounds.py), so a machine
that gets busier or quieter shows in both alike.

Figures: CPU s/s of the whole recorder tree (``os.wait4`` rusage, start-up included; and the live tree
while recording); the capture process's own CPU per captured frame (its stats: ``cpu_s`` / captured); the
display server's CPU per second over the same recording (Xvfb; sway with its Xwayland), which is where
either zero-copy grab spends its copy. Every file is judged (frames, lost, decode errors).

    python benchmarks/wayland_cpu.py [--rounds 3] [--seconds 20] [--out bench-out/wayland_cpu]
                                     [--md benchmarks/WAYLAND.md] [--json FILE]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import psutil
from rounds import (
    FPS,
    bench_parser,
    check_file,
    conclude,
    interleave,
    load,
    measure,
    median,
    medians,
    new_doc,
    num,
    output_folder,
)

from framepipe.proof.sway import Sway
from framepipe.proof.testscreen import load_info, start_testscreen
from framepipe.proof.xvfb import VirtualScreen, stop_process

GOAL = 1.1
WIDTH, HEIGHT = 1280, 720
REFRESH_HZ = 1000  # as tests/test_wayland.py: see NOTES.md (wlroots 0.15's headless frame timer)


def server_cpu(pids: list[int]) -> float:
    """User + system seconds so far of these processes and their children (the display server)."""
    total = 0.0
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            for p in [proc, *proc.children(recursive=True)]:
                t = p.cpu_times()
                total += t.user + t.system
        except psutil.Error:
            pass
    return total


def record(mode: str, folder: Path, seconds: float, envs: dict[str, dict[str, str]],
           servers: dict[str, list[int]], infos: dict[str, Path]) -> dict[str, Any]:  # fmt: skip
    """One recording of ``mode`` (x11 or sway), measured, its file judged."""
    path = folder / f"{mode}.mkv"
    path.unlink(missing_ok=True)
    config = folder / f"{mode}.toml"
    config.write_text(f'[screen]\nfps = {FPS}\n[[output]]\npath = "{path}"\n')
    before, server0 = load(), server_cpu(servers[mode])
    stats, cpu_s, cpu_rec = measure(config, folder, mode, seconds, envs[mode], "wayland_cpu")
    server_s = server_cpu(servers[mode]) - server0
    screen = stats["stages"]["screen"]
    captured = max(stats["frames"]["captured"], 1)
    return {
        "mode": mode, "cpu_s": round(cpu_s, 3), "cpu_per_s": cpu_s / seconds, "cpu_rec_per_s": cpu_rec,
        "capture_cpu_ms_per_frame": (screen.get("cpu_s") or 0) * 1e3 / captured,
        "encode_cpu_ms_per_frame": (stats["stages"]["encode"].get("cpu_s") or 0) * 1e3
        / max(stats["frames"].get("encoded") or 0, 1),
        "grab_ms_mean": screen["stats"].get("grab_ms_mean"), "backend": screen["info"].get("backend"),
        "server_cpu_per_s": server_s / seconds,
        "stages_cpu_s": {k: v.get("cpu_s") for k, v in stats.get("stages", {}).items()},
        "written": stats["frames"]["written"], "dropped": stats["frames"]["dropped"],
        "files": [check_file(path, load_info(infos[mode]), stats)], "loadavg": [before, load()],
    }  # fmt: skip


def markdown(doc: dict[str, Any]) -> str:
    m, med = doc["machine"], doc["median"]
    lines = [
        "# CPU of recording Wayland (sway, screencopy) beside X11 (Xvfb, MIT-SHM), 1280x720 at 60 fps", "",
        f"Command: `{doc['command']}` ({doc['started']} UTC)", "",
        f"Machine: {m['cpu']}, {m['cores_logical']} logical cores, {m['memory_gb']} GiB; {m['system']}. "
        f"Load average before {doc['loadavg_before']}, after {doc['loadavg_after']}.", "",
        f"Each run: {doc['seconds']:g} s of the test screen at {FPS} fps, `framepipe record --config CFG --no-audio "
        "--no-profile`; x11 = a 1280x720 Xvfb (DISPLAY set), sway = headless sway with one 1280x720 output at "
        f"{REFRESH_HZ} Hz, the test screen fullscreen through Xwayland (WAYLAND_DISPLAY set, DISPLAY unset); both "
        "desktops paint throughout; rounds interleaved (x11, sway, x11, sway ...).", "",
        "| round | CPU s/s x11 | CPU s/s sway | sway / x11 | while recording x11 / sway (ratio) "
        "| capture CPU ms/frame x11 / sway | encode CPU ms/frame x11 / sway | grab ms mean x11 / sway "
        "| server CPU s/s Xvfb / sway+Xwayland | frames x11 / sway | missing / lost x11; sway | dropped x11 / sway "
        "| decode errors | load before |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for i, r in enumerate(doc["rounds"], 1):
        x, s = r["x11"], r["sway"]
        (xf,), (sf,) = x["files"], s["files"]
        lines.append(
            f"| {i} | {x['cpu_per_s']:.3f} | {s['cpu_per_s']:.3f} | {num(r['ratio'], 3)} "
            f"| {num(x['cpu_rec_per_s'], 3)} / {num(s['cpu_rec_per_s'], 3)} ({num(r['ratio_rec'], 3)}) "
            f"| {x['capture_cpu_ms_per_frame']:.3f} / {s['capture_cpu_ms_per_frame']:.3f} "
            f"| {x['encode_cpu_ms_per_frame']:.2f} / {s['encode_cpu_ms_per_frame']:.2f} "
            f"| {num(x['grab_ms_mean'])} / {num(s['grab_ms_mean'])} "
            f"| {x['server_cpu_per_s']:.3f} / {s['server_cpu_per_s']:.3f} | {xf['frames']} / {sf['frames']} "
            f"| {xf['missing']}/{xf['lost']}; {sf['missing']}/{sf['lost']} | {x['dropped']} / {s['dropped']} "
            f"| {xf['decode_errors'] + sf['decode_errors']} | {x['loadavg'][0][0]} / {s['loadavg'][0][0]} |"
        )
    lines += [
        f"| **median** | {med['cpu_x11']:.3f} | {med['cpu_sway']:.3f} | **{num(med['ratio'], 3)}** "
        f"| {num(med['cpu_rec_x11'], 3)} / {num(med['cpu_rec_sway'], 3)} ({num(med['ratio_rec'], 3)}) "
        f"| {num(med['capture_ms_x11'], 3)} / {num(med['capture_ms_sway'], 3)} | | "
        f"| {num(med['server_x11'], 3)} / {num(med['server_sway'], 3)} | | | | | |",
        "", doc["verdict"], "",
        f"Backends: x11 `{doc['rounds'][0]['x11']['backend']}`, sway `{doc['rounds'][0]['sway']['backend']}`.", "",
        "- CPU s/s: user + system seconds of the whole recorder tree (supervisor and stages, from `os.wait4`'s "
        "rusage, start-up and shutdown included) per recorded second. While recording: the live tree sampled "
        "10/s, its rate from the base time to the end of the recording.",
        "- capture CPU ms/frame: the fp-screen process's own CPU (its stats) over the frames it captured; grab ms "
        "mean: wall time a grab took (screencopy: request to `ready`, mostly waiting for the compositor's frame); "
        "encode CPU ms/frame: fp-encode's CPU over the frames it encoded (a run that dropped frames encodes "
        "fewer: its CPU s/s is lower for that reason, not for its backend).",
        "- server CPU s/s: the display server (Xvfb; sway and its Xwayland) over the same recording, painting the "
        "test screen included: not part of the ratio, where the copy into the ring is paid by either grab.",
        "- frames: decoded and judged by the frame codes; missing: states between the first and last shown that "
        "no frame shows; lost: missing less capture-instant swaps; dropped: the pipeline's own count.",
        "",
    ]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__, "wayland_cpu", "WAYLAND", "pairs of runs, x11 then sway")
    args = parser.parse_args(argv)
    folder = output_folder(args)
    doc = new_doc("wayland_cpu.py", argv, seconds=args.seconds)
    infos = {"x11": folder / "x11.screen.json", "sway": folder / "sway.screen.json"}
    with VirtualScreen(WIDTH, HEIGHT) as xvfb, Sway(WIDTH, HEIGHT, REFRESH_HZ) as sway:
        base = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
        envs = {"x11": {**base, "DISPLAY": xvfb.display}, "sway": sway.env()}
        servers = {"x11": [xvfb.pid or 0], "sway": [sway.pid or 0]}
        painters = [start_testscreen(xvfb.display, FPS, info_path=infos["x11"]),
                    start_testscreen(sway.x_display, FPS, info_path=infos["sway"], window="full")]  # fmt: skip
        try:
            doc["rounds"] = interleave("wayland_cpu", args.rounds, "x11", "sway",
                                       lambda mode: record(mode, folder, args.seconds, envs, servers, infos))
        finally:
            for painter in painters:
                stop_process(painter)
    doc["loadavg_after"] = load()
    doc["median"] = medians(doc["rounds"], ("x11", "sway"))
    for mode in ("x11", "sway"):
        doc["median"][f"capture_ms_{mode}"] = median([r[mode]["capture_cpu_ms_per_frame"] for r in doc["rounds"]])
        doc["median"][f"server_{mode}"] = median([r[mode]["server_cpu_per_s"] for r in doc["rounds"]])
    return conclude(doc, args, folder, "wayland_cpu", GOAL, "sway / x11", markdown)


if __name__ == "__main__":
    sys.exit(main())
