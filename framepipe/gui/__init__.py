"""``framepipe gui``: a small recording bar in Tk, a client of the recording it starts.

``bar`` is the window (layout, keys, placement), ``recording`` the controller that runs and steers
``framepipe record`` in a process of its own, ``settings`` what the bar remembers. Everything here runs
in the bar's process; the recording never depends on it.
"""

from __future__ import annotations

import os
import sys

NO_DISPLAY = ("framepipe: the recording bar needs a display ({why}); `framepipe record` records without one "
              "(e.g. under Xvfb or over ssh)")  # fmt: skip


def main() -> int:
    """Open the bar; 2 with one line when there is no display or no Tk."""
    if not os.environ.get("DISPLAY"):
        print(NO_DISPLAY.format(why="DISPLAY is not set"), file=sys.stderr)
        return 2
    try:
        import tkinter
    except ImportError:
        print("framepipe: the recording bar needs Tk: install python3-tk (./install.sh does)", file=sys.stderr)
        return 2
    try:
        root = tkinter.Tk(className="framepipe")
    except tkinter.TclError as exc:
        print(NO_DISPLAY.format(why=f"cannot open {os.environ['DISPLAY']}: {exc}"), file=sys.stderr)
        return 2
    from framepipe.gui.bar import Bar

    Bar(root).run()
    return 0


def run() -> None:
    """The ``framepipe-gui`` entry point."""
    sys.exit(main())
