"""Pure logic in one process: messages, ring, timeline, config (fakes only here)."""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import config as cfg
from pipeline import messages as msg
from pipeline.errors import ConfigError
from pipeline.ring import Geometry, Ring, SlotHeader
from stages.outputs.formats import output_size
from stages.video.timestamp import VFR_TIME_BASE, Timeline

P = 1e9 / 60


@pytest.mark.parametrize(
    "message",
    [
        msg.Start(123),
        msg.Stop(),
        msg.Stop(fast=True, at=5),
        msg.State("screen", "ready", {"rect": {"left": 0}}),
        msg.Stats("encode", {"encoded": 3, "latency_ms_p50": None}),
        msg.Warning("audio", "gone"),
        msg.Error("encode", "disk full", fatal=True),
        msg.Frame(1, 2, 3, 4),
        msg.Encode(1, 2, 3, 4),
        msg.Repeat(7),
        msg.Hold(1, 2),
        msg.EndOfStream("screen"),
    ],
)
def test_messages_round_trip(message: msg.Message) -> None:
    data = msg.encode(message)
    assert msg.decode(data) == message
    assert len(data) < 64  # control stays small


@pytest.mark.parametrize("data", [b"", b"\x93\x01", b"\x92\xcc\xff\x01", b"garbage"])
def test_malformed_message_is_a_value_error(data: bytes) -> None:
    with pytest.raises(ValueError, match="not a framepipe message"):
        msg.decode(data)


def test_ring_hands_out_slots_in_order_and_refuses_when_full() -> None:
    ring = Ring.create("fp_test_unit_order", Geometry(32, 8, 128), 3)
    reader = Ring.attach(ring.name)
    try:
        assert [ring.acquire() for _ in range(4)] == [0, 1, 2, None]
        assert ring.fill() == 3
        reader.release()
        assert ring.acquire() == 0 and ring.fill() == 3
        reader.release(3)
        assert ring.fill() == 0
    finally:
        reader.close()
        ring.close()
    assert not Path("/dev/shm/fp_test_unit_order").exists()


def test_ring_segment_is_private_allocated_and_needs_no_numpy_or_tracker() -> None:
    Path("/dev/shm/fp_test_unit_lean").unlink(missing_ok=True)  # from an interrupted run
    code = (
        "import os, sys\n"
        "from pipeline.ring import Geometry, Ring\n"
        "ring = Ring.create('fp_test_unit_lean', Geometry(64, 64, 256), 4)\n"
        "ring.allocate()\n"
        "mode = os.stat(ring.path).st_mode & 0o777\n"
        "blocks = os.stat(ring.path).st_blocks * 512\n"
        "ring.release(0)\n"
        "lean = 'numpy' not in sys.modules and 'multiprocessing.resource_tracker' not in sys.modules\n"
        "print(oct(mode), 2 * 64 * 256 <= blocks < 4 * 64 * 256, lean)\n"
        "ring.close()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["0o600", "True", "True"]  # user-only; the first 2 slots allocated; lean start
    assert not Path("/dev/shm/fp_test_unit_lean").exists()
    ring = Ring.create("fp_test_unit_lean", Geometry(16, 4, 64), 2)
    with pytest.raises(FileExistsError):  # a name in use is never taken over
        Ring.create("fp_test_unit_lean", Geometry(16, 4, 64), 2)
    ring.close()
    assert not Path("/dev/shm/fp_test_unit_lean").exists()


def test_an_elastic_ring_takes_the_lowest_free_slot_and_allocates_as_it_reaches_them() -> None:
    ring = Ring.create("fp_test_unit_elastic", Geometry(1024, 4, 4096), 6)
    try:
        ring.allocate()

        def allocated_slots() -> int:
            return (os.stat(ring.path).st_blocks * 512 - 64) // ring.geometry.slot_bytes  # pages past the control

        assert (ring.allocated, allocated_slots()) == (2, 2)  # UPFRONT_SLOTS before the start
        for _ in range(5):  # a reader that keeps up: slot 0 every time, nothing more allocated
            assert ring.acquire() == 0
            ring.release()
        assert (ring.allocated, allocated_slots()) == (2, 2)
        assert [ring.acquire(), ring.acquire()] == [0, 1]  # slot 1 reached: one more allocated, ahead
        assert (ring.allocated, allocated_slots()) == (3, 3)
        ring.release()  # slot 0 (the oldest) back: it is the lowest free one again
        assert ring.acquire() == 0 and ring.acquire() == 2 and ring.allocated == 4
        ring.cancel()  # slot 2 unused: taken again next
        assert ring.acquire() == 2
        assert [ring.acquire(), ring.acquire(), ring.acquire(), ring.acquire()] == [3, 4, 5, None]  # full at 6
        assert ring.allocated == 6 == allocated_slots() and ring.fill() == 6
        ring.release(6)
        assert ring.acquire() == 0
    finally:
        ring.close()


def test_output_size_keeps_the_aspect_and_even_sizes() -> None:
    assert output_size(1920, 1080, 0) == (1920, 1080)
    assert output_size(1920, 1080, 720) == (1280, 720)
    assert output_size(1920, 1080, 1080) == (1920, 1080)
    assert output_size(1366, 768, 541) == (960, 540)
    assert output_size(1280, 720, 2000) == (1280, 720)


def test_ring_header_and_pixels_are_shared() -> None:
    ring = Ring.create("fp_test_unit_px", Geometry(16, 4, 64), 2)
    reader = Ring.attach(ring.name)
    try:
        slot = ring.acquire()
        assert slot is not None
        ring.pixels(slot)[:] = 9
        ring.write_header(slot, SlotHeader(5, 6, 16, 4, 64, 1, 1))
        assert reader.header(slot) == SlotHeader(5, 6, 16, 4, 64, 1, 1)
        assert int(reader.pixels(slot).sum()) == 9 * 16 * 4 * 4
        assert reader.pixel_offset(slot) % 64 == 0
    finally:
        reader.close()
        ring.close()


def test_ring_close_refuses_while_a_view_lives() -> None:
    ring = Ring.create("fp_test_unit_view", Geometry(16, 4, 64), 2)
    view = ring.pixels(0)
    with pytest.raises(BufferError):
        ring.close()
    del view
    ring.close()


def _fill_slots(name: str, count: int) -> None:
    ring = Ring.attach(name)
    for i in range(count):
        while (slot := ring.acquire()) is None:
            pass
        ring.pixels(slot)[:] = i % 251
        ring.write_header(slot, SlotHeader(i, i, 16, 4, 64, 1, 0))
    ring.close()


def test_ring_across_processes_keeps_order() -> None:
    """A writer in another process, a reader here that finds each frame by its sequence number (the slot a
    writer takes is its lowest free one, not ``written % slots``): every frame, in order, its pixels intact."""
    Path("/dev/shm/fp_test_unit_mp").unlink(missing_ok=True)  # from an interrupted run
    ring = Ring.create("fp_test_unit_mp", Geometry(16, 4, 64), 4)
    ring.allocate()
    proc = mp.get_context("spawn").Process(target=_fill_slots, args=(ring.name, 40))
    proc.start()
    seen: list[int] = []
    deadline = time.monotonic() + 60
    try:
        while len(seen) < 40 and time.monotonic() < deadline:
            slot = published(ring, len(seen))
            if slot is not None:
                assert int(ring.pixels(slot)[0, 0, 0]) == len(seen) % 251
                seen.append(ring.header(slot).seq)
                ring.release()
        proc.join(10)
    finally:
        ring.close()
    assert seen == list(range(40))


def published(ring: Ring, seq: int) -> int | None:
    """The slot whose header says frame ``seq`` (the writer writes the header after the pixels), if any yet."""
    for slot in range(ring.slots):
        header = ring.header(slot)
        if header.width and header.seq == seq:
            return slot
    return None


def place_all(times: list[float], mode: str = "cfr") -> tuple[list[tuple[str, int | None]], Timeline]:
    tl = Timeline(60, mode)
    out: list[tuple[str, int | None]] = []
    for i, t in enumerate(times):
        out += [(type(m).__name__, getattr(m, "pts", None)) for m in tl.place(msg.Frame(i % 8, i, round(t * P), 0))]
    return out, tl


def test_timeline_on_time_frames_take_consecutive_ticks() -> None:
    out, tl = place_all([0, 1, 2, 3])
    assert out == [("Encode", 0), ("Encode", 1), ("Encode", 2), ("Encode", 3)]
    assert (tl.repeats, tl.skips) == (0, 0)


def test_timeline_a_late_grab_keeps_its_own_tick() -> None:
    out, tl = place_all([0, 1, 2.7, 3, 4])
    assert [pts for _, pts in out] == [0, 1, 2, 3, 4] and (tl.repeats, tl.skips) == (0, 0)


def test_timeline_a_missed_tick_repeats_the_held_frame() -> None:
    out, tl = place_all([0, 1, 3, 4])
    assert out == [("Encode", 0), ("Encode", 1), ("Repeat", 2), ("Encode", 3), ("Encode", 4)]
    assert tl.repeats == 1


def test_timeline_a_second_frame_on_one_tick_is_held_not_encoded() -> None:
    out, tl = place_all([0, 1, 1.2, 3])
    assert out == [("Encode", 0), ("Encode", 1), ("Hold", None), ("Repeat", 2), ("Encode", 3)]
    assert (tl.repeats, tl.skips) == (1, 1)


def test_timeline_vfr_keeps_capture_times_strictly_increasing() -> None:
    out, tl = place_all([0, 1.3, 1.3, 2.9], mode="vfr")
    pts = [p for _, p in out if p is not None]
    assert pts[1] == round(1.3 * P) * VFR_TIME_BASE // 1_000_000_000
    assert pts == sorted(set(pts)) and tl.skips == 0 and tl.repeats == 0


def test_config_defaults_and_overrides() -> None:
    c = cfg.load(overrides={"screen": {"fps": 120, "region": (0, 0, 1280, 720)}, "encode": {"crf": None}})
    assert c.screen.fps == 120.0 and c.screen.region == (0, 0, 1280, 720)
    assert c.encode.crf == 23 and c.encode.preset == "ultrafast" and c.encode.nice == 10


def test_config_file_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('[screen]\nfps = 30\naffinity = [0]\n[encode]\npreset = "veryfast"\nthreads = 2\n')
    c = cfg.load(path, {"screen": {"fps": 50}})
    assert c.screen.fps == 50 and c.screen.affinity == (0,) and c.encode.preset == "veryfast"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[screen]\nfpz = 3\n", "unknown key screen.fpz; allowed keys: affinity, backend"),
        ("[screne]\n", "unknown table [screne]"),
        ('[screen]\nfps = "fast"\n', "screen.fps must be a number"),
        ("[screen]\nfps = 0\n", "screen.fps = 0.0 is out of range; allowed: 1 to 240"),
        ('[encode]\npreset = "quick"\n', "not a libx264 preset; choose one of: ultrafast"),
        ('[timestamp]\nmode = "x"\n', "choose one of: cfr, vfr"),
        ("[screen]\nregion = [1, 2]\n", "screen.region must be x, y, width, height"),
        ("[screen]\naffinity = [-1]\n", "must not hold negative numbers"),
        ("[encode]\ncrf = true\n", "encode.crf must be a whole number"),
        ("[screen\n", "is not valid TOML"),
        ("screen = 3\n", "[screen] must be a table"),
    ],
)
def test_config_errors_name_the_key_and_what_is_allowed(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        cfg.load(path)
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_config_file_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist: check the path given to --config"):
        cfg.load(tmp_path / "none.toml")


VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True), st.text(max_size=12),
    st.lists(st.integers(-5, 5), max_size=5), st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)  # fmt: skip
KEYS = st.sampled_from(
    ["fps", "monitor", "region", "backend", "ring_seconds", "affinity", "nice", "mode", "encoder", "preset",
     "crf", "threads", "thread_type", "gop_seconds", "bogus"]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["screen", "timestamp", "encode"]), st.dictionaries(KEYS, VALUES, max_size=4)))
def test_generated_configs_load_or_fail_with_a_config_error(data: dict) -> None:
    try:
        c = cfg.load(overrides={k: {kk: vv for kk, vv in v.items() if vv is not None} for k, v in data.items()})
    except ConfigError as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        assert 1 <= c.screen.fps <= 240 and 0 <= c.encode.crf <= 51
        assert c.timestamp.mode in ("cfr", "vfr") and np.isfinite(c.screen.ring_seconds)


def test_timeline_end_of_stream_fills_ticks_dropped_at_the_end() -> None:
    _, tl = place_all([0, 1, 2])
    assert [m.pts for m in tl.finish(round(6 * P))] == [3, 4, 5]  # type: ignore[union-attr]
    assert tl.finish(round(3 * P)) == [] and tl.repeats == 3


def test_supervisor_side_starts_without_numpy_or_pyav() -> None:
    code = "import sys, framepipe.record\nprint(sorted({'numpy', 'av', 'sounddevice'} & set(sys.modules)))\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"  # they load in the stage processes that use them


def test_converted_frames_reuse_their_pages() -> None:
    code = (
        "import resource, av, numpy as np\n"
        "from av.video.reformatter import VideoReformatter\n"
        "from stages.video.encode import conversion_options, reuse_frame_buffers\n"
        "assert reuse_frame_buffers()\n"
        "slots = [av.VideoFrame.from_numpy_buffer(np.zeros((1080, 1920, 4), np.uint8), 'bgra') for _ in range(3)]\n"
        "scaler, options, last = VideoReformatter(), conversion_options(), None\n"
        "for i in range(12):  # as the encoder does: one scaler, slot after slot, the last picture kept\n"
        "    if i == 6:\n"
        "        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "    last = scaler.reformat(slots[i % 3], 1920, 1080, 'yuv420p', **options)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(done.stdout) < 6 * 50  # without: ~500 page faults a 1080p picture, mapped afresh each time


def test_status_line_says_what_the_start_waits_for(capsys: pytest.CaptureFixture[str]) -> None:
    from types import SimpleNamespace

    from framepipe.record import StatusLine

    stages = {"screen": SimpleNamespace(state="ready", stats={}), "audio": SimpleNamespace(state="starting", stats={})}
    sup = SimpleNamespace(outcome=SimpleNamespace(base_time=0, stages=stages))
    StatusLine(60, enabled=True)(sup)  # type: ignore[arg-type]
    line = capsys.readouterr().err
    assert "starting: waiting for audio (audio learns its input's clock first)" in line and "screen" not in line
    assert "Ctrl+C now records nothing" in line


def test_x264_holds_no_frames_for_a_lookahead_thread() -> None:
    from stages.video.encode import codec_options

    assert codec_options(cfg.EncodeConfig())["x264-params"] == "sync-lookahead=0"  # frame threads: 2 frames less late
    assert "x264-params" not in codec_options(cfg.EncodeConfig(encoder="h264_nvenc"))


def test_a_state_seen_only_at_a_repeated_or_late_tick_is_a_counted_loss() -> None:
    from framepipe.proof import judge

    fps, info = 10.0, {"base_ns": 0, "fps": 10.0}  # state n on screen from n/10 s to (n+1)/10 s
    # ticks 2-3: the capture stalled (said: the held picture twice), tick 4 grabbed 60 ms late when it woke
    # (state 5, said); tick 8 shows the held picture unsaid
    shown = [0, 1, 1, 1, 5, 5, 6, 7, 7, 9]
    frames = [judge.Frame(i, i / fps, s, s) for i, s in enumerate(shown)]
    mid = 50_000_000  # the recording began 50 ms after the screen: each tick is mid-state
    stats = {"fps": fps, "stages": {"encode": {"stats": {"repeat_runs": [[2, 2]], "late_grabs": [[4, 60_000]]}}}}
    grabs = judge.recorder_grabs(frames, stats)
    assert grabs == judge.Grabs(frozenset({2, 3}), {4: 60_000_000}) and judge.repeats_not_held(frames, grabs) == []
    blame = judge.attribute_missing(frames, info, mid, {}, grabs=grabs)
    assert (blame.recorder_lost, blame.counted, blame.screen_late) == (1, 3, 0)  # states 2, 3, 4 said; 8 not
    only_runs = judge.Grabs(grabs.repeats)
    assert judge.attribute_missing(frames, info, mid, {}, grabs=only_runs).recorder_lost == 2  # 4 and 8
    assert judge.attribute_missing(frames, info, mid, {}).recorder_lost == 4  # without the stats: all four
    lying = {"fps": fps, "stages": {"encode": {"stats": {"repeat_runs": [[6, 1]]}}}}  # tick 6 was a new grab
    assert judge.repeats_not_held(frames, judge.recorder_grabs(frames, lying)) == [6]


def test_a_state_seen_only_at_a_tick_the_file_leaves_out_is_a_counted_loss() -> None:
    from framepipe.proof import judge

    fps, info = 10.0, {"base_ns": 0, "fps": 10.0}
    # ticks 3 and 4 are not in the file (repeats an encoder behind the clock left out): states 3 and 4 with them
    frames = [judge.Frame(i, t / fps, t, t) for i, t in enumerate((0, 1, 2, 5, 6))]
    grabs = judge.recorder_grabs(frames, {"fps": fps, "stages": {"encode": {"stats": {}}}})
    assert grabs.left_out_s == (0.3, 0.4)
    blame = judge.attribute_missing(frames, info, 50_000_000, {}, grabs=grabs)
    assert (blame.recorder_lost, blame.counted, blame.screen_late) == (0, 2, 0)
    assert judge.attribute_missing(frames, info, 50_000_000, {}).screen_late == 2  # without the stats: the screen's


def test_a_state_is_on_screen_until_the_next_paint_begins_not_until_its_late_done() -> None:
    from framepipe.proof import judge

    info = {"base_ns": 0, "fps": 10.0}
    # state 1 painted 60 ms late; state 2 begun on time (200 ms) but its done came 80 ms late (the painter
    # descheduled past the server's reply): the grab at 250 ms that shows 2 saw it, so 1 is the screen's
    frames = [judge.Frame(i, t, s, s) for i, (t, s) in enumerate(((0.05, 0), (0.15, 0), (0.25, 2), (0.35, 3)))]
    painter = {"paint_delay_us": [1000, 60_000, 80_000, 1000], "paint_start_us": [0, 59_000, 0, 0]}
    assert judge.on_screen_ns(1, info, painter) == (160_000_000, 200_000_000)
    assert judge.on_screen_ns(1, info, {"paint_delay_us": [0, None]}) is None  # skipped: never on screen
    blame = judge.attribute_missing(frames, info, 0, painter)
    assert (blame.recorder_lost, blame.screen_late) == (0, 1)
    done_only = {"paint_delay_us": painter["paint_delay_us"]}  # older stats: to the next paint's done, 280 ms
    assert judge.attribute_missing(frames, info, 0, done_only).recorder_lost == 1


def test_a_grab_whose_picture_the_server_made_late_is_a_counted_loss_not_an_unsaid_one() -> None:
    from framepipe.proof import judge

    fps, info = 10.0, {"base_ns": 0, "fps": 10.0}
    # tick 1 asked on time (150 ms) but the X server made its picture 60 ms later: it shows state 2
    frames = [judge.Frame(i, i / fps, s, s) for i, s in enumerate((0, 2, 3))]
    stats = {"fps": fps, "stages": {"encode": {"stats": {"late_grabs": [[1, 0, 60_000]]}}}}
    grabs = judge.recorder_grabs(frames, stats)
    assert grabs.window_ns == {1: 60_000_000} and grabs.late_ns == {1: 0}
    blame = judge.attribute_missing(frames, info, 50_000_000, {}, grabs=grabs)
    assert (blame.recorder_lost, blame.counted) == (0, 1)
    asked_only = judge.recorder_grabs(frames, {**stats, "stages": {"encode": {"stats": {"late_grabs": [[1, 0]]}}}})
    assert judge.attribute_missing(frames, info, 50_000_000, {}, grabs=asked_only).recorder_lost == 1
