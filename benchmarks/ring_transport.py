"""Ring transport micro-benchmark: 1080p frames through framepipe's shared-memory ring, memcpy, multiprocessing.Queue.

    python benchmarks/ring_transport.py [--seconds 1] [--rounds 3] [--json FILE]

The same runs as ``framepipe bench --micro`` (which adds a capture-to-packet latency run);
``framepipe.bench.micro`` says what each method moves and how bandwidth is counted.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from framepipe.bench.micro import MicroConfig, run_micro


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="seconds per method per round (default 1)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each running every method (default 3)")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    args = parser.parse_args()
    result = run_micro(MicroConfig(seconds=args.seconds, rounds=args.rounds))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(result["summary"])
    return 0 if result["targets"]["met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
