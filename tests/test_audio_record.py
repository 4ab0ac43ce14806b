"""Audio end to end: a real PulseAudio (null sinks, tone players), a real Xvfb test screen, real recordings.

The tone players put a burst at every whole second of the clock that paints the test screen (1 kHz
into ``fp_out``, whose monitor is ``system``; 2 kHz into ``fp_mic``); files are judged from what
they hold (``framepipe.proof.avsync``) and decoded by ffmpeg.
"""

from __future__ import annotations

import ctypes.util
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import assert_recorder_kept_up, decodes_cleanly, framepipe_cmd, run_framepipe

from framepipe.proof import avsync
from framepipe.proof.pulse import PulseServer, have_pulseaudio
from framepipe.proof.testscreen import load_info, start_testscreen
from framepipe.proof.tone import load_info as load_tone
from framepipe.proof.tone import start_tone
from framepipe.proof.xvfb import VirtualScreen

pytestmark = pytest.mark.skipif(
    not have_pulseaudio() or shutil.which("Xvfb") is None or shutil.which("ffmpeg") is None
    or ctypes.util.find_library("portaudio") is None,
    reason="needs pulseaudio, Xvfb, ffmpeg and libportaudio2",
)  # fmt: skip

FRAME_MS = 1000 / 60


@dataclass
class Rig:
    """A screen with the test screen, and a sound server with a tone in each sink."""

    display: str
    pulse: PulseServer
    screen_info: Path
    tones: dict[str, Path]  # sink -> the tone player's info file


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    tmp = tmp_path_factory.mktemp("rig")
    with VirtualScreen(640, 480) as screen, PulseServer(("fp_out", "fp_mic")) as pulse:
        tones = {"fp_out": tmp / "tone-out.json", "fp_mic": tmp / "tone-mic.json"}
        players = [start_tone("fp_out", info_path=tones["fp_out"], freq=1000, env=pulse.env()),
                   start_tone("fp_mic", info_path=tones["fp_mic"], freq=2000, env=pulse.env())]  # fmt: skip
        painter = start_testscreen(screen.display, 60, info_path=tmp / "screen.json")
        try:
            yield Rig(screen.display, pulse, tmp / "screen.json", tones)
        finally:
            for proc in (painter, *players):
                proc.terminate()
                proc.wait(10)


def record(display: str, out: Path, *flags: str) -> tuple[dict[str, Any], str]:
    """Record with ``flags``; the stats and stderr (the run must succeed)."""
    stats = out.with_suffix(".json")
    result = run_framepipe("record", str(out), "--stats-json", str(stats), "--quiet", *flags, display=display)
    assert result.returncode == 0, result.stderr
    return json.loads(stats.read_text()), result.stderr


@pytest.fixture
def pulse_env(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """This rig's server for the framepipe processes started by the test."""
    monkeypatch.setenv("PULSE_SERVER", rig.pulse.server)
    monkeypatch.delenv("PULSE_SOURCE", raising=False)
    return rig.pulse.env()


def level(track: avsync.Track, freq: float) -> float:
    """Strength of the ``freq`` tone in a track: its spectrum's peak within 10 Hz of it."""
    spectrum = np.abs(np.fft.rfft(track.samples * np.hanning(len(track.samples))))
    hz = np.fft.rfftfreq(len(track.samples), 1 / track.rate)
    return float(spectrum[np.abs(hz - freq) <= 10].max())


def test_system_audio_stays_within_a_frame_of_the_picture(rig: Rig, pulse_env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "sync.mkv"
    stats, _ = record(rig.display, out, "--duration", "10", "--fps", "60", "--audio", "system")
    report = avsync.judge_file(out, load_info(rig.screen_info), load_tone(rig.tones["fp_out"]), stats["base_time_ns"])
    assert report.track == "system" and len(report.bursts) >= 9, report.summary()
    # every burst lands within one frame of the frame that shows the same instant, start as end
    assert report.frame_offset_ms_max <= FRAME_MS and report.offset_ms_max <= FRAME_MS, report.summary()
    # start as end: the halves agree (a few ms of settling on a loaded machine is allowed for here; the drift
    # over a minute, 2 ms at most, is measured by benchmarks/av_sync.py)
    offsets = [b.offset_ms for b in report.bursts]
    half = len(offsets) // 2
    assert abs(np.median(offsets[half:]) - np.median(offsets[:half])) < 4, offsets
    assert abs(report.length_diff_ms) <= FRAME_MS, report.summary()  # the audio is as long as the video
    assert decodes_cleanly(out) == ""
    source = stats["audio"]["sources"]["system"]
    # the recording does not wait for PortAudio: a stream that opened a moment after the video started leaves
    # that moment as counted silence at the start (and only there: the rest is the device's own samples)
    assert source["silence_ms"] <= 250 and source["stopped"] == 0 and source["overflows"] == 0, source
    made = source["samples_written"] + source["samples_silence"]  # the device's samples and the silence before them
    assert abs(made - 10 * 48_000) <= 1024 and source["samples_captured"] > 0
    assert stats["audio"]["encoded_samples"]["system"] == made  # every sample made is in the file
    assert_recorder_kept_up(stats)


def test_two_sources_give_two_tracks_and_a_mix_with_gains(rig: Rig, pulse_env: dict[str, str], tmp_path: Path) -> None:
    config = tmp_path / "mix.toml"
    config.write_text("[audio]\ngains = [1.0, 0.5]\n")
    out = tmp_path / "two.mkv"
    stats, _ = record(rig.display, out, "--duration", "3", "--audio", "system",
                      "--audio", "pulse:fp_mic.monitor", "--mix", "--config", str(config))  # fmt: skip
    names = ["mix", "system", "pulse:fp_mic.monitor"]
    assert avsync.audio_tracks(out) == names
    assert stats["audio"]["tracks"] == names and set(stats["audio"]["sources"]) == set(names[1:])
    for i in range(3):  # each track plays in ffmpeg without a word
        done = subprocess.run(["ffmpeg", "-v", "error", "-i", str(out), "-map", f"0:a:{i}", "-f", "null", "-"],
                              capture_output=True, text=True, check=False)  # fmt: skip
        assert done.returncode == 0 and done.stderr.strip() == "", done.stderr
    mix, system, mic = (avsync.read_track(out, i) for i in range(3))
    assert level(system, 2000) < 0.03 * level(system, 1000)  # its own tone only
    assert level(mic, 1000) < 0.03 * level(mic, 2000)
    assert level(mix, 1000) == pytest.approx(level(system, 1000), rel=0.15)  # gain 1.0
    assert level(mix, 2000) == pytest.approx(0.5 * level(mic, 2000), rel=0.15)  # gain 0.5
    assert decodes_cleanly(out) == ""


def test_unloading_the_sink_keeps_the_video_and_counts_the_silence(rig: Rig, tmp_path: Path) -> None:
    out, stats_path = tmp_path / "gone.mkv", tmp_path / "gone.json"
    with PulseServer(("fp_gone",)) as pulse:  # its own server: nothing to move the stream to
        env = dict(os.environ, DISPLAY=rig.display, **pulse.env())
        proc = subprocess.Popen(
            framepipe_cmd("record", str(out), "--duration", "6", "--audio", "system", "--stats-json", str(stats_path),
                          "--quiet"),
            env=env, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not (out.exists() and out.stat().st_size > 20_000) and time.monotonic() < deadline:
            time.sleep(0.1)  # recording: the encoder has written its first second
        time.sleep(1.0)
        pulse.unload_sink("fp_gone")
        _, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err
    assert "audio source 'system' stopped" in err and "Traceback" not in err
    stats = json.loads(stats_path.read_text())
    source = stats["audio"]["sources"]["system"]
    assert source["stopped"] == 1 and source["silence_ms"] >= 1500, source
    assert stats["frames"]["written"] == 360  # the whole video
    assert decodes_cleanly(out) == ""
    track = avsync.read_track(out)
    assert abs(track.end - 6.0) <= FRAME_MS / 1000  # silence to the end, as long as the video
    assert any("stopped" in w for w in stats["warnings"])


def test_devices_lists_audio_inputs_and_pulse_sources(rig: Rig, pulse_env: dict[str, str]) -> None:
    done = run_framepipe("devices", "--json", display=rig.display)
    assert done.returncode == 0, done.stderr
    audio = json.loads(done.stdout)["audio"]
    assert any(d["name"] == "pulse" for d in audio["inputs"])
    assert {"fp_out.monitor", "fp_mic.monitor"} <= {s["name"] for s in audio["pulse_sources"]}
    text = run_framepipe("devices", display=rig.display).stdout
    assert "audio source pulse:fp_mic.monitor" in text


def test_opus_in_matroska(rig: Rig, pulse_env: dict[str, str], tmp_path: Path) -> None:
    config = tmp_path / "opus.toml"
    config.write_text('[audio]\ncodec = "opus"\n')
    out = tmp_path / "opus.mkv"
    record(rig.display, out, "--duration", "2", "--audio", "system", "--config", str(config))
    done = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "a", "-show_entries", "stream=codec_name",
                           "-of", "csv=p=0", str(out)], capture_output=True, text=True, check=False)  # fmt: skip
    assert done.stdout.strip() == "opus"
    assert decodes_cleanly(out) == ""
    bad = run_framepipe("record", str(tmp_path / "o.mp4"), "--duration", "1", "--config", str(config),
                        display=rig.display)  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "opus needs an .mkv output" in bad.stderr


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (("--audio", "no-such-input"), "unknown audio source 'no-such-input'"),
        (("--audio", "system", "--no-audio"), "--no-audio and --audio contradict each other"),
    ],
)
def test_bad_audio_flags_are_one_line(rig: Rig, pulse_env: dict[str, str], tmp_path: Path, flags: tuple[str, ...],
                                      needle: str) -> None:  # fmt: skip
    out = tmp_path / "o.mkv"
    done = run_framepipe("record", str(out), "--duration", "1", *flags, display=rig.display)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and needle in done.stderr, done.stderr
    assert not out.exists()


def test_without_an_input_the_default_records_video_only(rig: Rig, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("PULSE_SERVER", f"unix:{tmp_path}/no-server")
    probe = run_framepipe("devices", "--json", display=rig.display)
    if json.loads(probe.stdout)["audio"]["inputs"]:
        pytest.skip("this machine has an audio input of its own")
    out = tmp_path / "silent.mkv"
    stats, err = record(rig.display, out, "--duration", "1")
    assert "no microphone (default input): no default audio input; recording video only" in err, err
    assert avsync.audio_tracks(out) == [] and stats["audio"] is None and stats["frames"]["written"] == 60


def test_a_call_records_the_microphone_the_computer_and_their_mix_first(rig: Rig, pulse_env: dict[str, str],
                                                                         tmp_path: Path) -> None:  # fmt: skip
    rig.pulse.pactl("set-default-source", "fp_mic.monitor")  # the "microphone": what the 2 kHz player plays
    try:
        out = tmp_path / "call.mkv"
        stats, err = record(rig.display, out, "--duration", "6", "--fps", "60")  # no audio flags: the default
    finally:
        rig.pulse.pactl("set-default-source", "fp_out.monitor")
    assert avsync.audio_tracks(out) == ["mix", "default", "system"], err
    assert "warning" not in err, err
    mix, mic, system = (avsync.read_track(out, i) for i in range(3))
    assert level(mix, 1000) > 0.5 * level(system, 1000) and level(mix, 2000) > 0.5 * level(mic, 2000)  # both sides
    assert level(mic, 1000) < 0.03 * level(mic, 2000)  # the microphone's track is the microphone alone
    screen, tone = load_info(rig.screen_info), load_tone(rig.tones["fp_out"])
    for track in (0, 2):  # the computer's sound, in the mix and in its own track
        report = avsync.judge_file(out, screen, tone, stats["base_time_ns"], track=track)
        assert len(report.bursts) >= 5 and report.offset_ms_max <= 17, report.summary()
    assert decodes_cleanly(out) == ""
    assert_recorder_kept_up(stats)
