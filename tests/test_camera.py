"""A camera in a corner: a network camera (a green test pattern pushed to a real nginx-rtmp by ffmpeg) on a 1080p60
recording of the numbered test screen, one that does not answer, one that goes away and comes back; and in one
process the pieces (V4L2 options, the box, the device clock, the paste)."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from conftest import assert_recorder_lost_nothing, framepipe_cmd, framepipe_segments, painting, run_framepipe
from test_bad_input import assert_one_line_error
from test_crash import wait_recording

from framepipe.proof import judge
from framepipe.proof.rtmp import RtmpServer, free_port, have_nginx_rtmp, push_test_camera
from framepipe.proof.testscreen import CODE_HEIGHT, CODE_WIDTH, code_origin, load_info, start_testscreen
from framepipe.proof.xvfb import VirtualScreen
from pipeline import messages as msg
from pipeline.config import CameraConfig, ConfigError, camera_name, load, parse_overlay
from pipeline.ring import Geometry, Ring
from pipeline.shm import segment_name
from stages.video.camera import MAX_LAG_NS, DeviceClock
from stages.video.corner import Box, check_source, cover, input_options, overlay_box, v4l2_cameras
from stages.video.overlay import Overlay

FPS = 60
NEEDS_RTMP = pytest.mark.skipif(not have_nginx_rtmp(), reason="needs nginx with the RTMP module (install.sh)")


# --- in one process ---------------------------------------------------------------------------------


def test_v4l2_options_are_what_was_asked() -> None:
    asked = CameraConfig(source="/dev/video0", size="1280X720", frame_rate=30, format="mjpeg")
    assert input_options(asked) == ("v4l2", {"video_size": "1280x720", "framerate": "30", "input_format": "mjpeg"})
    assert input_options(CameraConfig(source="/dev/video2")) == ("v4l2", {})  # the device's own defaults
    fmt, options = input_options(CameraConfig(source="rtsp://phone:8554/cam"))
    assert fmt is None and options["rtsp_transport"] == "tcp" and "fflags" not in options  # keep what the probe read
    assert "rtsp_transport" not in input_options(CameraConfig(source="rtmp://h/live/k"))[1]
    with pytest.raises(ConfigError, match="does not exist: see `framepipe devices`"):
        check_source(CameraConfig(source="/dev/video-none"))  # before anything starts


def test_camera_flags_and_table() -> None:
    config = load(None, {"camera": {"source": "http://10.0.0.5:8080/video", "size": "640x480", **parse_overlay(
        "top-left,30%,circle")}})  # fmt: skip
    cam = config.camera
    assert (cam.overlay, cam.overlay_percent, cam.shape, cam.size) == ("top-left", 30.0, "circle", "640x480")
    assert parse_overlay("none") == {"overlay": "none"}
    for bad in ("middle", "bottom-right,25%,star", "bottom-right,big"):
        with pytest.raises(ConfigError, match="POSITION"):
            parse_overlay(bad)
    with pytest.raises(ConfigError, match="neither a device"):
        load(None, {"camera": {"source": "ftp://x/y"}})
    with pytest.raises(ConfigError, match="WIDTHxHEIGHT"):
        load(None, {"camera": {"source": "/dev/video0", "size": "big"}})
    assert camera_name("rtsp://me:secret@phone:8554/cam") == "rtsp://phone:8554/cam"


def test_the_box_sits_in_its_corner_clear_of_the_code() -> None:
    box = overlay_box(CameraConfig(source="rtmp://h/a/b"), 1920, 1080)
    assert box == Box(1408, 778, 480, 270)  # a quarter of the height, 16:9, 32 px from the edges
    cx, cy = code_origin(1920, 1080)
    assert box.x > cx + CODE_WIDTH or box.y > cy + CODE_HEIGHT  # the judge still reads every frame
    circle = overlay_box(CameraConfig(source="rtmp://h/a/b", overlay="top-left", shape="circle"), 1280, 720)
    assert circle == Box(22, 22, 180, 180)
    assert all(v % 2 == 0 for v in (*box.__dict__.values(), *circle.__dict__.values()))
    assert cover((640, 360), (180, 180)) == (320, 180, 70, 0)  # scaled to cover, the middle cut out
    assert cover((640, 480), (480, 270)) == (480, 360, 0, 44)


def test_device_times_smooth_arrival_jitter_and_never_run_ahead() -> None:
    clock = DeviceClock()
    period = 33_333_333
    arrivals = [5_000_000_000 + n * period + (40_000_000 if n % 3 else 0) for n in range(30)]  # jittery network
    stamps = [clock.stamp(1_000_000 + n * period, a) for n, a in enumerate(arrivals)]
    assert all(s <= a for s, a in zip(stamps, arrivals, strict=True))  # never later than it came
    assert {b - a for a, b in itertools.pairwise(stamps)} == {period}  # the device's own spacing
    assert clock.stamp(None, 9_000_000_000) == 9_000_000_000  # no device time: the arrival
    assert clock.stamp(0, 9_100_000_000) == 9_100_000_000 and clock.anchors == 2  # went back: a new mapping
    slow = [clock.stamp(n * period, 9_100_000_000 + n * (period + 5_000_000)) for n in range(1, 80)]
    assert 9_100_000_000 + 79 * (period + 5_000_000) - slow[-1] <= MAX_LAG_NS  # a slow device clock is followed


def test_v4l2_cameras_come_from_sysfs(tmp_path: Path) -> None:
    for n, name in ((10, "Phone (USB)"), (0, "Integrated Camera")):
        (tmp_path / f"video{n}").mkdir()
        (tmp_path / f"video{n}" / "name").write_text(name + "\n")
    assert v4l2_cameras(tmp_path) == [{"device": "/dev/video0", "name": "Integrated Camera"},
                                      {"device": "/dev/video10", "name": "Phone (USB)"}]  # fmt: skip
    assert v4l2_cameras(tmp_path / "none") == []


@pytest.mark.parametrize("shape", ["rect", "circle"])
def test_the_newest_picture_is_pasted_in_place(shape: str) -> None:
    w, h = 64, 36
    ring = Ring.create(segment_name("camtest"), Geometry(w, h * 3 // 2, w), 3)
    try:
        box = {"x": 100, "y": 60, "width": w, "height": h, "shape": shape}
        overlay = Overlay(ring, box, stale_ns=1_000_000_000)
        frame: Any = av.VideoFrame(320, 180, "yuv420p")
        for plane in frame.planes:
            np.frombuffer(plane, np.uint8)[:] = 16
        before = frame.planes[0].buffer_ptr
        assert not overlay.paste(frame, 0)  # nothing yet: the corner is the screen
        for slot, value in ((0, 100), (1, 200)):
            raw = ring.raw(slot)
            raw[:] = value
            del raw
            ring.acquire()
            overlay.take(msg.Frame(slot, slot, 10 * slot, 0))
        assert ring.fill() == 1  # the older one went back; the newest is held
        assert overlay.paste(frame, 500_000_000)
        y = np.frombuffer(frame.planes[0], np.uint8).reshape(180, -1)
        u = np.frombuffer(frame.planes[1], np.uint8).reshape(90, -1)
        assert frame.planes[0].buffer_ptr == before  # pasted into the converted picture itself
        assert y[60 + h // 2, 100 + w // 2] == 200 and u[30 + h // 4, 50 + w // 4] == 200
        assert y[59, 100] == 16 and y[60, 99] == 16 and y[60 + h, 100] == 16  # nothing outside the box
        corner = y[60, 100]
        assert corner == (16 if shape == "circle" else 200)
        if shape == "circle":
            assert 16 < y[60 + h // 2, 100] <= 200  # the edge blended
        assert not overlay.paste(frame, 2_000_000_000)  # stale: the corner shows nothing of it
        assert overlay.counts == {"camera_pictures": 2, "camera_shown": 1, "camera_not_shown": 2}
        overlay.close()
        assert ring.fill() == 0
    finally:
        ring.close()


# --- a network camera, recorded ------------------------------------------------------------------------


class Camera:
    """A green test camera: ffmpeg pushing a colour pattern to nginx-rtmp (``stop``/``start`` it again)."""

    def __init__(self, server: RtmpServer) -> None:
        self.url = server.url("cam")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = push_test_camera(self.url)
        time.sleep(1.0)  # published

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@pytest.fixture
def camera() -> Iterator[Camera]:
    if not have_nginx_rtmp():
        pytest.skip("needs nginx with the RTMP module (install.sh)")
    with RtmpServer() as server:
        cam = Camera(server)
        cam.start()
        try:
            yield cam
        finally:
            cam.stop()


def corner_colours(path: Path, box: Box, every: int = 30) -> list[tuple[float, tuple[float, float, float]]]:
    """(time, mean RGB inside the box, 8 px in) of every ``every``-th frame of the file."""
    out = []
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i % every:
                continue
            rows, cols = slice(box.y + 8, box.y + box.height - 8), slice(box.x + 8, box.x + box.width - 8)
            rgb = frame.to_ndarray(format="rgb24")[rows, cols]
            r, g, b = (float(v) for v in rgb.reshape(-1, 3).mean(axis=0))
            out.append((float(frame.time or 0.0), (r, g, b)))
    return out


def green(rgb: tuple[float, float, float]) -> bool:
    r, g, b = rgb
    return g > 100 and r < 40 and b < 40


def record(display: str, tmp_path: Path, url: str, seconds: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        framepipe_cmd("record", str(tmp_path / "rec.mkv"), "--camera", url, "--fps", str(FPS), "--duration",
                      f"{seconds:g}", "--no-audio", "--quiet", "--stats-json", str(tmp_path / "stats.json")),
        env=dict(os.environ, DISPLAY=display), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def judged(tmp_path: Path, info_path: Path, seconds: float) -> tuple[dict, judge.Report]:
    """Every frame's code is read and nothing the recorder should have kept is missing."""
    stats = json.loads((tmp_path / "stats.json").read_text())
    info = load_info(info_path)
    frames = judge.read_codes(tmp_path / "rec.mkv", info["code_rect"])
    report = assert_recorder_lost_nothing(frames, info_path, stats, main_file=True)
    assert report.unreadable == 0, report.summary()  # the camera never covers the code
    whole = report.frames_written + stats["frames"]["repeats_not_written"] == round(seconds * FPS)
    assert whole, (report.summary(), stats["frames"], stats["fast_stop"], stats["warnings"])
    print(f"\n{report.summary()}; dropped {stats['frames']['dropped_by_reason']}")
    return stats, report


BOX = overlay_box(CameraConfig(source="rtmp://h/live/cam"), 1920, 1080)


def test_a_network_camera_in_the_corner_of_every_frame(virtual_screen: VirtualScreen, camera: Camera,
                                                        tmp_path: Path) -> None:  # fmt: skip
    info_path = tmp_path / "screen.json"
    painter = start_testscreen(virtual_screen.display, FPS, info_path=info_path)
    try:
        proc = record(virtual_screen.display, tmp_path, camera.url, 8)
        _, err = proc.communicate(timeout=90)
    finally:
        painter.terminate()
        painter.wait(10)
    assert proc.returncode == 0, err
    stats, _ = judged(tmp_path, info_path, 8)
    colours = corner_colours(tmp_path / "rec.mkv", BOX)
    sampled = [(t, c) for t, c in colours if t >= 1.0]  # from the first second on (the camera's first picture)
    assert len(sampled) >= 5 and all(green(c) for _, c in sampled), sampled  # (a loaded machine leaves repeats out)
    enc = stats["stages"]["encode"]["stats"]
    assert enc["camera_shown"] + enc["camera_not_shown"] == enc["encoded"], enc  # every converted frame: one or other
    assert enc["camera_not_shown"] <= FPS, enc  # only before its first picture came
    assert stats["stages"]["camera"]["stats"]["lost"] == 0 and "warning" not in err, err


def test_a_camera_that_does_not_answer_starts_nothing(virtual_screen: VirtualScreen, tmp_path: Path) -> None:
    url = f"rtmp://127.0.0.1:{free_port()}/live/cam"  # nothing listens there
    out = tmp_path / "out.mkv"
    before = framepipe_segments()
    result = run_framepipe("record", str(out), "--camera", url, "--duration", "2", "--no-audio",
                           display=virtual_screen.display)  # fmt: skip
    assert_one_line_error(result, f"camera: {url} does not answer (Connection refused)")
    assert list(tmp_path.iterdir()) == []
    assert not {n for n in framepipe_segments() - before if not alive(int(n.split("_")[1]))}  # none left behind


@NEEDS_RTMP
def test_a_camera_that_answers_but_sends_nothing_starts_nothing(virtual_screen: VirtualScreen,
                                                                tmp_path: Path) -> None:  # fmt: skip
    with RtmpServer() as server:  # nginx keeps a player of a stream nobody publishes waiting
        conf = tmp_path / "cam.toml"
        conf.write_text(f'[camera]\nsource = "{server.url("nobody")}"\nopen_timeout_s = 1.5\n')
        out = tmp_path / "out.mkv"
        result = run_framepipe("record", str(out), "--config", str(conf), "--duration", "2", "--no-audio",
                               display=virtual_screen.display)  # fmt: skip
    assert_one_line_error(result, f"camera: {server.url('nobody')} does not answer (no picture within 1.5 s)")
    assert not out.exists()


def alive(pid: int) -> bool:
    """Whether a process lives (other recordings on this machine have segments of their own)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_camera_that_goes_away_and_comes_back(virtual_screen: VirtualScreen, camera: Camera,
                                                tmp_path: Path) -> None:  # fmt: skip
    info_path = tmp_path / "screen.json"
    seconds = 18
    with painting(virtual_screen.display, info_path, FPS):
        proc = record(virtual_screen.display, tmp_path, camera.url, seconds)
        wait_recording(tmp_path / "rec.mkv")
        time.sleep(2)
        camera.stop()  # the phone's app closed
        time.sleep(6)  # stalled (3 s), said, then the corner empties
        camera.start()
        _, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err
    judged(tmp_path, info_path, seconds)  # the screen went on: every frame kept, every code readable
    name = f"camera {camera.url}"
    assert f"{name} lost (" in err and "the screen goes on" in err and f"{name} is back after" in err, err
    assert "Traceback" not in err
    colours = [green(c) for _, c in corner_colours(tmp_path / "rec.mkv", BOX, every=15)]
    first_gone = colours.index(False, 8)  # green, then nothing (the screen under it) ...
    assert any(colours[first_gone:]) and colours[-1], colours  # ... then the camera again
    cam = json.loads((tmp_path / "stats.json").read_text())["stages"]["camera"]["stats"]
    assert cam["lost"] >= 1 and cam["reopened"] >= 1, cam


def test_the_camera_as_its_own_track(virtual_screen: VirtualScreen, camera: Camera, tmp_path: Path) -> None:
    out = tmp_path / "rec.mkv"
    result = run_framepipe("record", str(out), "--camera", camera.url, "--camera-overlay", "none", "--duration", "4",
                           "--no-audio", "--quiet", display=virtual_screen.display)  # fmt: skip
    assert result.returncode == 0, result.stderr
    with av.open(str(out)) as container:
        screen, cam = container.streams.video
        assert (screen.width, screen.height, cam.width, cam.height) == (1920, 1080, 1280, 720)
        pictures = [f.to_ndarray(format="rgb24")[300:400, 500:700] for f in container.decode(cam)]
    assert len(pictures) >= 2 * 30, len(pictures)  # its own rate (30 fps) from its first picture on
    assert all(green(tuple(float(v) for v in p.reshape(-1, 3).mean(axis=0))) for p in pictures[::10])  # type: ignore[arg-type]
    assert not any(green(c) for _, c in corner_colours(out, BOX))  # the screen's track has no corner
    stream = run_framepipe("record", str(tmp_path / "s.mkv"), "--stream", "rtmp://127.0.0.1:1/live/x", "--camera",
                           camera.url, "--camera-overlay", "none", display=virtual_screen.display)  # fmt: skip
    assert_one_line_error(stream, "a stream (FLV) carries one video track")
