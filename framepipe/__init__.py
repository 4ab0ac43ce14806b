"""framepipe: a screen recorder that keeps every frame, and the tools that check it.

``from framepipe import Recorder`` is the Python API (imported on first use, so the command starts lean).
"""

from __future__ import annotations

from typing import Any

__all__ = ["Recorder", "RecorderError"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from framepipe import api

        return getattr(api, name)
    raise AttributeError(f"module 'framepipe' has no attribute {name!r}")
