"""Window capture on Xvfb: a test window that paints its own frame number, moved, covered, resized, unmapped and
closed with xdotool during the recording; files judged by what they show."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    assert_recorder_kept_up,
    assert_recorder_lost_nothing,
    decodes_cleanly,
    framepipe_cmd,
    run_framepipe,
)

from framepipe.proof import judge
from framepipe.proof.testscreen import load_info, start_testscreen
from framepipe.proof.xvfb import VirtualScreen

pytestmark = pytest.mark.skipif(shutil.which("xdotool") is None, reason="needs xdotool")


class Windows:
    """Test windows on the session's screen (painters and covers), stopped at the end."""

    def __init__(self, screen: VirtualScreen, folder: Path) -> None:
        self.display, self.folder, self.procs = screen.display, folder, []  # type: ignore[var-annotated]

    def paint(self, geometry: str, name: str = "window") -> tuple[str, Path]:
        """A 60 fps numbered test window at WxH+X+Y; its id and info file."""
        info = self.folder / f"{name}.json"
        self.procs.append(start_testscreen(self.display, 60, info_path=info, window=geometry))
        return load_info(info)["window"], info

    def cover(self, geometry: str) -> str:
        info = self.folder / "cover.json"
        self.procs.append(start_testscreen(self.display, info_path=info, window=geometry, cover=True))
        return str(load_info(info)["window"])

    def xdotool(self, *args: str) -> None:
        subprocess.run(["xdotool", *args], env=dict(os.environ, DISPLAY=self.display), check=True, timeout=10)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)


@pytest.fixture
def windows(virtual_screen: VirtualScreen, tmp_path: Path) -> Any:
    w = Windows(virtual_screen, tmp_path)
    yield w
    w.stop()


def start_record(display: str, out: Path, *flags: str) -> subprocess.Popen[str]:
    env = dict(os.environ, DISPLAY=display)
    return subprocess.Popen(framepipe_cmd("record", str(out), "--no-audio", "--quiet", *flags), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def finish(proc: subprocess.Popen[str], timeout: float = 90) -> str:
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return err


def size_of(path: Path) -> tuple[int, int]:
    done = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,height",
                           "-of", "csv=p=0", str(path)], capture_output=True, text=True, check=True)  # fmt: skip
    w, h = done.stdout.strip().split(",")
    return int(w), int(h)


def test_a_moved_and_covered_window_is_recorded_as_it_looks_every_frame(windows: Windows, tmp_path: Path) -> None:
    wid, info = windows.paint("960x540+100+100")
    windows.cover("480x540+1080+300")  # on top of the window once it moves to 600,300: its right half
    out, stats_path = tmp_path / "window.mkv", tmp_path / "window.stats.json"
    proc = start_record(windows.display, out, "--window", wid, "--fps", "60", "--duration", "15",
                        "--stats-json", str(stats_path))  # fmt: skip
    time.sleep(5)
    windows.xdotool("windowmove", wid, "600", "300")  # half under the cover (the code too)
    time.sleep(4)
    windows.xdotool("windowmove", wid, "700", "200")  # still partly under it
    err = finish(proc)
    windows.stop()  # the painter's stats file is written as it ends
    stats = json.loads(stats_path.read_text())
    frames = judge.read_codes(out, load_info(info)["code_rect"])
    report = assert_recorder_lost_nothing(frames, info, stats, main_file=True)
    print(f"\nwindow moved twice, half covered: {report.summary()}; dropped {stats['frames']['dropped']}")
    assert size_of(out) == (960, 540)
    assert abs(report.frames_written - 900) <= 2, report.summary()
    assert report.unreadable == 0, report.summary()  # never a frame of the cover (it reads as no code)
    assert report.backwards == 0 and decodes_cleanly(out) == ""
    assert_recorder_kept_up(stats)
    assert stats["stages"]["screen"]["info"]["backend"].startswith("window, composite")
    assert stats["warnings"] == [], err


def _read_scaled_or_not(path: Path, code_rect: list[int], scaled_from: tuple[int, int]) -> list[judge.Frame]:
    """Each frame's code read as recorded, or else as scaled from a window of ``scaled_from`` size."""
    plain = judge.read_codes(path, code_rect)
    scaled = judge.read_codes(path, code_rect, size=scaled_from)
    merged = [a if a.code is not None else b for a, b in zip(plain, scaled, strict=True)]
    return judge.unwrap(merged)


def test_a_resized_window_keeps_the_file_size_and_is_scaled_to_fit(windows: Windows, tmp_path: Path) -> None:
    wid, info = windows.paint("960x540+0+0")
    out, stats_path = tmp_path / "resized.mkv", tmp_path / "resized.stats.json"
    proc = start_record(windows.display, out, "--window", wid, "--duration", "6", "--stats-json", str(stats_path))
    time.sleep(4)
    windows.xdotool("windowsize", wid, "1440", "810")  # 1.5x, the same aspect: scaled by 2/3, no bars
    err = finish(proc)
    windows.stop()
    stats = json.loads(stats_path.read_text())
    screen = stats["stages"]["screen"]["stats"]
    assert f"resized 1x, {screen['scaled_frames']} frames scaled to fit" in err, err
    frames = _read_scaled_or_not(out, load_info(info)["code_rect"], (1440, 810))
    cleared = min(1, sum(1 for f in frames if f.state is None))  # see below: at most one frame, the resize's
    report = assert_recorder_lost_nothing(frames, info, stats, unseen=cleared, main_file=True)
    print(f"\nresized 960x540 -> 1440x810: {report.summary()}; resizes {screen['resizes']}, "
          f"scaled frames {screen['scaled_frames']}")  # fmt: skip
    assert size_of(out) == (960, 540)
    assert screen["resizes"] == 1 and 0 < screen["scaled_frames"] < screen["captured"], screen
    # Before: read as recorded; after: read at the scaled place. A resized window is cleared to its background
    # until its program paints again: at most that one frame shows no number.
    assert report.unreadable <= 1, report.summary()
    unscaled = sum(1 for f in judge.read_codes(out, load_info(info)["code_rect"]) if f.code is not None)
    assert 0 < unscaled < report.frames_written  # both halves are there


def test_an_unmapped_window_is_held_and_a_closed_one_stops_in_order(windows: Windows, tmp_path: Path) -> None:
    wid, info = windows.paint("960x540+0+0")
    out, stats_path = tmp_path / "closed.mkv", tmp_path / "closed.stats.json"
    proc = start_record(windows.display, out, "--window", wid, "--duration", "60", "--stats-json", str(stats_path))
    time.sleep(4)
    windows.xdotool("windowunmap", wid)
    time.sleep(1)
    windows.xdotool("windowmap", wid)
    time.sleep(1)
    started = time.monotonic()
    windows.stop()  # the painter exits: its window is destroyed
    err = finish(proc, timeout=30)
    assert time.monotonic() - started < 15  # it stopped on the close, not at --duration 60
    assert f"the window {int(wid, 16):#x} ('framepipe test window') closed: the recording stops here and keeps " \
           "what was captured" in err, err  # fmt: skip
    assert "Traceback" not in err
    stats = json.loads(stats_path.read_text())
    screen = stats["stages"]["screen"]["stats"]
    frames = judge.read_codes(out, load_info(info)["code_rect"])
    report = judge.judge(frames, 1 / 60)
    print(f"\nunmapped ~1 s then closed: {report.summary()}; held {screen['held']}")
    assert 30 <= screen["held"] == screen["unmapped_frames"], screen  # about a second of held frames
    assert f"{screen['held']} frames held (the last picture repeated while nothing was shown)" in err, err
    hold = max(report.gaps, key=lambda g: g[1], default=(0, 0))
    assert hold[1] >= 30  # the states painted while it was unmapped
    # A window mapped again shows its background until its program paints: one frame may show no number,
    # only the one right after the hold.
    shown_again = next(f.index for f in frames if f.state is not None and f.state > hold[0])
    assert all(f.index == shown_again - 1 for f in frames if f.code is None), report.summary()
    assert report.unreadable <= 1 and decodes_cleanly(out) == ""
    assert report.frames_written >= 200  # the file is kept, up to the close


def test_a_window_name_matching_nothing_or_several_is_one_line(windows: Windows, tmp_path: Path) -> None:
    wid, _ = windows.paint("640x360+0+0")
    cover = windows.cover("320x200+700+0")
    out = tmp_path / "none.mkv"
    for what, says in (("no-such-window-at-all", "no shown window has 'no-such-window-at-all' in its title"),
                       ("0x7fffff0", "there is no window 0x7fffff0"),
                       ("FRAMEPIPE", "2 windows match 'FRAMEPIPE'")):  # fmt: skip
        done = run_framepipe("record", str(out), "--window", what, "--duration", "2", display=windows.display)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and says in lines[0], done.stderr
        assert not out.exists()
    assert f"{int(wid, 16):#x}" in lines[0] and f"{int(cover, 16):#x}" in lines[0]  # several: listed
    listed = run_framepipe("devices", display=windows.display)
    assert f"window {int(wid, 16):#x}: 'framepipe test window' class 'FramepipeTest', 640x360 at 0,0" in listed.stdout


def test_a_screen_resize_is_followed_the_file_keeps_its_size(tmp_path: Path) -> None:
    from framepipe.proof.xrandr import set_screen_size

    info, out, stats_path = tmp_path / "screen.json", tmp_path / "xrandr.mkv", tmp_path / "xrandr.stats.json"
    with VirtualScreen(1280, 720) as screen:
        painter = start_testscreen(screen.display, 60, info_path=info)
        try:
            proc = start_record(screen.display, out, "--duration", "7", "--stats-json", str(stats_path))
            time.sleep(3.5)
            set_screen_size(screen.display, 960, 540)  # xrandr: the whole screen is now 3/4 of its size
            time.sleep(2)
            set_screen_size(screen.display, 1280, 720)  # and back
            err = finish(proc)
        finally:
            painter.terminate()
            painter.wait(10)
    stats = json.loads(stats_path.read_text())
    screen_stats = stats["stages"]["screen"]["stats"]
    frames = _read_scaled_or_not(out, load_info(info)["code_rect"], (960, 540))
    report = judge.judge(frames, 1 / 60)
    print(f"\nscreen 1280x720 -> 960x540 -> 1280x720: {report.summary()}; resizes {screen_stats['resizes']}, "
          f"scaled frames {screen_stats['scaled_frames']}")  # fmt: skip
    assert "ShmGetImage" not in err and stats["warnings"] == [], err
    assert size_of(out) == (1280, 720)
    assert screen_stats["resizes"] == 2 and 0 < screen_stats["scaled_frames"] < screen_stats["captured"], screen_stats
    # Xvfb replaces its framebuffer on a resize: black until the painter's next state, so a grab in between
    # may show no code (the screen's moment, not the recorder's).
    assert report.unreadable <= 2 and abs(report.frames_written - 420) <= 2, report.summary()


def test_window_pick_records_the_window_clicked(windows: Windows, tmp_path: Path) -> None:
    wid, _ = windows.paint("640x360+300+200")
    out = tmp_path / "picked.mkv"
    proc = start_record(windows.display, out, "--window", "pick", "--duration", "1")
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        windows.xdotool("mousemove", "500", "300", "click", "1")  # a click before its pointer grab is the window's
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(1)
    err = finish(proc)
    assert size_of(out) == (640, 360), err
    assert f"picked window {int(wid, 16):#x}: 'framepipe test window'" in err and "Traceback" not in err
