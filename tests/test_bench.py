"""The bench's counting, attribution, parsing and reports, on synthetic recordings and documents."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from test_judge import CODE_RECT, FPS, ORIGIN, write_video

from framepipe.bench import count as benchcount
from framepipe.bench import plot as benchplot
from framepipe.bench import report as benchreport
from framepipe.bench import run as benchrun
from framepipe.bench.bench import BenchOptions, check
from framepipe.proof.judge import Frame, paint_time_ns, read_codes, unwrap
from pipeline.errors import ConfigError

PERIOD_NS = 1_000_000_000 // FPS
BASE_NS = 1_000_000_000_000  # the test screen's base time
INFO = {"base_ns": BASE_NS, "fps": float(FPS), "period_ns": PERIOD_NS, "code_rect": list(CODE_RECT)}
MID_FRAME = benchcount.Timing(BASE_NS + PERIOD_NS // 2, "test")
# Frame i shows state i, except: 5 missing (4 repeated), 12 and 13 missing (11 repeated twice).
CODES: list[int | None] = [*range(5), 4, *range(6, 12), 11, 11, *range(14, 30)]


def painter(delays: dict[int, int | None], states: int = 40) -> dict[str, Any]:
    """Test-screen stats: every state painted 1 ms after its deadline, except ``delays`` (us; None: skipped)."""
    return {"paint_delay_us": [delays.get(n, 1000) for n in range(states)]}


def frames_of(codes: list[int | None]) -> list[Frame]:
    return unwrap([Frame(i, i / FPS, c) for i, c in enumerate(codes)])


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video(tmp_path_factory.mktemp("bench") / "known.mkv", CODES)


def test_counts_a_file_with_known_lost_and_repeated_frames(recording: Path) -> None:
    frames = read_codes(recording, CODE_RECT, ORIGIN)
    counts, late = benchcount.count_recording(frames, INFO, painter({}), MID_FRAME, expected=30)
    assert counts.as_dict() == {
        "expected": 30, "written": 30, "span": 30, "distinct": 27, "missing": 3, "lost": 3, "screen_late": 0,
        "short": 0, "repeated": 3, "swaps": 1, "unreadable": 0, "backwards": 0,
    }  # fmt: skip
    assert late == frozenset()


def test_states_the_screen_skipped_or_painted_late_are_not_lost(recording: Path) -> None:
    frames = read_codes(recording, CODE_RECT, ORIGIN)
    # 12 never painted; 13 painted 20 ms late, after the recorder's mid-frame instant (16.7 ms).
    counts, late = benchcount.count_recording(frames, INFO, painter({12: None, 13: 20_000}), MID_FRAME, 30)
    assert (counts.missing, counts.screen_late, counts.lost) == (3, 2, 1)
    assert late == {12, 13}
    # The same lateness seen from a recorder that grabs 2 ms before each change: 13 was on screen then.
    early = BASE_NS - 2 * benchcount.TOLERANCE_NS
    counts, late = benchcount.count_recording(frames, INFO, painter({12: None, 13: 20_000}),
                                              benchcount.Timing(early, "test"), 30)
    assert late == {12}


def test_frames_short_at_the_ends_are_lost() -> None:
    counts, _ = benchcount.count_recording(frames_of(CODES), INFO, painter({}), MID_FRAME, expected=34)
    assert (counts.short, counts.lost, counts.span) == (4, 7, 30)


def test_grid_instants_within_the_margin_of_a_change_do_not_see_a_state() -> None:
    change = round(paint_time_ns(10, INFO, painter({})))  # state 10 painted (1 ms late)
    assert change == BASE_NS + round(10 * 1e9 / FPS) + 1_000_000
    assert benchcount.seeable(10, INFO, painter({}), change + benchcount.TOLERANCE_NS + 10, 30)
    assert not benchcount.seeable(10, INFO, painter({}), change + benchcount.TOLERANCE_NS - 10 - PERIOD_NS, 30)
    assert not benchcount.seeable(10, INFO, painter({}), change + PERIOD_NS // 2 - 10 * PERIOD_NS, 5)  # after its end


def test_wrap_offset_recovers_state_numbers_past_65536() -> None:
    n0 = 70_000  # the screen's state number at the first frame; its code is n0 % 65536
    frames = frames_of([(n0 + i) % 65536 for i in range(5)])
    base = BASE_NS + n0 * PERIOD_NS + PERIOD_NS // 2
    assert frames[0].state is not None
    assert frames[0].state + benchcount.wrap_offset(frames, INFO, base) == n0


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
def test_independent_reading_agrees_with_the_judge(recording: Path) -> None:
    reading = benchcount.independent_missing(recording, CODE_RECT, ORIGIN)
    assert reading == benchcount.Reading(frames=30, unreadable=0, distinct=27, missing=3)


def test_block_centre_code_rejects_a_code_without_complements() -> None:
    from framepipe.proof.testscreen import code_image

    image = code_image(0xBEEF)[:, :, 1]
    assert benchcount.block_centre_code(image.tobytes()) == 0xBEEF
    image[benchcount.CODE_BORDER + benchcount.CODE_BLOCK:, :] = 255
    assert benchcount.block_centre_code(image.tobytes()) is None


def test_x264_version_and_options_read_from_a_file(recording: Path) -> None:
    x264 = benchreport.x264_of_file(recording)
    assert x264 is not None and x264["version"].split()[0].isdigit() and "crf=28.0" in x264["options"]
    assert benchreport.x264_of(b"no encoder here") is None


FFMPEG_LOG = """Input #0, x11grab, from ':91+0,0':
  Duration: N/A, start: 1795634746.032806, bitrate: 294912 kb/s
frame=   96 fps= 47 q=18.0 size=      86kB time=00:00:02.03 bitrate= 344.8kbits/s dup=0 drop=1 speed=0.987x\r\
frame=  147 fps= 49 q=-1.0 Lsize=     181kB time=00:00:02.98 bitrate= 498.1kbits/s dup=2 drop=4 speed=0.99x
"""


def test_ffmpeg_log_start_time_and_counters() -> None:
    log = benchrun.read_ffmpeg_log(FFMPEG_LOG)
    assert log == benchrun.FfmpegLog(1795634746.032806, 147, 4, 2)
    assert benchrun.read_ffmpeg_log("frame=  10 fps=10") == benchrun.FfmpegLog(None, 10, 0, 0)


def test_commands_use_the_same_encoder_settings(tmp_path: Path) -> None:
    cap = benchrun.Capture(":91", (8, 4, 1280, 720), 60, 3.0, "veryfast", 20)
    fp, ff, naive = (launch(cap, tmp_path) for launch in benchrun.LAUNCHERS.values())
    assert fp.cmd[fp.cmd.index("--region") + 1] == naive.cmd[naive.cmd.index("--region") + 1] == "8,4,1280,720"
    assert ff.cmd[ff.cmd.index("-i") + 1] == ":91+8,4" and ff.cmd[ff.cmd.index("-video_size") + 1] == "1280x720"
    for launch, preset, crf in ((fp, "--preset", "--crf"), (ff, "-preset", "-crf"), (naive, "--preset", "--crf")):
        assert launch.cmd[launch.cmd.index(preset) + 1] == "veryfast" and launch.cmd[launch.cmd.index(crf) + 1] == "20"
    assert ff.cmd[ff.cmd.index("-g") + 1] == "60" and ff.cmd[ff.cmd.index("-pix_fmt") + 1] == "yuv420p"


def test_unknown_names_are_one_line_errors_listing_the_choices() -> None:
    with pytest.raises(ConfigError, match="choose from: 1080p60, 720p120"):
        check(BenchOptions(scenarios=("8k240",)))
    with pytest.raises(ConfigError, match="choose from: framepipe, ffmpeg, naive"):
        check(BenchOptions(recorders=("obs",)))
    line = BenchOptions(scenarios=("heavy",), seconds=3, recorders=("framepipe",), out=Path("x")).command_line()
    assert line == "framepipe bench --scenario heavy --seconds 3 --recorders framepipe --out x"


def _result(name: str, missing: int = 3, check_missing: int = 3, **extra: Any) -> dict[str, Any]:
    counts, _ = benchcount.count_recording(frames_of([0, *range(missing + 1, 30)]), INFO, painter({}), MID_FRAME, 30)
    return {
        "name": name, "frames": counts.as_dict(), "cpu_per_s": 0.5, "xserver_cpu_per_s": None,
        "timestamps": {"p50_ms": 8.3, "max_ms": 12.0, "outside": 0},
        "usage": {"peak_rss_mb": 100.4, "peak_pss_mb": 70.2, "wall_s": 2.0, "cpu_s": 1.0, "xserver_cpu_s": 0.5,
                  "system_busy_s": 3.5},
        "check": {"missing": check_missing, "agrees": abs(check_missing - missing) <= 1}, **extra,
    }  # fmt: skip


def _doc() -> dict[str, Any]:
    framepipe = _result("framepipe", self_reported={"dropped": 0, "ring_peak": 3, "ring_slots": 60, "ring_mb": 24.6,
                                                    "latency_ms": {"p50": 80.5, "p99": 120.0}})
    ffmpeg = _result("ffmpeg", missing=5, check_missing=8, self_reported={"frames": 28, "dropped": 1,
                                                                         "duplicated": 0})
    failed = {"name": "naive", "error": "exit status 1; see naive.log"}
    return {
        "command": "framepipe bench --seconds 1", "started": "2026-01-01T00:00:00+00:00",
        "machine": {"cpu": "CPU", "cores_logical": 2, "memory_gb": 8.0, "system": "Linux", "versions": {"av": "18"}},
        "runs": [
            {"scenario": {"name": "1080p60"}, "loadavg": [1.0, 1.0, 1.0], "plot": "out/1080p60.png",
             "recorders": {"framepipe": framepipe, "ffmpeg": ffmpeg, "naive": failed}},
            {"scenario": {"name": "4k30"}, "skipped": "the screen is 1920x1080"},
        ],
    }  # fmt: skip


def test_table_has_a_row_per_recorder_with_the_figures() -> None:
    lines = benchreport.table(_doc()["runs"]).splitlines()
    assert len(lines) == 2 + 3 + 1 and all(line.count("|") == len(benchreport.COLUMNS) + 1 for line in lines)
    fp = [c.strip() for c in lines[2].split("|")[1:-1]]
    assert fp[:9] == ["1080p60", "framepipe", "30", "27", "3", "0", "0", "0", "3 (3)"]
    assert fp[9:15] == ["8.3 / 12.0", "0", "0.50", "-", "1.00", "100"]
    assert fp[15] == "95"  # memory: proportional 70.2 + ring 24.6 (ffmpeg's: its peak RSS)
    assert fp[16] == "dropped 0, ring peak 3/60, latency p50/p99 80.5/120.0 ms"
    assert "5 (8) ≠" in lines[3] and "frame=28 drop=1 dup=0" in lines[3]
    assert "failed: exit status 1" in lines[4] and "skipped: the screen is 1920x1080" in lines[5]


def test_report_files_hold_the_table_and_every_figure(tmp_path: Path) -> None:
    json_path, md_path = benchreport.write(_doc(), tmp_path / "out")
    assert json.loads(json_path.read_text())["runs"][0]["recorders"]["ffmpeg"]["frames"]["missing"] == 5
    md = md_path.read_text()
    assert "`framepipe bench --seconds 1`" in md and "| 1080p60 | ffmpeg |" in md and "out/1080p60.png" in md
    assert "Load average" in md and "CLOCK_REALTIME" in md


def test_plot_marks_lost_and_late_gaps(tmp_path: Path) -> None:
    track = benchplot.track("rec", frames_of(CODES), 1 / FPS, late=frozenset({12, 13}))
    gaps = [(round(t * FPS), late) for t, ms, late in zip(track.times, track.content_ms, track.late_gap, strict=True)
            if ms > 1000 / FPS * 1.5]  # fmt: skip
    assert gaps == [(6, False), (14, True)]
    series = {"t_s": [0.0, 0.5, 1.0], "ring_fill": [1, 5, 2]}
    path = benchplot.plot_run(tmp_path / "run.png", "test", [track], 1 / FPS, series, slots=30)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ring_fill_series_stays_bounded_and_in_time_order() -> None:
    from types import SimpleNamespace

    from framepipe.record import RingSeries

    series = RingSeries(limit=8)
    stats: dict[str, Any] = {}
    sup: Any = SimpleNamespace(outcome=SimpleNamespace(stages={"screen": SimpleNamespace(stats=stats)}))
    series(sup)  # no stats yet: nothing
    for k in range(1, 41):
        stats.update(recorded_ns=k * 500_000_000, ring_fill=k % 7, captured=30 * k, dropped_late=k // 20)
        series(sup)
        series(sup)  # the same report seen twice counts once
    out = series.as_dict()
    assert 4 <= len(out["t_s"]) < 8 and out["t_s"] == sorted(out["t_s"]) and out["t_s"][0] == 0.5
    assert len(out["ring_fill"]) == len(out["captured"]) == len(out["dropped"]) == len(out["t_s"])
    assert RingSeries().as_dict() == {"t_s": [], "ring_fill": [], "captured": [], "dropped": []}
