"""Bad input: one line that says what to do, exit status 2, no traceback, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import framepipe_segments, run_framepipe

from framepipe.proof.xvfb import VirtualScreen

CASES = [
    (("--fps", "abc"), "argument --fps: invalid float value"),
    (("--fps", "0"), "screen.fps = 0.0 is out of range; allowed: 1 to 240"),
    (("--fps", "500"), "allowed: 1 to 240"),
    (("--region", "1,2,3"), "--region takes X,Y,WIDTH,HEIGHT"),
    (("--region", "0,0,8,8"), "width and height at least 16"),
    (("--region", "1000,500,1280,720"), "does not fit on monitor 1 (1920x1080): choose a region inside it"),
    (("--monitor", "7"), "monitor 7 does not exist"),
    (("--preset", "quick"), "not a libx264 preset; choose one of: ultrafast"),
    (("--crf", "99"), "encode.crf = 99 is out of range; allowed: 0 to 51"),
    (("--crf", "x"), "argument --crf: invalid int value"),
    (("--encoder", "divx"), "encode.encoder = 'divx' is not allowed; choose one of: libx264"),
    (("--duration", "-3"), "expected a number of seconds above 0"),
    (("--config", "/nonexistent/p.toml"), "does not exist: check the path given to --config"),
    (("--bogus",), "unrecognized arguments: --bogus"),
]


def assert_one_line_error(result, needle: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert needle in lines[0], lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("flags", "needle"), CASES)
def test_bad_flag(virtual_screen: VirtualScreen, tmp_path: Path, flags: tuple[str, ...], needle: str) -> None:
    out = tmp_path / "out.mkv"
    args = ["record", str(out), "--duration", "1", *flags] if flags else ["record"]
    result = run_framepipe(*args, display=virtual_screen.display)
    assert_one_line_error(result, needle)
    assert not out.exists() and list(tmp_path.iterdir()) == []
    assert not any(n.endswith("_video") for n in framepipe_segments())


def test_bad_config_file(virtual_screen: VirtualScreen, tmp_path: Path) -> None:
    conf = tmp_path / "p.toml"
    conf.write_text("[encode]\nthreads = -1\n")
    result = run_framepipe("record", str(tmp_path / "o.mkv"), "--config", str(conf), display=virtual_screen.display)
    assert_one_line_error(result, "encode.threads = -1 is out of range; allowed: 0 to 64")
    assert not (tmp_path / "o.mkv").exists()


@pytest.mark.parametrize(
    ("output", "needle"),
    [
        ("missing/dir/o.mkv", "does not exist: create it first"),
        ("o.avi", "cannot write .avi: name the output .mkv, .mp4 or .mov"),
        ("o", "cannot write files without an extension"),
    ],
)
def test_bad_output_path(virtual_screen: VirtualScreen, tmp_path: Path, output: str, needle: str) -> None:
    result = run_framepipe("record", str(tmp_path / output), "--duration", "1", display=virtual_screen.display)
    assert_one_line_error(result, needle)
    assert list(tmp_path.iterdir()) == []


def test_unwritable_folder(virtual_screen: VirtualScreen) -> None:
    result = run_framepipe("record", "/proc/o.mkv", "--duration", "1", display=virtual_screen.display)
    assert_one_line_error(result, "cannot write in folder /proc")


def test_existing_output_needs_overwrite(virtual_screen: VirtualScreen, tmp_path: Path) -> None:
    out = tmp_path / "o.mkv"
    out.write_bytes(b"precious")
    result = run_framepipe("record", str(out), "--duration", "1", display=virtual_screen.display)
    assert_one_line_error(result, "exists: pass --overwrite to replace it")
    assert out.read_bytes() == b"precious"


def test_no_display(tmp_path: Path) -> None:
    result = run_framepipe("record", str(tmp_path / "o.mkv"), "--duration", "1", display=None)
    assert_one_line_error(result, "cannot open the display")
    assert list(tmp_path.iterdir()) == []


def test_devices_without_display() -> None:
    assert_one_line_error(run_framepipe("devices", display=None), "cannot open the display")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("screen = 5\n", "[screen] must be a table of settings"),
        ('encode = "fast"\n', "[encode] must be a table of settings"),
        ("[[screen]]\n", "must be a table of settings"),
        ("[screen]\nfps = nan\n", "screen.fps = nan is not a number we can use"),
        ("[screen]\nring_seconds = inf\n", "screen.ring_seconds = inf is not a number we can use"),
        ("[encode]\ngop_seconds = nan\n", "encode.gop_seconds = nan is not a number we can use"),
        ("[screen]\nfps = 1" + "0" * 5000 + "\n", "holds a number too long to read"),
        ("[screen]\nfps = 1" + "0" * 400 + "\n", "screen.fps = inf is out of range; allowed: 1 to 240"),
        ("[encode]\ngop_seconds = 0.05\n", "encode.gop_seconds = 0.05 is too short"),
    ],
)
def test_bad_config_shapes_are_one_line(virtual_screen: VirtualScreen, tmp_path: Path, text: str, needle: str) -> None:
    conf = tmp_path / "p.toml"
    conf.write_text(text)
    result = run_framepipe("record", str(tmp_path / "o.mkv"), "--config", str(conf), "--duration", "1",
                           display=virtual_screen.display)  # fmt: skip
    assert_one_line_error(result, needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.toml"]


def test_output_paths_are_never_followed_or_shared(virtual_screen: VirtualScreen, tmp_path: Path) -> None:
    target = tmp_path / "precious.txt"
    target.write_text("precious")
    link = tmp_path / "link.mkv"
    link.symlink_to(target)
    refused = run_framepipe("record", str(link), "--duration", "1", "--no-audio", display=virtual_screen.display)
    assert_one_line_error(refused, "is a symlink: framepipe never writes through one")
    dangling = tmp_path / "dangling.mkv"
    dangling.symlink_to(tmp_path / "nowhere.mkv")
    assert_one_line_error(run_framepipe("record", str(dangling), "--duration", "1", "--no-audio",
                                        display=virtual_screen.display), "is a symlink")  # fmt: skip
    assert not (tmp_path / "nowhere.mkv").exists()
    replaced = run_framepipe("record", str(link), "--duration", "1", "--no-audio", "--overwrite", "--quiet",
                             display=virtual_screen.display)  # fmt: skip
    assert replaced.returncode == 0, replaced.stderr
    assert target.read_text() == "precious" and not link.is_symlink() and link.stat().st_size > 0  # the link went
    long_name = run_framepipe("record", str(tmp_path / ("a" * 300 + ".mkv")), "--duration", "1",
                              display=virtual_screen.display)  # fmt: skip
    assert_one_line_error(long_name, "File name too long")


def test_a_name_ffmpeg_would_read_as_a_protocol_is_a_plain_file(virtual_screen: VirtualScreen, tmp_path: Path) -> None:
    done = run_framepipe("record", "rec:1.mkv", "--duration", "1", "--no-audio", "--quiet",
                         display=virtual_screen.display, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "rec:1.mkv").stat().st_size > 0
