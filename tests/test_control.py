"""The control plane end to end: a real recording on Xvfb (with PulseAudio and a tone), steered by
``framepipe ctl`` and signals; the files judged from what they hold."""

from __future__ import annotations

import itertools
import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import NEEDS_SOUND, assert_recorder_lost_nothing, decodes_cleanly, framepipe_cmd, screen_with_sound

from framepipe.proof import avsync, judge
from framepipe.proof.testscreen import load_info, start_testscreen
from framepipe.proof.tone import load_info as load_tone
from framepipe.proof.xvfb import VirtualScreen
from pipeline import control

FPS = 60
FRAME_S = 1 / FPS


def ctl(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(framepipe_cmd("ctl", *args), capture_output=True, text=True, timeout=120, check=False,
                          env=env)  # fmt: skip


def wait_state(pid: int, state: str, timeout: float = 30) -> dict[str, Any]:
    """Poll ``ctl status --json`` until the recording says ``state``."""
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        done = ctl("status", "--json", "--pid", str(pid))
        if done.returncode == 0:
            last = json.loads(done.stdout)
            if last["state"] == state:
                return last
        time.sleep(0.1)
    raise AssertionError(f"recording {pid} never said {state}: {last}")


def start_recording(out: Path, *flags: str, display: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    full = dict(os.environ if env is None else env, DISPLAY=display)
    return subprocess.Popen(framepipe_cmd("record", str(out), "--quiet", *flags), env=full, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip


def assert_nothing_lost(frames: list[judge.Frame], stats: dict[str, Any], screen_info: Path) -> None:
    """No frame lost inside any recorded part; each part's file times moved back by the pauses before it; the
    ticks the parts leave out, all together, as many as the encoder said."""
    shift, left_out = 0.0, 0
    spans = stats["pause_spans_s"]
    for k, part in enumerate(avsync.pieces(frames)):
        if k:
            shift += spans[k - 1][1] - spans[k - 1][0]
        assert_recorder_lost_nothing(part, screen_info, stats, shift, main_file=True, whole=False)
        left_out += len(judge.recorder_grabs(part, stats).left_out_s)
    assert left_out == stats["frames"]["repeats_not_written"], stats["frames"]


def jumps(frames: list[judge.Frame]) -> list[tuple[judge.Frame, judge.Frame]]:
    """Consecutive frames (as read) whose states jump more than a pause's cut."""
    parts = avsync.pieces(frames)
    return [(a[-1], b[0]) for a, b in itertools.pairwise(parts)]


@NEEDS_SOUND
def test_pause_and_resume_from_ctl_keep_every_frame_and_the_sound_in_sync(
    runtime_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, stats_path = tmp_path / "out.mkv", tmp_path / "out.json"
    # 720p: the subject is the pause; at 1080p60 with the tone and system audio the encoder alone took 0.85 of
    # CI's 2 cores (the 1080p60 claim is test_record's and the bench's)
    with screen_with_sound(tmp_path, monkeypatch, size=(1280, 720)) as display:
        proc = start_recording(out, "--audio", "system", "--stats-json", str(stats_path), display=display)
        wait_state(proc.pid, "recording")
        steps = []
        for wait_s, verb in ((6, "pause"), (3, "resume"), (4, "pause"), (2, "resume"), (4, "stop")):
            time.sleep(wait_s)
            steps.append(ctl(verb, "--pid", str(proc.pid)))
        _, err = proc.communicate(timeout=60)
    for done in steps:
        assert done.returncode == 0, done.stderr
    assert steps[-1].stdout.strip() == str(out)  # stop answers once the file is closed, with its path
    assert proc.returncode == 0, err
    info = load_info(tmp_path / "screen.json")
    frames = judge.read_codes(out, info["code_rect"])
    cuts = jumps(frames)
    assert len(cuts) == 2, [(a.state, b.state) for a, b in cuts]
    for (before, after), paused in zip(cuts, (3.0, 2.0), strict=True):
        assert after.state is not None and before.state is not None
        assert abs((after.state - before.state) / FPS - paused) <= 0.4, (before, after)
        assert after.time - before.time == pytest.approx(FRAME_S, abs=0.002)  # one frame on across the cut
    stats = json.loads(stats_path.read_text())
    assert_nothing_lost(frames, stats, tmp_path / "screen.json")
    sync = avsync.sync_by_piece(frames, avsync.read_track(out, 0), info, load_tone(tmp_path / "tone.json"))
    assert len(sync) == 3 and sum(len(r.bursts) for r in sync) >= 10, [r.summary() for r in sync]
    for piece in sync:
        assert piece.offset_ms_max <= 17, piece.summary()
        print(f"pause: part: {piece.summary()}")  # pytest -s shows the figures
    for before, after in cuts:
        print(f"pause: cut {before.state} -> {after.state}: {(after.state - before.state) / FPS:.2f} s of states, "  # type: ignore[operator]
              f"file time {before.time:.3f} -> {after.time:.3f} s")
    assert decodes_cleanly(out) == ""
    assert stats["pauses"] == 2 and abs(stats["paused_s"] - 5.0) < 0.5, stats["paused_s"]
    # nothing dropped by the recorder (a full ring, shedding); a capture wake a tick late on a loaded machine
    # (capture_late, counted) is the machine's, and what the file shows was judged above, frame by frame
    reasons = stats["frames"]["dropped_by_reason"]
    assert reasons["ring_full"] == 0 and reasons["encoder_shed"] == 0, stats["frames"]


def test_status_signals_socket_and_no_network(runtime_dir: Path, virtual_screen: VirtualScreen, tmp_path: Path) -> None:
    out = tmp_path / "sig.mkv"
    proc = start_recording(out, "--no-audio", display=virtual_screen.display)
    try:
        status = wait_state(proc.pid, "recording")
        assert status["outputs"] == [str(out)] and "captured" in status["frames"]
        for key in ("elapsed_s", "recorded_s", "drops", "ring", "audio"):
            assert key in status, status
        os.kill(proc.pid, signal.SIGUSR2)
        paused = wait_state(proc.pid, "paused")
        os.kill(proc.pid, signal.SIGUSR2)
        wait_state(proc.pid, "recording")
        assert paused["pauses"] == 1
        sock = control.socket_path(proc.pid)
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600 and stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
        group = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        for p in group:
            listening = [c for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN or not c.raddr]
            assert listening == [], (p.name(), listening)
        marker = ctl("marker", "here", "--json", "--pid", str(proc.pid))
        assert marker.returncode == 0 and json.loads(marker.stdout)["text"] == "here"
        replay = ctl("save-replay", "--pid", str(proc.pid))
        assert replay.returncode == 2 and "no replay buffer" in replay.stderr and len(replay.stderr.splitlines()) == 1
        stopped = ctl("stop", "--pid", str(proc.pid))
        assert stopped.returncode == 0 and stopped.stdout.strip() == str(out), stopped.stderr
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert decodes_cleanly(out) == ""
    assert not control.socket_path(proc.pid).exists()  # gone with the recording
    nothing = ctl("status")
    assert nothing.returncode == 2 and len(nothing.stderr.strip().splitlines()) == 1, nothing.stderr
    assert "no recording is running" in nothing.stderr and "Traceback" not in nothing.stderr


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("save-replay", "-3"), "number of seconds above 0"),
        (("save-replay", "nan"), "number of seconds above 0"),
        (("marker",), "marker takes a text"),
        (("pause", "now"), "pause takes no argument"),
        (("jump",), "invalid choice"),
        (("status", "--pid", "x"), "invalid int value"),
    ],
)
def test_bad_ctl_arguments_are_one_line(runtime_dir: Path, args: tuple[str, ...], words: str) -> None:
    done = ctl(*args)
    assert done.returncode == 2 and words in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_several_recordings_need_a_pid(runtime_dir: Path, virtual_screen: VirtualScreen, tmp_path: Path) -> None:
    procs = [start_recording(tmp_path / f"r{i}.mkv", "--no-audio", "--fps", "10", display=virtual_screen.display)
             for i in range(2)]  # fmt: skip
    try:
        for p in procs:
            wait_state(p.pid, "recording")
        both = ctl("status")
        assert both.returncode == 2 and all(str(p.pid) in both.stderr for p in procs), both.stderr
        for p in procs:
            assert ctl("stop", "--pid", str(p.pid)).returncode == 0
            p.wait(30)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("useradd") is None or shutil.which("runuser") is None
                    or not Path("/usr/bin/python3").exists(),
                    reason="needs root to create a second user, and the system's python3")  # fmt: skip
def test_another_user_cannot_read_or_steer_a_recording(virtual_screen: VirtualScreen, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    name = "fp-other"
    if subprocess.run(["id", name], capture_output=True, check=False).returncode != 0:
        subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", name], check=True)
    other = pwd.getpwnam(name)
    python = "/usr/bin/python3"
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)  # the temp-dir folder: shared /tmp, so the test bites
    proc = start_recording(tmp_path / "mine.mkv", "--no-audio", "--fps", "10", display=virtual_screen.display)
    try:
        wait_state(proc.pid, "recording")
        sock = control.socket_path(proc.pid)
        probe = (  # the system's python: ours may live where the other user cannot reach
            "import os, socket, sys\n"
            "s = socket.socket(socket.AF_UNIX)\n"
            "try:\n    s.connect(sys.argv[1]); print('connected')\n"
            "except OSError as e:\n    print('refused', e.errno)\n"
            "try:\n    print('listed', os.listdir(os.path.dirname(sys.argv[1])))\n"
            "except OSError as e:\n    print('unlisted', e.errno)\n"
        )
        env = {"PATH": os.environ["PATH"], "HOME": "/tmp"}
        done = subprocess.run(["runuser", "-u", name, "--", python, "-c", probe, str(sock)], env=env,
                              capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
        lines = done.stdout.splitlines()
        assert len(lines) == 2 and lines[0].startswith("refused") and lines[1].startswith("unlisted"), done
        assert sock.parent.stat().st_uid != other.pw_uid
    finally:
        ctl("stop", "--pid", str(proc.pid))
        proc.wait(30)


def test_an_api_style_pause_jumps_once(runtime_dir: Path, virtual_screen: VirtualScreen, tmp_path: Path) -> None:
    """The Python API's must-show (4 s, pause 2 s, 3 s) through the same vocabulary the API uses."""
    from framepipe import Recorder

    out = tmp_path / "api.mkv"
    painter = start_testscreen(virtual_screen.display, FPS, info_path=tmp_path / "screen.json")
    try:
        os.environ["DISPLAY"] = virtual_screen.display
        with Recorder(str(out), fps=60, audio=False, profile=False, stats_json=str(tmp_path / "api.json")) as rec:
            time.sleep(4)
            rec.pause()
            assert rec.status()["state"] == "paused"
            time.sleep(2)
            rec.resume()
            time.sleep(3)
        assert rec.returncode == 0
    finally:
        painter.terminate()
        painter.wait(10)
    info = load_info(tmp_path / "screen.json")
    frames = judge.read_codes(out, info["code_rect"])
    cuts = jumps(frames)
    assert len(cuts) == 1
    before, after = cuts[0]
    assert after.state is not None and before.state is not None
    assert abs((after.state - before.state) / FPS - 2.0) <= 0.4
    print(f"api: one cut {before.state} -> {after.state}: {(after.state - before.state) / FPS:.2f} s of states, "
          f"file time {before.time:.3f} -> {after.time:.3f} s, {len(frames)} frames")
    assert_nothing_lost(frames, json.loads((tmp_path / "api.json").read_text()), tmp_path / "screen.json")
    assert decodes_cleanly(out) == ""


def test_without_a_usable_socket_folder_it_records_and_says_so(virtual_screen: VirtualScreen, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/proc")  # a folder nobody may create in
    out = tmp_path / "o.mkv"
    proc = start_recording(out, "--no-audio", "--duration", "1", display=virtual_screen.display)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "warning: no control socket" in err and "Traceback" not in err
    assert decodes_cleanly(out) == ""
