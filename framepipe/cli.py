"""The ``framepipe`` command: record, devices (bench and tune join later).

Every mistake people can fix ends as one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, NoReturn

from pipeline import config as cfg
from pipeline.errors import FramepipeError


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


def add_pipeline_flags(parser: argparse.ArgumentParser) -> None:
    """Flags that override the pipeline config (record and demo)."""
    parser.add_argument("--fps", type=float, help="frames per second (default 60)")
    parser.add_argument("--monitor", type=int, help="monitor number from `framepipe devices` (default 1)")
    parser.add_argument("--region", type=region, help="record only X,Y,WIDTH,HEIGHT of the monitor")
    parser.add_argument("--config", help="pipeline config file (TOML); flags override it")
    parser.add_argument("--encoder", help="video encoder (default libx264; one that does not open falls back)")
    parser.add_argument("--preset", help="encoder speed preset (libx264: ultrafast ... veryslow)")
    parser.add_argument("--crf", type=int, help="quality: lower is better, 0-51 (default 23)")
    parser.add_argument("--vfr", action="store_true", help="keep capture times (variable frame rate)")
    parser.add_argument("--no-audio", action="store_true", help="record video only")
    parser.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")


def build_parser() -> Parser:
    parser = Parser(prog="framepipe", description="Record the screen with every frame.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    rec = sub.add_parser("record", help="record the screen to a file (Ctrl+C stops and saves)")
    rec.add_argument("output", help="output file: .mkv (default choice), .mp4 or .mov (fragmented)")
    rec.add_argument("--duration", type=positive, help="stop after this many seconds (default: until Ctrl+C)")
    add_pipeline_flags(rec)
    rec.add_argument("--stats-json", help="write every counter of the run to this JSON file")
    rec.add_argument("--quiet", action="store_true", help="no live status line")

    demo = sub.add_parser("demo", help="record moving test content (on a virtual screen if there is no display)")
    demo.add_argument("output", nargs="?", default="demo.mkv", help="output file (default demo.mkv)")
    demo.add_argument("--duration", type=positive, default=5.0, help="seconds to record (default 5)")
    demo.add_argument("--virtual", action="store_true", help="use a new virtual screen even if there is a display")
    add_pipeline_flags(demo)

    dev = sub.add_parser("devices", help="list monitors")
    dev.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """CLI flags as config overrides (None means: not given)."""
    return {
        "screen": {"fps": args.fps, "monitor": args.monitor, "region": args.region},
        "timestamp": {"mode": "vfr" if args.vfr else None},
        "encode": {"encoder": args.encoder, "preset": args.preset, "crf": args.crf},
    }


def cmd_record(args: argparse.Namespace) -> int:
    from framepipe.record import RecordJob, record

    job = RecordJob(
        output=args.output,
        config=cfg.load(args.config, overrides(args)),
        duration_s=args.duration,
        overwrite=args.overwrite,
        stats_json=args.stats_json,
        status_line=not args.quiet,
    )
    return record(job)


def cmd_demo(args: argparse.Namespace) -> int:
    from framepipe.demo import demo

    return demo(args.output, cfg.load(args.config, overrides(args)), args.duration, args.virtual, args.overwrite)


def cmd_devices(args: argparse.Namespace) -> int:
    from framepipe.devices import list_devices

    devices = list_devices()
    if args.json:
        print(json.dumps(devices, indent=2))
    else:
        for mon in devices["monitors"]:
            print(
                f"monitor {mon['index']}: {mon['width']}x{mon['height']} at {mon['left']},{mon['top']}"
                + ("  (all monitors)" if mon["index"] == 0 else "")
            )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return {"record": cmd_record, "demo": cmd_demo, "devices": cmd_devices}[args.command](args)
    except FramepipeError as exc:
        print(f"framepipe: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("framepipe: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
