"""The desktop portal backend (ScreenCast over D-Bus, then a PipeWire stream): not built in this version.

Why, measured on this project's machines, is in NOTES.md ("Wayland capture"): the ScreenCast handshake
reaches ``Start`` on headless sway with xdg-desktop-portal-wlr 0.7, which then refuses to stream without
a GPU's DMA-BUF buffers. ``unavailable`` says so in one line, so `record` stops before anything starts
(exit 2) instead of recording nothing.
"""

from __future__ import annotations


def unavailable() -> str:
    """Why the portal backend cannot record here ("" would mean it can)."""
    return ("framepipe's ScreenCast + PipeWire client is not built yet (see NOTES.md, \"Wayland capture\"); "
            "on wlroots compositors --backend screencopy records without it")
