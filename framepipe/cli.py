"""The ``framepipe`` command: record, ctl, plan, demo, bench, tune, devices, gui.

Every mistake people can fix ends as one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, NoReturn

from pipeline import config as cfg
from pipeline.errors import Cancelled, ConfigError, FramepipeError


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line, with exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def region(text: str) -> tuple[int, ...]:
    """Parse X,Y,W,H."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4:
        raise argparse.ArgumentTypeError(f"--region takes X,Y,WIDTH,HEIGHT in pixels, e.g. 0,0,1280,720, not {text!r}")
    return values


def positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds above 0, not {text!r}")
    return value


def megabytes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of megabytes above 0, not {text!r}")
    return value


def camera_overlay(text: str) -> dict[str, Any]:
    try:
        return cfg.parse_overlay(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--camera-overlay ")) from None


def add_pipeline_flags(parser: argparse.ArgumentParser) -> None:
    """Flags that override the pipeline config (record and demo)."""
    parser.add_argument("--fps", type=float, help="frames per second (default 60)")
    parser.add_argument("--monitor", type=int, help="monitor number from `framepipe devices` (default 1)")
    parser.add_argument("--region", type=region, help="record only X,Y,WIDTH,HEIGHT of the monitor")
    parser.add_argument("--window", metavar="WHAT",
                        help="record one window, followed as it moves, covered or resized: its id (0x... or "
                        "decimal), a title or class substring, or pick (click it); see `framepipe devices`")
    parser.add_argument("--backend", help="grab backend: auto (default: screencopy, else the portal, on Wayland; "
                        "xshm on X11), screencopy, portal, x11, xshm, mss")
    parser.add_argument("--config", help="pipeline config file (TOML); flags override it")
    parser.add_argument("--no-profile", action="store_true",
                        help="ignore this machine's tuned profile (`framepipe tune`); by default the --config "
                        "file and flags override it")
    parser.add_argument("--encoder", help="video encoder (default libx264; one that does not open falls back)")
    parser.add_argument("--preset", help="encoder speed preset (libx264: ultrafast ... veryslow)")
    parser.add_argument("--crf", type=int, help="quality: lower is better, 0-51 (default 23)")
    parser.add_argument("--bitrate", type=int, metavar="KBPS",
                        help="cap the video bitrate (x264 VBV); default none, 6000 when streaming")
    parser.add_argument("--output-height", type=int, metavar="PIXELS",
                        help="scale the video down to this height, keeping the aspect (default: as captured)")
    parser.add_argument("--vfr", action="store_true", help="keep capture times (variable frame rate)")
    parser.add_argument("--audio", action="append", metavar="SOURCE",
                        help="record this audio input as its own track: default, system (what the machine plays), "
                        "pulse:NAME, or a device from `framepipe devices`; repeat for several (default: the "
                        "microphone and the sound of the computer, where there is one)")
    parser.add_argument("--mix", action="store_true", help="a first track mixing every audio source (the default "
                        "with two or more)")
    parser.add_argument("--no-mix", action="store_true", help="no mixed track: one track a source")
    parser.add_argument("--no-audio", action="store_true", help="record video only")
    parser.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    parser.add_argument("--camera", metavar="SOURCE",
                        help="a camera or phone in a corner: a V4L2 device (/dev/video0, see `framepipe devices`) "
                        "or a URL (rtsp://, rtmp://, http(s)://)")
    parser.add_argument("--camera-size", metavar="WxH", help="V4L2: the picture size asked of the camera")
    parser.add_argument("--camera-fps", type=float, metavar="FPS", help="V4L2: the frame rate asked of the camera")
    parser.add_argument("--camera-format", metavar="NAME", help="V4L2: the pixel format asked (mjpeg, yuyv422, h264)")
    parser.add_argument("--camera-overlay", type=camera_overlay, metavar="POSITION[,SIZE%][,circle|rect]",
                        help="where the camera goes: bottom-right (default), bottom-left, top-right, top-left; "
                        "its height in percent of the picture's (default 25%%); rect (default) or circle")


def build_parser() -> Parser:
    parser = Parser(prog="framepipe", description="Record the screen with every frame.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    rec = sub.add_parser("record", help="record the screen (Ctrl+C or `framepipe ctl stop` stops and saves)")
    rec.add_argument("output", nargs="?", help="output file: .mkv (default choice), .mp4 or .mov (fragmented); "
                     "left out: ~/Videos/Recording DATE at TIME.mkv (the XDG videos folder), printed")
    rec.add_argument("--duration", type=positive, help="stop after this many seconds (default: until Ctrl+C)")
    rec.add_argument("--select", nargs="?", const="area", choices=("area", "window"),
                     help="choose with the mouse before recording: drag an area (a click: the monitor under the "
                     "pointer; Esc cancels); --select window: click a window")
    add_pipeline_flags(rec)
    rec.add_argument("--replay", type=positive, metavar="SECONDS",
                     help="keep the last SECONDS in memory; `framepipe ctl save-replay` (or SIGUSR1) saves them")
    rec.add_argument("--replay-max-mb", type=megabytes, metavar="MB",
                     help="memory cap of the replay buffer (default 500)")
    rec.add_argument("--stream", action="append", metavar="URL",
                     help="stream live to rtmp://HOST[:PORT]/APP/KEY (or rtmps://), beside or instead of the file")
    rec.add_argument("--stats-json", help="write every counter of the run to this JSON file")
    rec.add_argument("--quiet", action="store_true", help="no live status line")
    rec.add_argument("--dry-run", action="store_true", help="print the graph it would run, one line a stage, and stop")

    plan = sub.add_parser("plan", help="print the graph a pipeline config runs, one line a stage")
    plan.add_argument("config", help="pipeline config file (TOML) with [[output]] tables")
    plan.add_argument("--no-profile", action="store_true", help="ignore this machine's tuned profile")

    ctl = sub.add_parser("ctl", help="steer a running recording: status, pause, resume, stop, save-replay, marker")
    ctl.add_argument("verb", choices=("status", "pause", "resume", "toggle-pause", "stop", "save-replay", "marker"),
                     help="what to do")
    ctl.add_argument("arg", nargs="?", help="save-replay: SECONDS (default: all it holds); marker: TEXT")
    ctl.add_argument("--json", action="store_true", help="the answer as JSON")
    ctl.add_argument("--pid", type=int, help="the recording's pid, when several run (the error lists them)")

    demo = sub.add_parser("demo", help="record moving test content (on a virtual screen if there is no display)")
    demo.add_argument("output", nargs="?", default="demo.mkv", help="output file, replaced (default demo.mkv)")
    demo.add_argument("--duration", type=positive, default=5.0, help="seconds to record (default 5)")
    demo.add_argument("--virtual", action="store_true", help="use a new virtual screen even if there is a display")
    add_pipeline_flags(demo)

    bench = sub.add_parser("bench", help="count dropped frames from the files, beside ffmpeg and a naive loop")
    bench.add_argument("--scenario", action="append", metavar="NAME",
                       help="1080p60 (default), 720p120, 1440p60, 4k30, heavy, load, soak; repeat for several")
    bench.add_argument("--all", action="store_true", help="every scenario but the 10-minute soak")
    bench.add_argument("--quick", action="store_true", help="10 s of the default scenario (a smoke test)")
    bench.add_argument("--seconds", type=positive, help="record this long instead of each scenario's duration")
    bench.add_argument("--heavy", action="store_true", help="add a large noisy moving area to every scenario")
    bench.add_argument("--recorders", default="framepipe,ffmpeg,naive",
                       help="which, in order (default framepipe,ffmpeg,naive)")
    bench.add_argument("--display", help="record this X display instead of starting a virtual screen")
    bench.add_argument("--out", default="bench-out", help="folder for results and recordings (default bench-out)")
    bench.add_argument("--micro", action="store_true",
                       help="ring transport and latency micro-benchmarks (alone unless scenarios are named)")

    tune = sub.add_parser("tune", help="find by real trials the settings that hold a target here; save a profile")
    tune.add_argument("--fps", type=float, default=60.0, help="target frames per second (default 60)")
    tune.add_argument("--region", type=region, metavar="X,Y,W,H", help="target region of monitor 1 (default: all)")
    tune.add_argument("--seconds-per-trial", type=positive, default=2.5, metavar="S",
                      help="seconds each trial records (default 2.5; the winner is confirmed 3x as long)")
    tune.add_argument("--display", help="X display to tune (default $DISPLAY, else a new virtual screen)")
    tune.add_argument("--candidates", default="full", metavar="full|quick",
                      help="full (default), or quick: the defaults only, confirmed (a smoke test)")
    tune.add_argument("--show", action="store_true", help="print this machine's tuned profile and stop")

    dev = sub.add_parser("devices", help="list monitors, windows, audio inputs and cameras")
    dev.add_argument("--json", action="store_true", help="machine-readable output")

    sub.add_parser("gui", help="a small recording bar: pick the microphone and what to record; record, pause, stop")
    return parser


def overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """CLI flags as config overrides (None means: not given)."""
    return {
        "screen": {"fps": args.fps, "monitor": args.monitor, "region": args.region, "window": args.window,
                   "backend": args.backend},
        "timestamp": {"mode": "vfr" if args.vfr else None},
        "encode": {"encoder": args.encoder, "preset": args.preset, "crf": args.crf,
                   "output_height": args.output_height, "max_kbps": args.bitrate},
        "audio": {"sources": audio_sources(args), "mix": False if args.no_mix else True if args.mix else None,
                  "missing": "fail" if args.audio else None},
        "camera": {"source": args.camera, "size": args.camera_size, "frame_rate": args.camera_fps,
                   "format": args.camera_format, **(args.camera_overlay or {})},
    }


def audio_sources(args: argparse.Namespace) -> tuple[str, ...] | None:
    """--audio and --no-audio as audio.sources (None: not given, the config decides)."""
    if args.no_audio and args.audio:
        raise ConfigError("--no-audio and --audio contradict each other: give one of them")
    if args.no_audio:
        return ()
    return tuple(args.audio) if args.audio else None


def cmd_record(args: argparse.Namespace) -> int:
    args.output = default_output(args)
    config = cfg.with_output(pipeline_config(args), args.output, flag_outputs(args))
    if args.select:
        from framepipe.select import select_into

        if args.window or args.region:
            raise ConfigError("--select chooses what is recorded: leave out --window and --region")
        config = select_into(config, args.select)
    if args.dry_run:
        return start_record(args, config, None)
    from framepipe.targets import likely_stages
    from pipeline.hosts import StageHosts

    with StageHosts(likely_stages(config)) as hosts:  # they load their libraries while the recorder is imported
        return start_record(args, config, hosts)


def start_record(args: argparse.Namespace, config: cfg.PipelineConfig, hosts: Any) -> int:
    """The recording of ``record``'s flags and ``config``, on the stage processes ``hosts`` (or new ones)."""
    from framepipe.record import RecordJob, record

    job = RecordJob(
        config=config,
        duration_s=args.duration,
        overwrite=args.overwrite,
        stats_json=args.stats_json,
        status_line=not args.quiet,
        dry_run=args.dry_run,
    )
    return record(job, hosts)


def default_output(args: argparse.Namespace) -> str | None:
    """The output path: as given; None when the --config, --stream or --replay give the outputs; else a new
    ``Recording YYYY-MM-DD at HH.MM.SS.mkv`` in the videos folder (created), printed."""
    if args.output is not None or args.stream or args.replay is not None or config_has_outputs(args.config):
        return str(args.output) if args.output is not None else None
    from framepipe.plan import recording_name, videos_folder

    folder = videos_folder()
    if not args.dry_run:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create {folder} ({exc.strerror}): give an output file") from None
    path = str(recording_name(folder))
    print(path, flush=True)
    return path


def config_has_outputs(path: str | None) -> bool:
    """Whether the --config file has [[output]] tables (one that cannot be read: its loading will say why)."""
    if path is None:
        return False
    import tomllib
    from pathlib import Path

    try:
        return bool(tomllib.loads(Path(path).read_text(encoding="utf-8")).get("output"))
    except (OSError, UnicodeDecodeError, ValueError):
        return True


def flag_outputs(args: argparse.Namespace) -> tuple[cfg.OutputConfig, ...]:
    """--stream and --replay as outputs (after the config's)."""
    streams = tuple(cfg.OutputConfig("stream", url=url) for url in args.stream or ())
    if args.replay_max_mb is not None and args.replay is None:
        raise ConfigError("--replay-max-mb needs --replay SECONDS")
    replay = () if args.replay is None else (
        cfg.OutputConfig("replay", seconds=args.replay, max_mb=args.replay_max_mb or 500.0),)
    return streams + replay


def cmd_plan(args: argparse.Namespace) -> int:
    from framepipe.plan import plan

    print("\n".join(plan(cfg.with_output(pipeline_config(args, flags=False), None)).lines()))
    return 0


def cmd_ctl(args: argparse.Namespace) -> int:
    from framepipe.ctl import ctl

    return ctl(args.verb, args.arg, as_json=args.json, pid=args.pid)


def cmd_demo(args: argparse.Namespace) -> int:
    from framepipe.demo import demo

    virtual = args.virtual or not os.environ.get("DISPLAY") or bool(os.environ.get("WAYLAND_DISPLAY"))  # rootless
    return demo(args.output, pipeline_config(args, "1920x1080" if virtual else None), args.duration, args.virtual)


def pipeline_config(
    args: argparse.Namespace, display_size: str | None = None, flags: bool = True
) -> cfg.PipelineConfig:
    """Defaults < this machine's tuned profile < --config file < flags (record and demo); says in one line
    which profile is used, or why the one found is not (after the config loaded: a bad flag stays one line)."""
    tuned, warning = None, None
    if not args.no_profile:
        from framepipe.tune.profile import for_record

        tuned, warning = for_record(display_size)
    config = cfg.load(args.config, overrides(args) if flags else None, tuned.settings if tuned is not None else None)
    line = warning or (tuned.notice(config) if tuned is not None else None)
    if line:
        print(line, file=sys.stderr)
    return config


def cmd_tune(args: argparse.Namespace) -> int:
    from framepipe.tune.tune import TuneOptions, tune

    return tune(TuneOptions(fps=args.fps, region=args.region or (), seconds=args.seconds_per_trial,
                            display=args.display, candidates=args.candidates, show=args.show))


def cmd_bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    from framepipe.bench.bench import DEFAULT_SCENARIO, QUICK_SECONDS, SCENARIOS, BenchOptions, bench

    if args.all:
        scenarios = tuple(name for name in SCENARIOS if name != "soak")
    else:
        scenarios = tuple(args.scenario or (() if args.micro else (DEFAULT_SCENARIO,)))
    options = BenchOptions(
        scenarios=(DEFAULT_SCENARIO,) if args.quick else scenarios,
        seconds=args.seconds or (QUICK_SECONDS if args.quick else None),
        heavy=args.heavy,
        out=Path(args.out),
        display=args.display,
        recorders=tuple(r.strip() for r in args.recorders.split(",") if r.strip()),
        micro=args.micro,
    )
    return bench(options)


def cmd_devices(args: argparse.Namespace) -> int:
    from framepipe.devices import list_devices

    devices = list_devices()
    if args.json:
        print(json.dumps(devices, indent=2))
    else:
        for out in devices.get("wayland_outputs", []):
            print(f"monitor {out['index']}: {out['width']}x{out['height']} at {out['left']},{out['top']}  "
                  f"(Wayland output {out['name'] or '?'}, scale {out['scale']}, {out['refresh_hz']:g} Hz"
                  + (", screencopy" if out["screencopy"] else ", no screencopy") + ")")
        if devices.get("wayland_error"):
            print(f"Wayland: {devices['wayland_error']}")
        for mon in devices["monitors"]:
            print(
                f"monitor {mon['index']}: {mon['width']}x{mon['height']} at {mon['left']},{mon['top']}"
                + ("  (all monitors)" if mon["index"] == 0 else "")
            )
        for w in devices["windows"]:
            print(f"window {w['id']}: {w['title']!r} class {w['class']!r}, "
                  f"{w['width']}x{w['height']} at {w['x']},{w['y']}")
        print("\n".join(audio_lines(devices["audio"])))
        cameras = devices.get("cameras", [])
        print("\n".join(f"camera {c['device']}: {c['name']}" for c in cameras) or "camera: none (no /dev/video*)")
    return 0


def audio_lines(audio: dict[str, Any]) -> list[str]:
    """`framepipe devices` audio part, for people: what to pass to --audio."""
    if audio.get("error"):
        return [f"audio: none ({audio['error']})"]
    lines = [
        f"audio input {d['index']}: {d['name']} ({d['hostapi']}, {d['channels']} ch, {d['rate']:g} Hz)"
        + ("  (default)" if d["default"] else "")
        for d in audio["inputs"]
    ]
    lines += [f"audio source pulse:{s['name']}: {s['description']}" for s in audio["pulse_sources"]]
    return lines or ["audio: no inputs"]


def cmd_gui(args: argparse.Namespace) -> int:
    from framepipe.gui import main as gui

    return gui()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        commands = {"record": cmd_record, "ctl": cmd_ctl, "plan": cmd_plan, "demo": cmd_demo, "bench": cmd_bench,
                    "tune": cmd_tune, "devices": cmd_devices, "gui": cmd_gui}  # fmt: skip
        return commands[args.command](args)
    except Cancelled as exc:  # Esc while choosing with the mouse: nothing was started or written
        print(f"framepipe: {exc}", file=sys.stderr)
        return 1
    except FramepipeError as exc:
        print(f"framepipe: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("framepipe: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
