"""Several outputs from one encode: [[output]] tables, the plan, one failing output, bad output tables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import assert_every_tick, assert_recorder_lost_nothing, decodes_cleanly, run_framepipe
from test_bad_input import assert_one_line_error

from framepipe.proof import judge
from framepipe.proof.testscreen import load_info, start_testscreen
from framepipe.proof.xvfb import VirtualScreen


class Painter:
    """The test screen, painting while a test records; ``stop`` it before judging (it writes its stats then)."""

    def __init__(self, display: str, info: Path) -> None:
        self.info = info
        self.proc = start_testscreen(display, 60, info_path=info)

    def stop(self) -> Path:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        return self.info


@pytest.fixture
def painted(virtual_screen: VirtualScreen, tmp_path: Path) -> Iterator[Painter]:
    painter = Painter(virtual_screen.display, tmp_path / "screen.json")
    try:
        yield painter
    finally:
        painter.stop()


SMALL_DISK = "2m"  # the lossless test screen fills it in a second or two


def config(tmp_path: Path, *paths: str | Path, extra: str = "") -> Path:
    conf = tmp_path / "outputs.toml"
    tables = "".join(f'[[output]]\nkind = "file"\npath = "{p}"\n' for p in paths)
    conf.write_text("[screen]\nfps = 60\n" + extra + tables)
    return conf


def test_two_files_from_one_encode_hold_the_same_frames(virtual_screen: VirtualScreen, painted: Painter,
                                                        tmp_path: Path) -> None:  # fmt: skip
    a, b, stats_path = tmp_path / "a.mkv", tmp_path / "b.mp4", tmp_path / "s.json"
    conf = config(tmp_path, a, b)
    done = run_framepipe("record", "--config", str(conf), "--duration", "5", "--no-audio", "--quiet",
                         "--stats-json", str(stats_path), display=virtual_screen.display)  # fmt: skip
    assert done.returncode == 0, done.stderr
    screen = painted.stop()
    info = load_info(screen)
    stats = json.loads(stats_path.read_text())
    frames = [judge.read_codes(f, info["code_rect"]) for f in (a, b)]
    reports = [assert_recorder_lost_nothing(f, screen, stats, main_file=True) for f in frames]  # one encode's ticks
    for report in reports:
        assert_every_tick(report, stats, 300)
    assert [f.state for f in frames[0]] == [f.state for f in frames[1]]  # the same pictures, frame for frame
    assert decodes_cleanly(a) == "" and decodes_cleanly(b) == ""
    written = reports[0].frames_written  # 300, less the repeats an encoder behind the clock left out (counted)
    assert [o["frames"] for o in stats["outputs"]] == [written, written], stats["outputs"]
    assert stats["frames"]["encoded"] + stats["frames"]["repeats"] == 300  # one encode fed both files
    assert f"wrote {a}: {written} frames" in done.stderr and f"wrote {b}: {written} frames" in done.stderr


def test_dry_run_prints_the_graph_and_writes_nothing(virtual_screen: VirtualScreen, tmp_path: Path) -> None:
    conf = config(tmp_path, tmp_path / "a.mkv", tmp_path / "b.mp4")
    done = run_framepipe("record", "--config", str(conf), "--dry-run", "--no-audio", display=virtual_screen.display)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    stages = [line.split()[0] for line in lines]
    assert stages == ["screen", "timestamp", "encode", "output", "output", "ring"], done.stdout
    assert "video <- timestamp.placed" in done.stdout and "frames <- screen.frames" in done.stdout
    assert not (tmp_path / "a.mkv").exists() and not (tmp_path / "b.mp4").exists()
    same = run_framepipe("plan", str(conf), display=virtual_screen.display)
    assert same.returncode == 0 and "ring" in same.stdout and "audio" in same.stdout  # the config's audio: default


def test_a_failing_output_leaves_the_others_whole(virtual_screen: VirtualScreen, painted: Painter, small_disk: Path,
                                                  tmp_path: Path) -> None:  # fmt: skip
    small, good, stats_path = small_disk / "small.mkv", tmp_path / "good.mkv", tmp_path / "s.json"
    conf = config(tmp_path, small, good, extra="[encode]\ncrf = 0\n")  # lossless: the 2 MiB fill in a second or two
    done = run_framepipe("record", "--config", str(conf), "--duration", "6", "--no-audio", "--quiet",
                         "--stats-json", str(stats_path), display=virtual_screen.display)  # fmt: skip
    assert done.returncode == 1, done.stderr  # something failed: said, and the exit status says so
    assert f"file {small} failed (the disk is full" in done.stderr and "Traceback" not in done.stderr
    screen = painted.stop()
    info = load_info(screen)
    stats = json.loads(stats_path.read_text())
    whole = assert_recorder_lost_nothing(judge.read_codes(good, info["code_rect"]), screen, stats, main_file=True)
    assert_every_tick(whole, stats, 360)
    assert decodes_cleanly(good) == ""
    cut = judge.judge(judge.read_codes(small, info["code_rect"]), 1 / 60)
    assert 0 < cut.frames_written < 360  # what it held before the disk filled is playable
    small_stats, good_stats = stats["outputs"]
    assert small_stats["state"] == "failed" and small_stats["dropped"]["failed"] > 0
    assert good_stats["frames"] == 360 and good_stats["dropped"] == {"behind": 0, "failed": 0}


@pytest.mark.parametrize(
    ("tables", "needle"),
    [
        ('[[output]]\nkind = "disk"\npath = "a.mkv"\n', "output[1].kind = 'disk' is not allowed"),
        ('[[output]]\nkind = "file"\n', 'output[1] (a file) needs a path: add path = "recording.mkv"'),
        ('[[output]]\npath = "a.mkv"\n[[output]]\npath = "./a.mkv"\n', "output[1] and output[2] both write ./a.mkv"),
        ('[[output]]\npath = "a.mkv"\ncolour = "red"\n', "unknown key output[1].colour; allowed keys: kind, max_mb,"),
        ('[output]\npath = "a.mkv"\n', "[[output]] must be tables: write each output as [[output]]"),
        ('[[output]]\nkind = "stream"\nurl = "srt://h:1/x"\n', "this build of PyAV has no SRT"),
        ('[[output]]\nkind = "stream"\nurl = "http://h/x"\n', "cannot stream to http://; use rtmp:// or rtmps://"),
        ('[[output]]\nkind = "stream"\nurl = "rtmp://:80"\n', "is malformed: give rtmp://HOST[:PORT]/APP/KEY"),
        ('[[output]]\nkind = "replay"\nseconds = 0\n', "a replay buffer keeps more than 0 seconds"),
        ('[[output]]\nkind = "replay"\n[[output]]\nkind = "replay"\n', "are both replay buffers: keep one"),
        ('[[output]]\npath = "a.avi"\n', "cannot write .avi: name the output .mkv, .mp4 or .mov"),
        ('[[output]]\nkind = "disk"\n', "choose one of: file, stream, replay"),
    ],
)
def test_bad_output_tables(virtual_screen: VirtualScreen, tmp_path: Path, tables: str, needle: str) -> None:
    conf = tmp_path / "bad.toml"
    conf.write_text(tables)
    result = subprocess.run([*run_args(conf)], cwd=tmp_path, capture_output=True, text=True, check=False,
                            env=display_env(virtual_screen.display))  # fmt: skip
    assert_one_line_error(result, needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"]


def test_output_given_twice_is_refused(virtual_screen: VirtualScreen, tmp_path: Path) -> None:
    conf = config(tmp_path, tmp_path / "a.mkv")
    result = run_framepipe("record", str(tmp_path / "a.mkv"), "--config", str(conf), "--duration", "1",
                           display=virtual_screen.display)  # fmt: skip
    assert_one_line_error(result, "both write")


def run_args(conf: Path) -> list[str]:
    return [sys.executable, "-m", "framepipe", "record", "--config", str(conf), "--duration", "1", "--no-audio"]


def display_env(display: str) -> dict[str, str]:
    return dict(os.environ, DISPLAY=display)
