"""The replay buffer end to end: a real recording with system audio, saved from ctl and signals; the saved
files judged from what they hold (frames, keyframe, A/V), the main file too."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import av
import pytest
from conftest import (
    NEEDS_SOUND,
    assert_every_tick,
    assert_recorder_lost_nothing,
    decodes_cleanly,
    framepipe_cmd,
    run_framepipe,
    screen_with_sound,
)
from test_bad_input import assert_one_line_error
from test_control import ctl, start_recording, wait_state

from framepipe.proof import avsync, judge
from framepipe.proof.testscreen import load_info
from framepipe.proof.tone import load_info as load_tone
from framepipe.proof.xvfb import VirtualScreen

FPS = 60


def first_is_keyframe(path: Path) -> bool:
    with av.open(str(path)) as container:
        packet = next(p for p in container.demux(container.streams.video[0]) if p.size)
        return bool(packet.is_keyframe) and packet.pts == 0


@NEEDS_SOUND
def test_save_replay_holds_the_last_seconds_in_sync(runtime_dir: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    main = tmp_path / "main.mkv"
    # 720p: 1080p60 with the test screen, the tone, system audio and a replay takes both of a 2-CPU machine
    with screen_with_sound(tmp_path, monkeypatch, size=(1280, 720)) as display:
        proc = start_recording(main, "--audio", "system", "--replay", "15", "--duration", "32",
                               "--stats-json", str(tmp_path / "s.json"), display=display)  # fmt: skip
        wait_state(proc.pid, "recording")
        time.sleep(24)
        asked_ns = time.monotonic_ns()
        saved = ctl("save-replay", "--pid", str(proc.pid))
        _, err = proc.communicate(timeout=60)
    assert saved.returncode == 0, saved.stderr
    replay = Path(saved.stdout.strip())
    assert replay.parent == tmp_path and replay.name.startswith("Replay ") and replay.suffix == ".mkv"
    assert proc.returncode == 0, err
    info = load_info(tmp_path / "screen.json")
    frames = judge.read_codes(replay, info["code_rect"])
    report = judge.judge(frames, 1 / FPS)
    held_s = frames[-1].time + 1 / FPS  # its span (ticks an encoder behind left out are in it, counted)
    assert 15 <= held_s <= 17.5, report.summary()
    main_frames = judge.read_codes(main, info["code_rect"])
    stats = json.loads((tmp_path / "s.json").read_text())
    whole = assert_recorder_lost_nothing(main_frames, tmp_path / "screen.json", stats, main_file=True)
    assert_every_tick(whole, stats, 32 * FPS)
    # the replay is the main file's own packets: the same frames, in the same order, from its keyframe on
    states = [f.state for f in main_frames]
    start = states.index(frames[0].state)
    assert [f.state for f in frames] == states[start : start + len(frames)]
    assert report.last_state is not None
    assert abs(judge.paint_time_ns(report.last_state, info) - asked_ns) <= 0.5e9  # up to the moment of asking
    assert first_is_keyframe(replay) and frames[0].time == 0
    assert decodes_cleanly(replay) == ""
    sync = avsync.sync_report(frames, avsync.read_track(replay, 0), info, load_tone(tmp_path / "tone.json"))
    assert len(sync.bursts) >= 14 and sync.offset_ms_max <= 17, sync.summary()
    print(f"replay: {replay.name}: {report.summary()}; last frame {(judge.paint_time_ns(report.last_state, info) - asked_ns) / 1e6:+.0f} ms from the save; {sync.summary()}")  # noqa: E501 (pytest -s shows it)
    held = stats["outputs"][1]
    assert held["kind"] == "replay" and held["saved"] == 1 and 15 <= held["held_s"] <= 17.5, held


def test_replay_only_twice_and_while_paused_to_videos(runtime_dir: Path, virtual_screen: VirtualScreen,
                                                      tmp_path: Path) -> None:  # fmt: skip
    home = tmp_path / "home"
    home.mkdir()
    env = dict(os.environ, HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), DISPLAY=virtual_screen.display)
    proc = subprocess.Popen(framepipe_cmd("record", "--replay", "3", "--no-audio", "--quiet"), env=env,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        wait_state(proc.pid, "recording")
        time.sleep(4)
        first, second = ctl("save-replay", "--pid", str(proc.pid)), ctl("save-replay", "2", "--pid", str(proc.pid))
        assert ctl("pause", "--pid", str(proc.pid)).returncode == 0
        time.sleep(0.5)
        paused = ctl("save-replay", "--pid", str(proc.pid))
        os.kill(proc.pid, signal.SIGUSR1)  # GPU Screen Recorder's signal
        time.sleep(2)
        assert ctl("stop", "--pid", str(proc.pid)).returncode == 0
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    for done in (first, second, paused):
        assert done.returncode == 0, done.stderr
    paths = [Path(d.stdout.strip()) for d in (first, second, paused)]
    assert all(p.parent == home / "Videos" for p in paths) and len(set(paths)) == 3
    assert "saved the replay to " in err
    saved = sorted((home / "Videos").glob("Replay *.mkv"))
    assert len(saved) == 4  # three asked by ctl, one by the signal
    for path in saved:
        assert decodes_cleanly(path) == "" and first_is_keyframe(path)
    lengths = [judge.count_frames(p) for p in paths]
    assert lengths[0] >= 3 * FPS and 2 * FPS <= lengths[1] < lengths[0], lengths


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (("--replay", "0"), "argument --replay: expected a number of seconds above 0"),
        (("--replay", "-5"), "argument --replay: expected a number of seconds above 0"),
        (("--replay", "10", "--replay-max-mb", "1"), "cannot hold one keyframe interval of video"),
        (("--replay-max-mb", "100"), "--replay-max-mb needs --replay SECONDS"),
        (("--replay", "10", "--replay-max-mb", "x"), "expected a number of megabytes above 0"),
        (("--stream", "http://example.org/live/k"), "cannot stream to http://; use rtmp:// or rtmps://"),
        (("--stream", "rtmp:/nohost"), "is not a URL: give rtmp://HOST[:PORT]/APP/KEY"),
        (("--stream", "rtmp://host:99999/live/k"), "is malformed"),
        (("--stream", "srt://127.0.0.1:9000/live"), "this build of PyAV has no SRT"),
    ],
)
def test_bad_replay_and_stream_flags(virtual_screen: VirtualScreen, tmp_path: Path, flags: tuple[str, ...],
                                     needle: str) -> None:  # fmt: skip
    out = tmp_path / "o.mkv"
    result = run_framepipe("record", str(out), "--duration", "1", *flags, display=virtual_screen.display)
    assert_one_line_error(result, needle)
    assert list(tmp_path.iterdir()) == []


def test_a_lone_stream_that_cannot_connect_is_one_line(virtual_screen: VirtualScreen, tmp_path: Path) -> None:
    result = run_framepipe("record", "--stream", "rtmp://127.0.0.1:9/live/secret", "--duration", "1", "--no-audio",
                           display=virtual_screen.display, cwd=tmp_path)  # fmt: skip
    assert_one_line_error(result, "cannot reach rtmp://127.0.0.1:9/live/*** (Connection refused)")
    assert "secret" not in result.stderr and list(tmp_path.iterdir()) == []
