"""Pure logic of the graph and the control plane: pauses, output tables, requests, the stage loop."""

from __future__ import annotations

import itertools
import multiprocessing as mp
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline import messages as msg
from pipeline.config import ConfigError, PipelineConfig, build_outputs, with_output
from pipeline.control import ControlError, Request, check_request
from pipeline.pause import PauseSchedule
from pipeline.stage import Stage, StageContext

RATE = 48_000
TICK = 1e9 / 60


def test_a_pause_leaves_its_time_out_and_shifts_what_follows() -> None:
    p = PauseSchedule()
    p.pause(1_000_000_000)
    assert p.paused and p.offset(999_999_999) == 0 and p.offset(1_000_000_000) is None
    p.resume(3_000_000_000)
    assert not p.paused and p.offset(2_999_999_999) is None and p.offset(3_000_000_000) == 2_000_000_000
    p.pause(4_000_000_000)
    p.pause(4_500_000_000)  # a second pause while paused changes nothing
    p.resume(5_000_000_000)
    assert p.offset(6_000_000_000) == 3_000_000_000
    assert p.paused_ns(10_000_000_000) == 3_000_000_000 and p.paused_ns(2_000_000_000) == 1_000_000_000


def test_audio_is_cut_at_the_sample_and_lines_up_with_the_video() -> None:
    p = PauseSchedule()
    start, end = round(30 * TICK), round(150 * TICK)  # on the frame grid, as the supervisor fixes them
    p.pause(start)
    p.resume(end)
    block = p.cut(23_500, 1024, RATE)  # spans the pause's start: 500 samples before it
    assert block == [(0, 500, 23_500)]
    after = p.cut(120_000, 1024, RATE)  # the resume falls at sample 120_000 exactly
    assert after == [(0, 1024, 24_000)]
    # the sample at resume time lands where the frame of that tick does (tick 150 - 120 paused = 30)
    assert after[0][2] / RATE == pytest.approx(30 * TICK / 1e9, abs=1 / RATE)
    assert p.cut(30_000, 1024, RATE) == []  # inside the pause: nothing
    p.pause(round(200 * TICK))
    assert p.cut(159_900, 1024, RATE) == [(0, 100, 159_900 - 96_000)]  # while paused: up to the pause only


@given(st.lists(st.integers(1, 400), min_size=2, max_size=8), st.integers(0, 20_000), st.integers(1, 4096))
def test_cut_parts_are_in_order_and_never_overlap(ticks: list[int], first: int, frames: int) -> None:
    p = PauseSchedule()
    at = 0
    for i, t in enumerate(ticks):
        at += t
        (p.pause if i % 2 == 0 else p.resume)(round(at * TICK))
    parts = p.cut(first, frames, RATE)
    written = [(first + off, first + off + n, out) for off, n, out in parts]
    for (a0, a1, ao), (b0, _, bo) in itertools.pairwise(written):
        assert a1 <= b0 and ao + (a1 - a0) <= bo  # in order, and the file never goes back
    for s0, s1, out in written:
        assert s0 < s1 and out <= s0
        assert p.offset(round(s0 * 1e9 / RATE)) is not None


def test_output_tables() -> None:
    outs = build_outputs([{"path": "a.mkv"}, {"kind": "file", "path": "b.mp4"}])
    assert [(o.kind, o.path) for o in outs] == [("file", "a.mkv"), ("file", "b.mp4")]
    with pytest.raises(ConfigError, match="both write"):
        build_outputs([{"path": "x/../a.mkv"}, {"path": "a.mkv"}])
    with pytest.raises(ConfigError, match="needs a path"):
        build_outputs([{"kind": "file", "path": "  "}])
    with pytest.raises(ConfigError, match="must be tables"):
        build_outputs({"path": "a.mkv"})
    config = with_output(PipelineConfig(outputs=outs), "first.mkv")
    assert [o.path for o in config.outputs] == ["first.mkv", "a.mkv", "b.mp4"]
    with pytest.raises(ConfigError, match="no output"):
        with_output(PipelineConfig(), None)


@pytest.mark.parametrize(
    ("verb", "args", "needle"),
    [
        ("jump", {}, "unknown request 'jump'"),
        ("pause", {"now": 1}, "pause takes no now"),
        ("save-replay", {"seconds": -1}, "number of seconds"),
        ("save-replay", {"seconds": True}, "number of seconds"),
        ("marker", {"text": ""}, "marker takes a text"),
        ("marker", {"text": "x" * 201}, "marker takes a text"),
    ],
)
def test_bad_requests_are_refused_by_name(verb: str, args: dict[str, Any], needle: str) -> None:
    with pytest.raises(ControlError, match=needle):
        check_request(Request(verb, args))


class Collect(Stage):
    """A stage that keeps what it is given (the base loop under test)."""

    def start(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    def on_buffer(self, port: str, message: msg.Message) -> None:
        self.seen.append((port, message))

    def on_control(self, message: msg.Message) -> None:
        self.seen.append(("control", message))

    def on_end(self, port: str, message: msg.EndOfStream) -> None:
        self.seen.append(("end", port))

    def finish(self, flush: bool = True) -> None:
        self.seen.append(("finish", flush))


def test_the_base_loop_puts_control_first_and_ends_every_port(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    control_here, control_stage = ctx.Pipe()
    a_in, a_out = ctx.Pipe(duplex=False)
    b_in, b_out = ctx.Pipe(duplex=False)
    down_in, down_out = ctx.Pipe(duplex=False)
    stage = Collect(StageContext("t", None, control_stage, inputs={"a": a_in, "b": b_in}, outputs={"o": [down_out]}))
    control_here.send_bytes(msg.encode(msg.Pause(5)))
    a_out.send_bytes(msg.encode(msg.Repeat(1)))
    b_out.send_bytes(msg.encode(msg.Hold(0, 0)))
    a_out.send_bytes(msg.encode(msg.EndOfStream("up")))
    b_out.close()  # an input that dies without end of stream ends too
    stage.run(0)
    assert stage.seen[0] == ("control", msg.Pause(5))
    assert ("a", msg.Repeat(1)) in stage.seen and ("b", msg.Hold(0, 0)) in stage.seen
    assert {("end", "a"), ("end", "b")} <= set(stage.seen) and stage.seen[-1] == ("finish", True)
    assert msg.decode(down_in.recv_bytes()) == msg.EndOfStream("t", 0)


def test_the_live_line_shows_the_last_second_and_fits_the_terminal(capsys: pytest.CaptureFixture[str],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    from types import SimpleNamespace

    from framepipe import record

    screen = SimpleNamespace(state="running", stats={"captured": 0, "ring_fill": 1, "ring_slots": 60}, stats_ns=0)
    encode = SimpleNamespace(state="running", stats={"packets": 0}, stats_ns=0)
    sup = SimpleNamespace(outcome=SimpleNamespace(base_time=1, stages={"screen": screen, "encode": encode}),
                          steering=None)  # fmt: skip
    line = record.StatusLine(60, enabled=True)
    half = 500_000_000
    for step in range(6):  # every 0.5 s: 30 more frames captured, the encoder 90 behind (its latency)
        screen.stats["captured"], screen.stats_ns = 30 * step, step * half
        encode.stats["packets"], encode.stats_ns = max(0, 30 * step - 90), step * half
        text = line.line(sup, 1 + step * half)  # type: ignore[arg-type]
    assert " 60 fps in,  60 written" in text, text  # a ratio since the start would say 24 written
    # each stage sends its stats when due, a little over 0.5 s apart (here 31 and 32 frames): now and then a
    # look finds one message more, or one fewer, than a second holds; over the messages' own times, still 60
    line = record.StatusLine(60, enabled=True)
    seen = set()
    for look in range(2, 40):
        at = look * half
        shot, packed = at - at % 516_666_667, at - at % 533_333_333
        screen.stats["captured"], screen.stats_ns = round(60 * shot / 1e9), shot
        encode.stats["packets"], encode.stats_ns = round(60 * packed / 1e9) - 90, packed
        text = line.line(sup, at)  # type: ignore[arg-type]
        if look >= 8:
            seen.add(text.split("  dropped")[0].split("s  ")[1])
    assert seen == {" 60 fps in,  60 written"}, seen
    monkeypatch.setenv("COLUMNS", "40")
    line._show(text)
    shown = capsys.readouterr().err
    assert len(shown.strip("\r").split("\x1b")[0]) <= 39
