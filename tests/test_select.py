"""record --select: the overlay driven with xdotool on Xvfb (a drag, a click, a window, Esc), and its arithmetic."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import (
    assert_recorder_kept_up,
    assert_recorder_lost_nothing,
    decodes_cleanly,
    framepipe_cmd,
    run_framepipe,
)
from test_window import Windows, size_of

from framepipe.proof import judge
from framepipe.proof.testscreen import load_info
from framepipe.proof.xvfb import VirtualScreen
from framepipe.select import TITLE, Selection, area, window_at
from stages.video.x11windows import WindowInfo, parse_id

MONITORS = [{"left": 0, "top": 0, "width": 3840, "height": 1080}, {"left": 0, "top": 0, "width": 1920, "height": 1080},
            {"left": 1920, "top": 0, "width": 1920, "height": 1080}]  # fmt: skip
NEEDS_XDOTOOL = pytest.mark.skipif(shutil.which("xdotool") is None, reason="needs xdotool")


def test_a_drag_is_an_even_area_clamped_to_the_screen_and_a_click_the_monitor_under_it() -> None:
    assert area((0, 0), (960, 540), MONITORS) == Selection(region=(0, 0, 960, 540))
    assert area((961, 541), (0, 0), MONITORS) == Selection(region=(0, 0, 960, 540))  # any direction, even sizes
    assert area((3000, 1000), (4000, 1200), MONITORS) == Selection(region=(3000, 1000, 840, 80))  # clamped
    assert area((2500, 300), (2502, 301), MONITORS) == Selection(monitor=2)  # a click: the monitor under it
    assert area((10, 10), (12, 12), MONITORS) == Selection(monitor=1)
    with pytest.raises(Exception, match="too small"):
        area((0, 0), (10, 300), MONITORS)


def test_the_topmost_window_under_the_pointer_is_chosen_and_ids_parse() -> None:
    low, high = WindowInfo(1, "low", "A", 0, 0, 800, 600), WindowInfo(2, "high", "B", 400, 300, 800, 600)
    assert window_at([low, high], 500, 400) == high and window_at([low, high], 100, 100) == low
    assert window_at([low, high], 1500, 1000) is None
    assert parse_id("0x1e00007") == 0x1E00007 and parse_id("31457287") == 31457287 and parse_id("firefox") is None


def start_select(display: str, out: Path, *flags: str) -> subprocess.Popen[str]:
    """`record --select ...`, returned once its overlay is on the screen."""
    env = dict(os.environ, DISPLAY=display)
    proc = subprocess.Popen(framepipe_cmd("record", str(out), "--no-audio", "--quiet", "--select", *flags), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 30
    while subprocess.run(["xdotool", "search", "--onlyvisible", "--name", TITLE], env=env,
                         capture_output=True).returncode != 0:  # fmt: skip
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    time.sleep(0.3)  # its pointer grab comes right after it is shown
    return proc


@NEEDS_XDOTOOL
def test_a_drag_records_that_area_every_frame(virtual_screen: VirtualScreen, tmp_path: Path) -> None:
    windows = Windows(virtual_screen, tmp_path)
    try:
        _, info = windows.paint("960x540+0+0")  # the area dragged shows the numbered window
        out, stats_path = tmp_path / "area.mkv", tmp_path / "area.stats.json"
        proc = start_select(windows.display, out, "--duration", "6", "--stats-json", str(stats_path))
        windows.xdotool("mousemove", "0", "0", "mousedown", "1", "mousemove", "500", "300", "mousemove", "960", "540",
                        "mouseup", "1")  # fmt: skip
        _, err = proc.communicate(timeout=60)
    finally:
        windows.stop()
    assert proc.returncode == 0, err
    assert "selected 960x540 at 0,0" in err
    stats = json.loads(stats_path.read_text())
    frames = judge.read_codes(out, load_info(info)["code_rect"])
    report = assert_recorder_lost_nothing(frames, info, stats, main_file=True)
    print(f"\n--select, a drag from 0,0 to 960,540: {report.summary()}; dropped {stats['frames']['dropped']}")
    assert size_of(out) == (960, 540) and stats["rect"] == {"left": 0, "top": 0, "width": 960, "height": 540}
    assert abs(report.frames_written - 360) <= 2 and report.unreadable == 0, report.summary()
    assert decodes_cleanly(out) == ""
    assert_recorder_kept_up(stats)


@NEEDS_XDOTOOL
def test_esc_cancels_with_nothing_written(virtual_screen: VirtualScreen, tmp_path: Path) -> None:
    out = tmp_path / "cancelled.mkv"
    proc = start_select(virtual_screen.display, out, "--duration", "2")
    subprocess.run(["xdotool", "key", "Escape"], env=dict(os.environ, DISPLAY=virtual_screen.display), check=True)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1 and err.strip() == "framepipe: selection cancelled: nothing recorded", err
    assert not out.exists()


@NEEDS_XDOTOOL
def test_a_click_records_the_whole_monitor_and_select_window_a_window(virtual_screen: VirtualScreen,
                                                                      tmp_path: Path) -> None:  # fmt: skip
    windows = Windows(virtual_screen, tmp_path)
    try:
        wid, _ = windows.paint("640x360+200+100")
        out = tmp_path / "monitor.mkv"
        proc = start_select(windows.display, out, "--duration", "1")
        windows.xdotool("mousemove", "1500", "900", "click", "1")
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0 and "selected monitor 1" in err, err
        assert size_of(out) == (1920, 1080)
        chosen = tmp_path / "window.mkv"
        proc = start_select(windows.display, chosen, "window", "--duration", "1")
        windows.xdotool("mousemove", "400", "300", "click", "1")
        _, err = proc.communicate(timeout=60)
    finally:
        windows.stop()
    assert proc.returncode == 0 and f"selected window {int(wid, 16):#x}: 'framepipe test window'" in err, err
    assert size_of(chosen) == (640, 360)


def test_select_without_a_display_is_one_line(tmp_path: Path) -> None:
    done = run_framepipe("record", str(tmp_path / "x.mkv"), "--select", "--duration", "1")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "--select needs a display" in lines[0], done.stderr
    assert not (tmp_path / "x.mkv").exists()
