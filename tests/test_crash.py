"""Crashes on real processes: kill -9 of any stage or of the supervisor, then what is left on disk and in /dev/shm."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from conftest import framepipe_cmd, framepipe_segments, run_framepipe

from framepipe.proof.judge import count_frames, video_span_s
from framepipe.proof.xvfb import VirtualScreen


def start(display: str, out: Path, *flags: str) -> subprocess.Popen[str]:
    env = dict(os.environ, DISPLAY=display)
    return subprocess.Popen(
        framepipe_cmd("record", str(out), "--quiet", *flags), env=env, stderr=subprocess.PIPE, text=True
    )


def stage_pid(supervisor: int, comm: str, wait_s: float = 20) -> int:
    """The pid of the named stage process, once it runs."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        for child in psutil.Process(supervisor).children():
            try:
                if Path(f"/proc/{child.pid}/comm").read_text().strip() == comm:
                    return child.pid
            except OSError:
                pass
        time.sleep(0.05)
    raise AssertionError(f"no {comm} process")


def wait_recording(out: Path, wait_s: float = 30) -> None:
    """Return once the encoder has written its first packets (start-up is slow on a loaded machine)."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and (not out.exists() or out.stat().st_size < 64 * 1024):
        time.sleep(0.05)


def seconds_in(path: Path) -> float:
    """Duration of the video, by its packets' times (the container's own header may be unfinished)."""
    return video_span_s(path)


def decode_errors(path: Path) -> list[str]:
    done = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "null", "-"], capture_output=True, text=True)
    return done.stderr.strip().splitlines()


@pytest.mark.parametrize("victim", ["fp-screen", "fp-timestamp", "fp-encode"])
@pytest.mark.parametrize("ext", ["mkv", "mp4"])
def test_kill_9_of_a_stage_keeps_the_file(virtual_screen: VirtualScreen, tmp_path: Path, victim: str, ext: str) -> None:
    out, stats_path = tmp_path / f"k.{ext}", tmp_path / "k.json"
    proc = start(virtual_screen.display, out, "--duration", "30", "--stats-json", str(stats_path))
    pid = stage_pid(proc.pid, victim)
    wait_recording(out)
    time.sleep(5)
    os.kill(pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert f"stage {victim[3:]} died (signal 9)" in err
    assert "Traceback" not in err
    assert seconds_in(out) >= 3.5  # all but the last second (one keyframe interval) survives
    if victim != "fp-encode":
        assert decode_errors(out) == []  # the encoder lived: it closed the file properly
    assert framepipe_segments(proc.pid) == set()
    in_file = count_frames(out)  # what the file holds, counted by ffprobe
    stats = json.loads(stats_path.read_text())
    assert stats["frames"]["written"] == stats["outputs"][0]["frames"] == in_file, (stats["frames"], in_file)
    assert f"wrote {out}: {in_file} frames" in err
    if victim == "fp-encode":  # what was captured and went with it is counted, never "dropped 0"
        assert stats["frames"]["lost_with_encoder"] > 0 and stats["frames"]["dropped"] > 0, stats["frames"]


def test_kill_9_of_the_supervisor_leaves_a_closed_file(virtual_screen: VirtualScreen, tmp_path: Path) -> None:
    out = tmp_path / "s.mkv"
    proc = start(virtual_screen.display, out, "--duration", "30")
    stages = [stage_pid(proc.pid, name) for name in ("fp-screen", "fp-timestamp", "fp-encode")]
    wait_recording(out)
    time.sleep(5)
    proc.kill()
    proc.wait(10)
    _, alive = psutil.wait_procs([psutil.Process(p) for p in stages], timeout=30)
    assert alive == []  # the stages saw their supervisor go, drained and ended
    assert seconds_in(out) >= 3.5
    assert decode_errors(out) == []
    deadline = time.monotonic() + 10  # each orphaned stage unlinks the rings it maps on its way out
    while framepipe_segments(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert framepipe_segments(proc.pid) == set()


def test_next_start_sweeps_segments_left_by_a_crash(virtual_screen: VirtualScreen, tmp_path: Path) -> None:
    stale = Path(f"/dev/shm/fp_{_dead_pid()}_video")
    stale.write_bytes(b"\0" * 4096)
    result = run_framepipe("record", str(tmp_path / "o.mkv"), "--duration", "1", display=virtual_screen.display)
    assert result.returncode == 0, result.stderr
    assert "removed 1 shared-memory segment(s) left by a crash" in result.stderr
    assert not stale.exists()


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_the_x_server_going_away_is_said_in_words_and_the_file_kept(tmp_path: Path) -> None:
    out = tmp_path / "gone.mkv"
    with VirtualScreen(640, 480) as screen:
        proc = start(screen.display, out, "--duration", "30")
        stage_pid(proc.pid, "fp-encode")
        time.sleep(3)
    _, err = proc.communicate(timeout=60)  # the screen has gone with the with-block
    assert proc.returncode == 0, err  # the source went away: a clean stop, said in one line, like a closed window
    assert "warning: screen: the X server closed the connection (the display is gone)" in err, err
    assert "Traceback" not in err and "XshmUnavailable" not in err
    assert count_frames(out) > 0 and decode_errors(out) == []
