"""The demo as a newcomer runs it: no display, no sound server; it brings its own and shows the sound too."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import NEEDS_SOUND, decodes_cleanly, framepipe_cmd

from framepipe.proof import avsync


@NEEDS_SOUND
@pytest.mark.skipif(shutil.which("Xvfb") is None, reason="needs Xvfb")
def test_demo_without_display_or_sound_server_records_sound_and_measures_it(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "PULSE_SERVER", "PULSE_SOURCE")}
    env["XDG_RUNTIME_DIR"] = str(tmp_path)  # no user sound server can be found from here
    out = tmp_path / "demo.mkv"
    done = subprocess.run(framepipe_cmd("demo", str(out)), env=env, capture_output=True, text=True, timeout=180,
                          check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert avsync.audio_tracks(out) == ["system"] and decodes_cleanly(out) == ""
    line = next(ln for ln in done.stdout.splitlines() if "sound:" in ln)
    assert "bursts of the test tone, A/V offset p50" in line and " ms" in line, done.stdout
