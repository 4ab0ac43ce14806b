"""Shared fixtures: a virtual X screen for tests that need a real display."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from framepipe.xvfb import VirtualScreen


@pytest.fixture(scope="session")
def virtual_screen() -> Iterator[VirtualScreen]:
    """One 1920x1080 Xvfb screen for the whole session; skips when Xvfb is not installed."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed")
    with VirtualScreen(1920, 1080) as screen:
        yield screen
