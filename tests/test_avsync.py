"""The A/V sync judge on synthetic files: frame codes and tone bursts placed with known offsets."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from framepipe.proof import avsync
from framepipe.proof.judge import read_codes
from framepipe.proof.testscreen import CODE_HEIGHT, CODE_WIDTH, code_image
from framepipe.proof.tone import Placer, burst

FPS = 60
P_NS = 1e9 / FPS
RATE = 48_000
SIZE = (448, 128)
CODE_RECT = (8, 16, CODE_WIDTH, CODE_HEIGHT)
T0_NS = 10_300_000_000  # clock time of the file's t=0 (the recorder's base time)
N0 = 500  # state shown by the first frame
SCREEN = {"base_ns": T0_NS - P_NS / 2 - N0 * P_NS, "fps": FPS, "period_ns": round(P_NS), "code_rect": CODE_RECT}
TONE = {"freq": 1000.0, "period_ns": 1_000_000_000}


def write_file(path: Path, seconds: float, offset_ms: float, drift_ppm: float = 0.0) -> Path:
    """Frame k shows state N0 + k (grabbed half a state after its paint); a burst at every whole second of the
    clock, ``offset_ms`` late in the audio track plus ``drift_ppm`` of the time since t=0."""
    n_frames = round(seconds * FPS)
    audio = np.zeros(round(seconds * RATE), np.float32)
    shape = burst(1000, 50)
    for w in range(11, 11 + int(seconds) + 1):
        t = (w * 1e9 - T0_NS) / 1e9
        at = round((t * (1 + drift_ppm * 1e-6) + offset_ms / 1000) * RATE)
        if at >= 0 and at + len(shape) <= len(audio):
            audio[at : at + len(shape)] = shape
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=FPS, options={"preset": "ultrafast", "crf": "28"})
        video.width, video.height = SIZE
        video.pix_fmt = "yuv420p"
        sound = out.add_stream("aac", rate=RATE, layout="stereo")
        sound.metadata["title"] = "system"
        for k in range(n_frames):
            img = np.full((SIZE[1], SIZE[0], 4), 60, np.uint8)
            x, y = CODE_RECT[:2]
            img[y : y + CODE_HEIGHT, x : x + CODE_WIDTH] = code_image(N0 + k)
            frame = av.VideoFrame.from_ndarray(img, format="bgra")
            frame.pts, frame.time_base = k, Fraction(1, FPS)
            out.mux(video.encode(frame))
        for first in range(0, len(audio), 1024):
            block = audio[first : first + 1024]
            samples = av.AudioFrame.from_ndarray(np.stack([block, block]), format="fltp", layout="stereo")
            samples.sample_rate, samples.pts, samples.time_base = RATE, first, Fraction(1, RATE)
            out.mux(sound.encode(samples))
        out.mux(video.encode(None))
        out.mux(sound.encode(None))
    return path


@pytest.mark.parametrize("offset_ms", [0.0, 7.0, -12.0])
def test_offsets_are_read_back(tmp_path: Path, offset_ms: float) -> None:
    path = write_file(tmp_path / "s.mkv", 4, offset_ms)
    report = avsync.sync_report(read_codes(path, CODE_RECT), avsync.read_track(path), SCREEN, TONE, T0_NS)
    assert report.track == "system" and len(report.bursts) == 4
    for b in report.bursts:
        assert b.offset_ms == pytest.approx(offset_ms, abs=0.3)
        assert b.clock_error_ms == pytest.approx(offset_ms, abs=0.3)
        assert abs(b.frame_offset_ms - offset_ms) <= P_NS / 2e6 + 0.3  # the grab phase: half a state here
    assert abs(report.start_end_ms) < 0.3 and abs(report.length_diff_ms) < 22  # AAC pads its last frame


def test_drift_is_read_back_as_a_slope(tmp_path: Path) -> None:
    path = write_file(tmp_path / "d.mkv", 9, 1.0, drift_ppm=500)  # 0.5 ms more every second
    report = avsync.sync_report(read_codes(path, CODE_RECT), avsync.read_track(path), SCREEN, TONE)
    assert report.drift_ms_per_min == pytest.approx(30, abs=3)
    assert report.bursts[0].clock_error_ms is None  # no base time given


def test_onsets_are_sub_millisecond_and_ignore_other_tones() -> None:
    rng = np.random.default_rng(3)
    samples = (0.01 * rng.standard_normal(3 * RATE)).astype(np.float32)
    for at in (0.5, 1.5, 2.5):  # a 2 kHz burst with each 1 kHz one, as in a mixed track
        i = round(at * RATE)
        samples[i : i + 2400] += burst(1000, 50)
        samples[i + 100 : i + 2500] += burst(2000, 50)
    track = avsync.Track("mix", RATE, 10.0, samples)
    found = avsync.onsets(track, 1000)
    assert found == pytest.approx([10.5, 11.5, 12.5], abs=5e-5)
    assert avsync.onsets(track, 2000) == pytest.approx([10.5 + 100 / RATE, 11.5 + 100 / RATE, 12.5 + 100 / RATE],
                                                       abs=5e-5)  # fmt: skip


def test_tone_placer_starts_bursts_on_whole_periods() -> None:
    placer = Placer(burst(1000, 50), period_ns=1_000_000_000)
    out = np.zeros((480, 2), np.float32)
    chunks = []
    for k in range(300):  # 10 ms buffers, each played 30 ms after its callback at 0.7 s + 10 ms * k
        placer.fill(out, 700_000_000 + k * 10_000_000 + 30_000_000)
        chunks.append(out[:, 0].copy())
    played = np.concatenate(chunks)
    t0 = 0.73  # output time of sample 0
    onsets = avsync.onsets(avsync.Track("t", RATE, t0, played), 1000)
    assert onsets == pytest.approx([1.0, 2.0, 3.0], abs=5e-5)
