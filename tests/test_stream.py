"""The live stream (kind "stream"), against a real nginx-rtmp on 127.0.0.1: what a viewer receives, a server
that goes away and comes back, one that is not there at the start, and an end that a dead network cannot hold."""

from __future__ import annotations

import io
import itertools
import json
import os
import subprocess
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from conftest import assert_every_tick, assert_recorder_lost_nothing, framepipe_cmd
from test_crash import wait_recording

from framepipe.proof import judge
from framepipe.proof.rtmp import RtmpServer, free_port, have_nginx_rtmp, pull
from framepipe.proof.testscreen import load_info, start_testscreen
from framepipe.proof.xvfb import VirtualScreen
from stages.outputs import stream as stream_module
from stages.outputs.formats import public_url
from stages.outputs.output import Coded
from stages.outputs.stream import StreamOutput

pytestmark = pytest.mark.skipif(
    not have_nginx_rtmp(), reason="needs nginx with the RTMP module: apt-get install nginx libnginx-mod-rtmp"
)
FPS = 60


@pytest.fixture
def server() -> Iterator[RtmpServer]:
    with RtmpServer() as rtmp:
        yield rtmp


class Painted:
    """The numbered test screen on the session's Xvfb; ``stop`` it before judging (it writes its paint times)."""

    def __init__(self, display: str, folder: Path) -> None:
        self.path = folder / "screen.json"
        self.painter = start_testscreen(display, FPS, info_path=self.path)
        self.info = load_info(self.path)

    def stop(self) -> None:
        if self.painter.poll() is None:
            self.painter.terminate()
            self.painter.wait(10)


@pytest.fixture
def painted(virtual_screen: VirtualScreen, tmp_path: Path) -> Iterator[Painted]:
    screen = Painted(virtual_screen.display, tmp_path)
    try:
        yield screen
    finally:
        screen.stop()


def record(display: str, tmp_path: Path, url: str, seconds: float,
           flag: bool = False) -> tuple[subprocess.Popen[str], Path, Path]:  # fmt: skip
    """Start recording a file and a stream, the file first: an [[output]] table each, or OUTPUT and --stream."""
    out, stats = tmp_path / "rec.mkv", tmp_path / "stats.json"
    conf = tmp_path / "stream.toml"
    tables = f'[[output]]\npath = "{out}"\n[[output]]\nkind = "stream"\nurl = "{url}"\n' if not flag else ""
    conf.write_text(f"[screen]\nfps = {FPS}\n{tables}")
    outputs = [str(out), "--stream", url] if flag else []
    proc = subprocess.Popen(
        framepipe_cmd("record", *outputs, "--config", str(conf), "--duration", f"{seconds:g}", "--no-audio",
                      "--quiet", "--stats-json", str(stats)),
        env=dict(os.environ, DISPLAY=display), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    return proc, out, stats


def states(path: Path, screen: Painted) -> list[int]:
    return [f.state for f in judge.read_codes(path, screen.info["code_rect"]) if f.state is not None]


def viewer_lost_nothing(pulled: Path, recorded: Path, screen: Painted) -> judge.Report:
    """A viewer got every frame the file holds over the span it watched, and nothing unreadable."""
    report = judge.judge(judge.read_codes(pulled, screen.info["code_rect"]), 1 / FPS)
    assert report.frames_written > 0 and report.unreadable == 0, report.summary()
    assert report.first_state is not None and report.last_state is not None
    span = {n for n in states(recorded, screen) if report.first_state <= n <= report.last_state}
    assert span - set(states(pulled, screen)) == set(), report.summary()  # the stream lost none of them
    assert report.lost <= len(set(range(report.first_state, report.last_state + 1)) - span), report.summary()
    return report


def file_lost_nothing(path: Path, screen: Painted, stats_path: Path, seconds: float) -> judge.Report:
    """The recorded file is whole: every tick written (or a repeat left out), and what is missing the test screen
    painted too late (a 2-CPU machine runs nginx and a viewer too), never the recorder's loss."""
    screen.stop()
    stats = json.loads(stats_path.read_text())
    frames = judge.read_codes(path, screen.info["code_rect"])
    report = assert_recorder_lost_nothing(frames, screen.path, stats, main_file=True)
    assert_every_tick(report, stats, round(seconds * FPS))
    return report


def test_a_viewer_receives_every_frame(virtual_screen: VirtualScreen, painted: Painted, server: RtmpServer,
                                       tmp_path: Path) -> None:  # fmt: skip
    proc, out, stats_path = record(virtual_screen.display, tmp_path, server.url("a"), 15)
    wait_recording(out)
    time.sleep(3)
    viewer = pull(server.url("a"), 8, tmp_path / "pulled.mkv")
    _, err = proc.communicate(timeout=60)
    viewer.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert viewer.returncode == 0, viewer.stderr
    whole = file_lost_nothing(out, painted, stats_path, 15)
    pulled = viewer_lost_nothing(tmp_path / "pulled.mkv", out, painted)
    assert whole.first_state is not None and whole.last_state is not None
    assert whole.first_state <= (pulled.first_state or 0) <= (pulled.last_state or 0) <= whole.last_state
    stream = json.loads(stats_path.read_text())["outputs"][1]
    assert stream["kind"] == "stream" and stream["reconnects"] == 0 and stream["bytes_sent"] > 0, stream
    assert stream["url"] == server.url("***")  # the stream key is not shown


def test_the_stream_comes_back_after_the_server_does(virtual_screen: VirtualScreen, painted: Painted,
                                                     server: RtmpServer, tmp_path: Path) -> None:  # fmt: skip
    proc, out, stats_path = record(virtual_screen.display, tmp_path, server.url("b"), 26, flag=True)
    wait_recording(out)
    time.sleep(8)
    server.stop()
    time.sleep(4)
    server.start()
    viewer = pull(server.url("b"), 3, tmp_path / "pulled.mkv", timeout_s=6)  # data within 6 s, or it gives up
    _, err = proc.communicate(timeout=90)
    viewer.communicate(timeout=30)
    assert proc.returncode == 0, err
    file_lost_nothing(out, painted, stats_path, 26)  # the file never noticed
    assert viewer.returncode == 0, viewer.stderr
    viewer_lost_nothing(tmp_path / "pulled.mkv", out, painted)
    name = f"stream {server.url('***')}"
    assert f"{name} lost (" in err and "reconnecting in 2.0 s" in err, err
    assert f"{name} reconnected after" in err, err
    stream = json.loads(stats_path.read_text())["outputs"][1]
    assert stream["reconnects"] >= 1 and stream["connected"] is False, stream  # closed at the end
    assert "Traceback" not in err


def test_an_unreachable_server_at_the_start_leaves_the_file_whole(virtual_screen: VirtualScreen,
                                                                  painted: Painted, tmp_path: Path) -> None:
    url = f"rtmp://127.0.0.1:{free_port()}/live/c"  # nothing listens there
    proc, out, stats_path = record(virtual_screen.display, tmp_path, url, 4)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    file_lost_nothing(out, painted, stats_path, 4)
    assert f"stream {public_url(url)} unreachable (Connection refused); recording without it, retrying in 2.0 s" in err
    assert "Traceback" not in err


# --- in one process: the output itself, fed by a real encoder ------------------------------------


def encoder(size: tuple[int, int] = (320, 180), crf: int = 23) -> tuple[Any, Any, Any]:
    """A null container with x264 and AAC, headers apart: the templates, as fp-encode makes them."""
    codecs = av.open(os.devnull, mode="w", format="null")
    video = codecs.add_stream("libx264", rate=FPS)
    video.width, video.height = size
    video.pix_fmt = "yuv420p"
    video.time_base = video.codec_context.time_base = Fraction(1, FPS)
    video.codec_context.gop_size = FPS
    video.codec_context.options = {"preset": "ultrafast", "crf": str(crf)}
    video.codec_context.flags |= 1 << 22
    audio = codecs.add_stream("aac", rate=48_000)
    audio.codec_context.flags |= 1 << 22
    codecs.start_encoding()
    return codecs, video, audio


def coded(stream: Any, frame: Any, track: int) -> list[Coded]:
    return [Coded(track, bytes(p), p.pts, p.dts, p.time_base, p.is_keyframe, track == 0) for p in stream.encode(frame)]


def test_each_connection_starts_on_a_keyframe_at_zero() -> None:
    codecs, video, audio = encoder()
    packets = []
    for n in range(3 * FPS):  # keyframes at 0, 1 and 2 s
        frame = av.VideoFrame.from_ndarray(np.full((180, 320, 3), n % 250, np.uint8), format="rgb24")
        frame.pts, frame.time_base = n, Fraction(1, FPS)
        packets += coded(video, frame, 0)
    packets += coded(video, None, 0)
    sound = [Coded(1, b"\x21\x00", pts, pts, Fraction(1, 48_000), True, False) for pts in range(0, 144_000, 1024)]
    later = [p for p in packets if p.pts >= FPS // 2]  # a connection made at 0.5 s ...
    key = next(p for p in later if p.keyframe)  # ... starts at its first keyframe (at 1 s)
    arrivals = sorted(later + [a for a in sound if a.pts >= 24_000], key=lambda p: float(p.pts * p.time_base))
    output = StreamOutput({"kind": "stream", "url": "rtmp://127.0.0.1:1/live/k"}, lambda line: None)
    output.open([video, audio])
    sink = io.BytesIO()
    output.container = av.open(sink, mode="w", format="flv")
    output.streams = [output.container.add_stream_from_template(t) for t in (video, audio)]
    for packet in arrivals:
        output._send(packet)
    output.container.close()
    sink.seek(0)
    with av.open(sink, mode="r", format="flv") as flv:
        got = [(p.stream.type, float(p.pts * p.time_base), p.is_keyframe) for p in flv.demux() if p.pts is not None]
    pictures = [g for g in got if g[0] == "video"]
    sounds = [g for g in got if g[0] == "audio"]
    assert pictures[0] == ("video", 0.0, True) and len(pictures) == len([p for p in later if p.dts >= key.dts])
    start = key.pts * 48_000 // FPS  # audio from the keyframe's time on, shifted to it
    assert len(sounds) == len([a for a in sound if a.pts >= start]) and min(t for _, t, _ in sounds) >= 0.0
    codecs.close()


def test_the_end_is_not_held_by_a_frozen_server(server: RtmpServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream_module, "END_S", 1.5)
    monkeypatch.setattr(stream_module, "STALL_S", 60.0)  # the end's limit, not the write timeout, cuts it
    lines: list[str] = []
    codecs, video, audio = encoder((1280, 720), crf=0)
    noise = np.random.default_rng(7).integers(0, 256, (720, 1280, 3), np.uint8)
    frame = av.VideoFrame.from_ndarray(noise, format="rgb24")
    frame.pts, frame.time_base = 0, Fraction(1, FPS)
    key = (coded(video, frame, 0) + coded(video, None, 0))[0]  # 2.7 MB: a dozen fill loopback's socket buffers
    output = StreamOutput({"kind": "stream", "url": server.url("d")}, lines.append)
    output.begin([video, audio])
    assert output.wait_first_try(10) is None
    server.freeze()
    started = time.monotonic()
    for n in range(40):
        output.put(Coded(0, key.data, n * FPS, n * FPS, key.time_base, True, True))
    assert time.monotonic() - started < 1.0  # put never waits for the network
    time.sleep(2)  # the stream's thread is blocked in a write by now
    started = time.monotonic()
    output.end()
    assert time.monotonic() - started < 1.5 + 1.0
    assert any("did not finish within 1.5 s of the end; cut off there" in line for line in lines), lines
    stats = output.stats()
    assert stats["state"] == "closed" and stats["dropped_network"] > 0 and stats["connected"] is False, stats
    server.thaw()
    codecs.close()


def test_a_connect_that_hangs_holds_no_one_up(server: RtmpServer) -> None:
    codecs, video, audio = encoder()
    server.freeze()  # the kernel still accepts the connection: the RTMP handshake waits for ever
    output = StreamOutput({"kind": "stream", "url": server.url("e")}, lambda line: None)
    output.begin([video, audio])
    ticks = [time.monotonic()]
    while ticks[-1] - ticks[0] < 1.5:  # this thread is the encoder's: FFmpeg's waits must not hold the GIL
        time.sleep(0.005)
        ticks.append(time.monotonic())
    assert max(b - a for a, b in itertools.pairwise(ticks)) < 0.5  # held, it would be all 1.5 s
    assert not output.first_try.is_set()  # still connecting
    started = time.monotonic()
    output.end()  # ending while connecting: the try is given up at once
    assert time.monotonic() - started < 1.0
    assert output.stats()["connected"] is False
    server.thaw()
    codecs.close()
