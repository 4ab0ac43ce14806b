"""``framepipe ctl``: steer a running recording from anywhere (a client of its control socket).

Prints the answer for people (or ``--json``); no recording, a bad argument or a refused request is
one line on stderr and exit status 2.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

from pipeline.control import ControlError, request


def arguments(verb: str, arg: str | None) -> dict[str, Any]:
    """The request's arguments from the command line (ControlError naming what is allowed)."""
    if verb == "save-replay":
        if arg is None:
            return {"seconds": None}
        try:
            seconds = float(arg)
        except ValueError:
            seconds = math.nan
        if not math.isfinite(seconds) or seconds <= 0:
            raise ControlError(f"save-replay takes a number of seconds above 0 (or nothing: all it holds), not {arg!r}")
        return {"seconds": seconds}
    if verb == "marker":
        if not arg or not arg.strip():
            raise ControlError("marker takes a text: framepipe ctl marker 'the bug shows here'")
        return {"text": arg}
    if arg is not None:
        raise ControlError(f"{verb} takes no argument (got {arg!r})")
    return {}


def describe(verb: str, result: dict[str, Any]) -> str:
    """The answer in one or a few lines for people."""
    if verb == "status":
        f = result.get("frames", {})
        paused = f", paused {result.get('paused_s', 0):.1f} s" if result.get("paused_s") else ""
        return (f"recording {result['pid']}: {result.get('state')}, {result.get('recorded_s', 0):.1f} s recorded"
                f"{paused}; {f.get('captured', 0)} frames captured, {f.get('written', 0)} written, "
                f"{f.get('dropped', 0)} dropped; to {', '.join(result.get('outputs', []))}")  # fmt: skip
    if verb == "stop":
        return "\n".join(result.get("outputs", []))
    if verb == "save-replay":
        return str(result.get("path", ""))
    if verb == "marker":
        return f"marker at {result.get('t_s', 0):.3f} s: {result.get('text', '')}"
    return f"recording {result['pid']}: {result.get('state')}"


def ctl(verb: str, arg: str | None, as_json: bool = False, pid: int | None = None) -> int:
    result = request(verb, arguments(verb, arg), pid=pid)
    print(json.dumps(result, indent=2) if as_json else describe(verb, result))
    if verb == "stop" and not result.get("clean", True):
        print(f"framepipe: the recording ended with errors: {result.get('error')}", file=sys.stderr)
        return 1
    return 0
