"""The desktop portal backend (ScreenCast over D-Bus, then a PipeWire stream): not available in this build.

What was tried and what blocked it is in NOTES.md ("Wayland capture"). ``unavailable`` says why in one line,
so `record` stops before anything starts (exit 2) instead of recording nothing.
"""

from __future__ import annotations

import os


def unavailable() -> str:
    """Why the portal backend cannot record here ("" would mean it can)."""
    if not os.environ.get("DBUS_SESSION_BUS_ADDRESS"):
        return "no D-Bus session bus (DBUS_SESSION_BUS_ADDRESS is unset), and framepipe's portal client is not " \
               "built yet"
    return "framepipe's portal client (ScreenCast + PipeWire) is not built yet: see NOTES.md"
