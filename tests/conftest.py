"""Shared fixtures: a virtual X screen for tests that need a real display."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from framepipe.proof.xvfb import VirtualScreen


@pytest.fixture(scope="session")
def virtual_screen() -> Iterator[VirtualScreen]:
    """One 1920x1080 Xvfb screen for the whole session; skips when Xvfb is not installed."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed")
    with VirtualScreen(1920, 1080) as screen:
        yield screen


@pytest.fixture(autouse=True)
def own_config_dir(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every test gets an empty $XDG_CONFIG_HOME: no tuned profile of the machine leaks into a recording."""
    folder = tmp_path_factory.mktemp("config")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(folder))
    return folder


# --- recording helpers (the core pipeline's integration tests) ---------------------------

import contextlib  # noqa: E402
import ctypes.util  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from framepipe.proof import judge  # noqa: E402
from framepipe.proof.pulse import PulseServer, have_pulseaudio  # noqa: E402
from framepipe.proof.testscreen import load_info, start_testscreen  # noqa: E402
from framepipe.proof.tone import start_tone  # noqa: E402

SHM = Path("/dev/shm")


def framepipe_segments(pid: int | None = None) -> set[str]:
    """framepipe's shared-memory segments now in /dev/shm (of one supervisor ``pid`` if given)."""
    pattern = f"fp_{pid}_*" if pid is not None else "fp_*"
    return {p.name for p in SHM.glob(pattern)} if SHM.is_dir() else set()


def framepipe_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "framepipe", *args]


def run_framepipe(*args: str, display: str | None = None, timeout: float = 120,
                  cwd: Path | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """Run the framepipe command to its end, output captured."""
    env = dict(os.environ)
    if display is None:
        env.pop("DISPLAY", None)
    else:
        env["DISPLAY"] = display
    return subprocess.run(framepipe_cmd(*args), env=env, capture_output=True, text=True, timeout=timeout, check=False,
                          cwd=cwd)  # fmt: skip


@dataclass
class Recording:
    """A finished recording of the test screen and what it shows."""

    path: Path
    result: subprocess.CompletedProcess[str]
    stats: dict[str, Any]
    info: dict[str, Any]
    report: judge.Report
    attribution: judge.Attribution  # missing states: the recorder's fault, its counted drops, the painter's lateness


@pytest.fixture
def record_testscreen(virtual_screen: VirtualScreen, tmp_path: Path) -> Any:
    """Record the test screen at ``fps`` with extra flags; judge the file."""

    def run(
        name: str, *flags: str, fps: float = 60, duration: float = 5, origin: tuple[int, int] = (0, 0)
    ) -> Recording:
        info_path = tmp_path / f"{name}.screen.json"
        stats_path = tmp_path / f"{name}.stats.json"
        out = tmp_path / name
        painter = start_testscreen(virtual_screen.display, fps, info_path=info_path)
        try:
            result = run_framepipe(
                "record", str(out), "--duration", str(duration), "--fps", str(fps), "--no-audio",
                "--stats-json", str(stats_path), *flags, display=virtual_screen.display,
            )  # fmt: skip
        finally:
            painter.terminate()
            painter.wait(10)
        assert result.returncode == 0, result.stderr
        info = load_info(info_path)
        frames = judge.read_codes(out, info["code_rect"], origin)
        stats = json.loads(stats_path.read_text())
        painter_stats = json.loads(Path(f"{info_path}.stats").read_text())
        grabs = judge.recorder_grabs(frames, stats)
        assert not judge.repeats_not_held(frames, grabs), judge.repeats_not_held(frames, grabs)
        attribution = judge.attribute_missing(frames, info, stats["base_time_ns"], painter_stats, grabs=grabs)
        return Recording(out, result, stats, info, judge.judge(frames, 1 / fps), attribution)

    return run


def decodes_cleanly(path: Path) -> str:
    """What ffmpeg says when decoding the whole file (empty means clean)."""
    done = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "null", "-"], capture_output=True, text=True, check=False
    )
    return done.stderr.strip()


def assert_recorder_lost_nothing(frames: list[judge.Frame], screen_info: Path, stats: dict[str, Any],
                                 shift_s: float = 0.0, unseen: int = 0, main_file: bool = False,
                                 whole: bool = True) -> judge.Report:  # fmt: skip
    """What is missing from ``frames`` was painted too late to be seen (the test screen's own lateness on a
    loaded machine) or is a swap, never the recorder's loss unsaid. ``shift_s`` moves file times back onto
    the recording's running time (the pauses before a part); ``unseen``: states the test knows were not on
    the screen as a code (a resized window cleared to its background until its program paints again).
    ``main_file``: the frames are the recording's own file, whose ticks the encoder's stats name (its repeats,
    its late grabs, the repeats it left out): a state seen only at a tick the recorder said it repeated (a wake
    late, a full ring), grabbed late or left out is its counted loss; each repeat it names must show the held
    picture indeed, and the ticks the file leaves out are as many as it said (``whole``: ``frames`` are all of it;
    a caller judging a file in parts sums the parts' ``left_out_s`` instead)."""
    info = load_info(screen_info)
    painter = json.loads(Path(f"{screen_info}.stats").read_text())
    report = judge.judge(frames, 1 / float(info["fps"]))
    grabs = judge.recorder_grabs(frames, stats) if main_file else judge.Grabs()
    assert not judge.repeats_not_held(frames, grabs), (judge.repeats_not_held(frames, grabs), report.summary())
    if main_file and whole:
        assert len(grabs.left_out_s) == stats["frames"]["repeats_not_written"], (report.summary(), stats["frames"])
    moved = [dataclasses.replace(f, time=f.time + shift_s) for f in frames]
    blame = judge.attribute_missing(moved, info, stats["base_time_ns"], painter, grabs=grabs)
    drops = stats.get("frames", {}).get("dropped_by_reason")
    assert blame.recorder_lost <= report.swaps + unseen, (blame, report.summary(), drops)
    assert report.lost <= blame.screen_late + blame.counted + unseen, (blame, report.summary(), drops)
    return report


def assert_every_tick(report: judge.Report, stats: dict[str, Any], ticks: int) -> None:
    """Each of the recording's ``ticks`` is in the file, or is a repeat the encoder said it left out (behind
    the clock on a loaded machine, it keeps the picture on screen and catches up: counted, never unsaid)."""
    left_out = stats["frames"]["repeats_not_written"]
    assert report.frames_written + left_out == ticks, (report.summary(), stats["frames"])


@contextlib.contextmanager
def painting(display: str, info_path: Path, fps: float = 60) -> Iterator[subprocess.Popen[bytes]]:
    """The numbered test screen painting for the block's length (its stats file is written as it ends)."""
    painter = start_testscreen(display, fps, info_path=info_path)
    try:
        yield painter
    finally:
        painter.terminate()
        painter.wait(10)


def assert_recorder_kept_up(stats: dict[str, Any]) -> None:
    """Nothing dropped for a full ring or shed by the encoder: the recorder kept up. A wake a whole tick late
    on a loaded machine is the machine's: counted (capture_late), its ticks repeat the held picture in the
    file, and the file is judged there (``assert_recorder_lost_nothing``, ``main_file``)."""
    reasons, screen = stats["frames"]["dropped_by_reason"], stats["stages"]["screen"]["stats"]
    assert reasons["ring_full"] == 0 and reasons["encoder_shed"] == 0, (stats["frames"], screen)


@pytest.fixture
def small_disk(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A small tmpfs, 6 MiB unless the test's module sets SMALL_DISK (needs root, as CI and the dev machines are)."""
    mount = tmp_path / "small"
    mount.mkdir()
    size = getattr(request.module, "SMALL_DISK", "6m")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def runtime_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private XDG_RUNTIME_DIR: only this test's recordings listen there."""
    folder = tmp_path / "run"
    folder.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(folder))
    return folder


NEEDS_SOUND = pytest.mark.skipif(
    not have_pulseaudio() or shutil.which("ffmpeg") is None or ctypes.util.find_library("portaudio") is None,
    reason="needs pulseaudio, ffmpeg and libportaudio2",
)


@contextlib.contextmanager
def screen_with_sound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                      size: tuple[int, int] = (1920, 1080)) -> Iterator[str]:  # fmt: skip
    """An Xvfb of ``size`` with the numbered test screen (info in tmp_path/screen.json) and a PulseAudio whose
    null sink fp_out plays a 1 kHz burst every second of the same clock (tmp_path/tone.json); the display.
    The test screen and the tone are stopped on the way out (their stats files are written then)."""
    with VirtualScreen(*size) as screen, PulseServer(("fp_out",)) as pulse:
        monkeypatch.setenv("PULSE_SERVER", pulse.server)
        monkeypatch.delenv("PULSE_SOURCE", raising=False)
        tone = start_tone("fp_out", info_path=tmp_path / "tone.json", freq=1000, env=pulse.env())
        painter = start_testscreen(screen.display, 60, info_path=tmp_path / "screen.json")
        try:
            yield screen.display
        finally:
            for helper in (painter, tone):
                helper.terminate()
                helper.wait(10)
