"""``framepipe demo``: a short recording of moving test content, judged by what the file shows.

Without a display (or with ``--virtual``) it starts its own Xvfb screen.
The test screen paints a frame number on every frame; after recording, the
file is decoded and every frame's number is read back, so the summary says
how many screen states the file holds and how many were lost.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from framepipe.proof import avsync, judge
from framepipe.proof.judge import JudgeError
from framepipe.proof.pulse import PulseServer, have_pulseaudio
from framepipe.proof.testscreen import start_testscreen
from framepipe.proof.tone import load_info as load_tone
from framepipe.proof.tone import start_tone
from framepipe.proof.xvfb import VirtualScreen
from framepipe.record import RecordJob, record
from pipeline.config import PipelineConfig, with_output


@contextlib.contextmanager
def display(virtual: bool, width: int = 1920, height: int = 1080) -> Iterator[str]:
    """The display to record: the current one, or a new Xvfb screen."""
    if os.environ.get("DISPLAY") and not virtual:
        yield os.environ["DISPLAY"]
        return
    with VirtualScreen(width, height) as screen:
        previous = os.environ.get("DISPLAY")
        os.environ["DISPLAY"] = screen.display
        wayland = os.environ.pop("WAYLAND_DISPLAY", None)  # record the virtual screen, not the Wayland desktop
        try:
            yield screen.display
        finally:
            if wayland is not None:
                os.environ["WAYLAND_DISPLAY"] = wayland
            if previous is None:
                os.environ.pop("DISPLAY", None)
            else:
                os.environ["DISPLAY"] = previous


def sound_server_running() -> bool:
    """Whether a PulseAudio (or PipeWire's) server answers here."""
    if shutil.which("pactl") is None:
        return False
    done = subprocess.run(["pactl", "info"], capture_output=True, timeout=10, check=False)
    return done.returncode == 0


@contextlib.contextmanager
def sound(config: PipelineConfig, folder: Path) -> Iterator[tuple[PipelineConfig, Path | None]]:
    """The config to record with, and the tone's info when the demo plays its own (no sound server here)."""
    if not config.audio.sources or sound_server_running() or not have_pulseaudio():
        yield config, None
        return
    with PulseServer(("fp_demo",)) as pulse:
        saved = os.environ.get("PULSE_SERVER")
        os.environ["PULSE_SERVER"] = pulse.server
        info = folder / "tone.json"
        tone = start_tone("fp_demo", info_path=info, env=pulse.env())
        try:
            yield replace(config, audio=replace(config.audio, sources=("system",), mix=False)), info
        finally:
            tone.terminate()
            tone.wait(10)
            if saved is None:
                os.environ.pop("PULSE_SERVER", None)
            else:
                os.environ["PULSE_SERVER"] = saved


def demo(output: str, config: PipelineConfig, duration_s: float, virtual: bool) -> int:
    """Record ``duration_s`` of the test screen to ``output`` (replacing it) and print what the file shows."""
    with (display(virtual) as name, tempfile.TemporaryDirectory(prefix="framepipe-demo-") as tmp,
          sound(config, Path(tmp)) as (config, tone)):  # fmt: skip
        info_path = Path(tmp) / "testscreen.json"
        stats_path = Path(tmp) / "stats.json"
        painter = start_testscreen(name, config.screen.fps, info_path=info_path)
        try:
            job = RecordJob(with_output(config, output), duration_s, overwrite=True, stats_json=str(stats_path))
            status = record(job)
        finally:
            painter.terminate()
            painter.wait(10)
        info = json.loads(info_path.read_text())
        stats = json.loads(stats_path.read_text())
        origin = (config.screen.region[0], config.screen.region[1]) if config.screen.region else (0, 0)
        frames = judge.read_codes(output, info["code_rect"], origin)
        report = judge.judge(frames, 1 / config.screen.fps)
        print(f"framepipe demo: {output} on {name}: {report.summary()}")
        if tone is not None:
            print(f"framepipe demo: {sync_line(output, frames, info, load_tone(tone))}")
        print(f"framepipe demo: pipeline counted {stats['frames']['dropped']} dropped; play it with: ffplay {output}")
        return status


def sync_line(output: str, frames: list[judge.Frame], screen: dict[str, Any], tone: dict[str, Any]) -> str:
    """The tone bursts against the picture, in one line."""
    try:
        sync = avsync.sync_report(frames, avsync.read_track(output, 0), screen, tone)
    except JudgeError as exc:
        return f"sound: not measured ({exc})"
    return (f"sound: {len(sync.bursts)} bursts of the test tone, A/V offset p50 {sync.offset_ms_p50:+.2f} ms, "
            f"max {sync.offset_ms_max:.2f} ms (a frame is {1000 / float(screen['fps']):.1f} ms)")

