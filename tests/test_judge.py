"""The judge's counting, on synthetic recordings with known sequences of code states."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from framepipe.proof.judge import Frame, JudgeError, judge, main, read_code, read_codes, timestamp_errors, unwrap
from framepipe.proof.testscreen import CODE_HEIGHT, CODE_WIDTH, code_image

FPS = 30
PERIOD_S = 1 / FPS
SIZE = (448, 128)  # width, height of the synthetic recording
ORIGIN = (100, 50)  # where the recorded region starts on the (imaginary) screen
CODE_RECT = (120, 78, CODE_WIDTH, CODE_HEIGHT)  # the code on the screen: at (20, 28) in the file


def _picture(code: int | None, i: int) -> np.ndarray:
    """A BGRA frame showing ``code`` (None: an unreadable all-white code) over moving stripes."""
    w, h = SIZE
    img = np.full((h, w, 4), 64, np.uint8)
    img[:, (i * 7) % w:(i * 7) % w + 40, :3] = (40, 180, 220)
    x, y = CODE_RECT[0] - ORIGIN[0], CODE_RECT[1] - ORIGIN[1]
    img[y:y + CODE_HEIGHT, x:x + CODE_WIDTH] = 255 if code is None else code_image(code)
    return img


def write_video(path: Path, codes: list[int | None], size: tuple[int, int] = SIZE) -> Path:
    """Encode one frame per entry of ``codes`` with libx264 yuv420p at FPS (scaled to ``size``, as the encoder
    stage scales)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=FPS, options={"preset": "ultrafast", "crf": "28"})
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for i, code in enumerate(codes):
            frame = av.VideoFrame.from_ndarray(_picture(code, i), format="bgra").reformat(*size, "yuv420p")
            frame.pts, frame.time_base = i, Fraction(1, FPS)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def _drop(seq: range, *states: int) -> list[int | None]:
    return [s for s in seq if s not in states]


# name: (codes, expected report fields)
CASES: dict[str, tuple[list[int | None], dict[str, object]]] = {
    "perfect": (list(range(100, 130)), dict(
        frames_written=30, unreadable=0, first_state=100, last_state=129, expected=30, distinct=30,
        missing=0, repeated=0, swaps=0, lost=0, gaps=[])),
    "three_missing": (_drop(range(30), 5, 12, 13), dict(
        frames_written=27, unreadable=0, first_state=0, last_state=29, expected=30, distinct=27,
        missing=3, repeated=0, swaps=0, lost=3, gaps=[[5, 1], [12, 2]])),
    "two_repeats": ([*range(8), 7, *range(8, 16), 15, *range(16, 20)], dict(
        frames_written=22, unreadable=0, first_state=0, last_state=19, expected=20, distinct=20,
        missing=0, repeated=2, swaps=0, lost=0, gaps=[])),
    "swap_pair": ([0, 1, 2, 3, 3, 5, 6, 7, 8, 9], dict(
        frames_written=10, unreadable=0, first_state=0, last_state=9, expected=10, distinct=9,
        missing=1, repeated=1, swaps=1, lost=0, gaps=[[4, 1]])),
    "unreadable": ([*range(10), None, *range(11, 20)], dict(
        frames_written=20, unreadable=1, first_state=0, last_state=19, expected=20, distinct=19,
        missing=1, repeated=0, swaps=0, lost=1, gaps=[[10, 1]])),
    "wraparound": ([s % 65536 for s in range(65530, 65546)], dict(
        frames_written=16, unreadable=0, first_state=65530, last_state=65545, expected=16, distinct=16,
        missing=0, repeated=0, swaps=0, lost=0, gaps=[])),
}


@pytest.mark.parametrize("suffix", [".mkv", ".mp4"])
@pytest.mark.parametrize("case", list(CASES))
def test_report_counts_synthetic_recording(tmp_path: Path, case: str, suffix: str) -> None:
    codes, want = CASES[case]
    path = write_video(tmp_path / f"{case}{suffix}", codes)
    frames = read_codes(path, CODE_RECT, origin=ORIGIN)
    assert [f.code for f in frames] == codes
    report = judge(frames, PERIOD_S).as_dict()
    assert {k: report[k] for k in want} == want
    assert report["pts_on_grid"] and report["pts_increasing"] and report["backwards"] == 0


@pytest.mark.parametrize("scaled", [(298, 86), (224, 64)])  # 2/3 (720p from 1080p) and 1/2
def test_codes_are_read_from_a_scaled_video(tmp_path: Path, scaled: tuple[int, int]) -> None:
    codes: list[int | None] = [*range(40, 60), 77, 61]
    path = write_video(tmp_path / "scaled.mkv", codes, scaled)
    frames = read_codes(path, CODE_RECT, origin=ORIGIN, size=SIZE)
    assert [f.code for f in frames] == codes
    with pytest.raises(JudgeError, match="outside the 448x128 video"):
        read_codes(path, (CODE_RECT[0] + 400, *CODE_RECT[1:]), origin=ORIGIN, size=SIZE)


def test_read_code_round_trip_and_rejects_bad_codes() -> None:
    for n in (0, 1, 0x5A5A, 65535, 70000):
        luma = code_image(n)[:, :, 1]
        assert read_code(luma) == n % 65536
    bad = code_image(1234)[:, :, 1].copy()
    bad[40:60, 12:36] = bad[16:36, 12:36]  # first complement block copies its data block
    assert read_code(bad) is None
    assert read_code(np.full((CODE_HEIGHT, CODE_WIDTH), 128, np.uint8)) is None


def _frames(codes: list[int | None], times: list[float] | None = None) -> list[Frame]:
    times = times if times is not None else [i * PERIOD_S for i in range(len(codes))]
    return unwrap([Frame(i, t, c) for i, (c, t) in enumerate(zip(codes, times, strict=True))])


def test_swaps_need_a_single_repeat_next_to_a_single_skip() -> None:
    assert judge(_frames([0, 1, 1, 3, 4]), PERIOD_S).swaps == 1  # repeat then skip
    assert judge(_frames([0, 2, 2, 3, 4]), PERIOD_S).swaps == 1  # skip then repeat
    assert judge(_frames([0, 1, 1, 1, 3]), PERIOD_S).swaps == 0  # double repeat: a stall
    assert judge(_frames([0, 1, 1, 4, 5]), PERIOD_S).swaps == 0  # two skipped: a loss
    report = judge(_frames([0, 1, 1, 3, 3, 5]), PERIOD_S)
    assert (report.swaps, report.missing, report.lost) == (2, 2, 0)


def test_backwards_steps_and_off_grid_pts_are_reported() -> None:
    report = judge(_frames([0, 2, 1, 3], [0.0, 0.033, 0.0667, 0.1]), PERIOD_S)
    assert report.backwards == 1 and report.missing == 0 and report.pts_on_grid
    report = judge(_frames([0, 1, 2], [0.0, 0.040, 0.0667]), PERIOD_S)
    assert not report.pts_on_grid and report.pts_max_error_ms == pytest.approx(6.667, abs=0.01)


def test_unwrap_follows_wraps_both_ways() -> None:
    states = [f.state for f in _frames([65534, 65535, 0, 1, None, 2, 65535])]
    assert states == [65534, 65535, 65536, 65537, None, 65538, 65535]


def test_timestamp_errors_against_paint_times() -> None:
    period_ns = 1_000_000_000 // FPS
    info = {"base_ns": 10_000_000_000, "fps": FPS, "period_ns": period_ns}
    # The recorder started at state 70000 (code 4464) + 5 ms; frame k shows state 70000 + k.
    base_time_ns = info["base_ns"] + 70000 * 1_000_000_000 // FPS + 5_000_000
    frames = _frames([(70000 + k) % 65536 for k in range(10)])
    errors = timestamp_errors(frames, info, base_time_ns)
    assert errors.p50_ms == pytest.approx(5.0, abs=0.01) and errors.max_ms == pytest.approx(5.0, abs=0.01)
    assert errors.outside == 0
    late = timestamp_errors(frames, info, base_time_ns + 40_000_000)  # 45 ms: past the next state
    assert late.outside == 10
    stats = {"paint_delay_us": [None] * 70000 + [2000] * 10}  # painted 2 ms after each deadline
    assert timestamp_errors(frames, info, base_time_ns, stats).p50_ms == pytest.approx(3.0, abs=0.01)


def test_cli_prints_json_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_video(tmp_path / "rec.mkv", list(range(20)))
    info = tmp_path / "info.json"
    info.write_text(json.dumps({"base_ns": 0, "fps": FPS, "period_ns": 1_000_000_000 // FPS,
                                "code_rect": list(CODE_RECT)}))
    assert main([str(path), "--info", str(info), "--origin", "100,50", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["frames_written"], out["distinct"], out["lost"]) == (20, 20, 0)
    assert main([str(path), "--info", str(info)]) == 2  # code outside the video without the origin
    assert "origin" in capsys.readouterr().err
