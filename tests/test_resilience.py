"""What happens when the machine fails the recorder: full disks, overload, impatient people."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import framepipe_cmd, framepipe_segments
from test_crash import wait_recording

from framepipe.proof.judge import count_frames, video_span_s
from framepipe.proof.testscreen import start_testscreen
from framepipe.proof.xvfb import VirtualScreen


@pytest.fixture
def heavy_screen(virtual_screen: VirtualScreen, tmp_path: Path) -> Iterator[str]:
    painter = start_testscreen(virtual_screen.display, 60, heavy=True, info_path=tmp_path / "heavy.json")
    try:
        yield virtual_screen.display
    finally:
        painter.terminate()
        painter.wait(10)


def record(display: str, out: Path, *flags: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DISPLAY=display)
    return subprocess.run(
        framepipe_cmd("record", str(out), "--quiet", *flags), env=env, capture_output=True, text=True, timeout=timeout
    )


def test_disk_full_keeps_what_was_written(heavy_screen: str, small_disk: Path, tmp_path: Path) -> None:
    out = small_disk / "o.mkv"
    stats_path = tmp_path / "s.json"
    done = record(heavy_screen, out, "--duration", "30", "--crf", "0", "--stats-json", str(stats_path))
    assert done.returncode == 1, done.stderr
    assert f"file {out} failed (the disk is full: {out} keeps what was written so far)" in done.stderr
    assert "error in encode: every output failed, nothing is recorded any more" in done.stderr
    assert "low disk space" in done.stderr
    assert "Traceback" not in done.stderr
    assert count_frames(out) > 0  # decodes up to where the disk ran out
    stats = json.loads(stats_path.read_text())
    assert stats["errors"] and stats["stages"]["screen"]["exitcode"] == 0  # capture ended cleanly, not killed
    assert framepipe_segments(stats["pid"]) == set()


def overload_config(tmp_path: Path, policy: str) -> Path:
    conf = tmp_path / f"{policy}.toml"
    conf.write_text(f'[screen]\nring_seconds = 0.1\n[encode]\npreset = "veryfast"\noverload = "{policy}"\n')
    return conf


@pytest.mark.parametrize("policy", ["drop", "shed"])
def test_overload_is_counted_and_the_timeline_stays_whole(
    heavy_screen: str, tmp_path: Path, policy: str
) -> None:
    out, stats_path = tmp_path / "o.mkv", tmp_path / "s.json"
    done = record(heavy_screen, out, "--duration", "3", "--config", str(overload_config(tmp_path, policy)),
                  "--stats-json", str(stats_path))  # fmt: skip
    assert done.returncode == 0, done.stderr
    stats = json.loads(stats_path.read_text())
    f = stats["frames"]
    reason = "ring_full" if policy == "drop" else "encoder_shed"
    assert f["dropped_by_reason"][reason] > 0, f  # the slow preset cannot keep up: losses are counted, by cause
    assert f["dropped"] == sum(f["dropped_by_reason"].values())
    frames = count_frames(out)
    assert frames == f["written"]  # the stats say what the file holds
    assert abs(f["written"] + f["repeats_not_written"] - 180) <= 2  # every tick: a frame, or a repeat left out
    assert abs(video_span_s(out) - 3.0) <= 2 / 60  # the video keeps pace to the end (repeats behind: pts gaps)
    assert stats["ring"]["peak_fill"] <= stats["ring"]["slots"] == 8  # memory is bounded by the ring (8 at least)
    assert stats["errors"] == []


def test_second_interrupt_stops_fast_and_keeps_a_playable_file(virtual_screen: VirtualScreen, tmp_path: Path) -> None:
    out, stats_path = tmp_path / "o.mkv", tmp_path / "s.json"
    env = dict(os.environ, DISPLAY=virtual_screen.display)
    proc = subprocess.Popen(
        framepipe_cmd("record", str(out), "--quiet", "--no-audio", "--stats-json", str(stats_path)),
        env=env, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    wait_recording(out)
    time.sleep(2)
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(0.005)  # the clean stop is still draining (it takes a frame's tick at least): the second cuts it short
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    stats = json.loads(stats_path.read_text())
    assert stats["fast_stop"] is True
    assert count_frames(out) > 60
    assert "Traceback" not in err
    assert framepipe_segments(proc.pid) == set()
