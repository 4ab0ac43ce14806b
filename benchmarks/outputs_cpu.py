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

import os
import sys
from pathlib import Path
from typing import Any

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

from framepipe.proof.testscreen import load_info, start_testscreen
from framepipe.proof.xvfb import VirtualScreen, stop_process

GOAL = 1.15
OUTPUTS = {"one": ("a.mkv",), "two": ("a.mkv", "b.mp4")}


def record(mode: str, folder: Path, seconds: float, env: dict[str, str], info_path: Path) -> dict[str, Any]:
    """One recording with the outputs of ``mode``, measured, and its files checked."""
    paths = [folder / name for name in OUTPUTS[mode]]
    for p in paths:
        p.unlink(missing_ok=True)
    config = folder / f"{mode}.toml"
    config.write_text(f"[screen]\nfps = {FPS}\n" + "".join(f'[[output]]\npath = "{p}"\n' for p in paths))
    before = load()
    stats, cpu_s, cpu_rec = measure(config, folder, mode, seconds, env, "outputs_cpu")
    return {
        "mode": mode, "cpu_s": round(cpu_s, 3), "cpu_per_s": cpu_s / seconds, "cpu_rec_per_s": cpu_rec,
        "stages_cpu_s": {k: v.get("cpu_s") for k, v in stats.get("stages", {}).items()},
        "written": stats["frames"]["written"], "dropped": stats["frames"]["dropped"],
        "files": [check_file(p, load_info(info_path), stats) for p in paths], "loadavg": [before, load()],
    }  # fmt: skip


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
    parser = bench_parser(__doc__, "outputs_cpu", "OUTPUTS", "pairs of runs, one then two outputs")
    args = parser.parse_args(argv)
    folder = output_folder(args)
    doc = new_doc("outputs_cpu.py", argv, seconds=args.seconds)
    with VirtualScreen(1920, 1080) as screen:
        env = dict(os.environ, DISPLAY=screen.display)
        info_path = folder / "screen.json"
        painter = start_testscreen(screen.display, FPS, info_path=info_path)
        try:
            doc["rounds"] = interleave("outputs_cpu", args.rounds, "one", "two",
                                       lambda mode: record(mode, folder, args.seconds, env, info_path))
        finally:
            stop_process(painter)
    doc["loadavg_after"] = load()

    doc["median"] = medians(doc["rounds"], tuple(OUTPUTS))
    return conclude(doc, args, folder, "outputs_cpu", GOAL, "two / one", markdown)


if __name__ == "__main__":
    sys.exit(main())
