"""The one encode (process fp-encode): ring slots in, encoded packets out to every output.

Each slot holds an I420 picture the screen stage converted (``stages.video.convert``),
copied into a frame of ours and given back to capture at once (a BGRA slot, where
the screen stage could not convert, is wrapped as a PyAV frame and converted here);
a constant-frame-rate repeat re-encodes the last converted picture, unless the
encoder is more than half a second behind the clock: then the repeat is left out
(the picture stays on screen through the pts gap all the same) so that an
overloaded encoder catches up and the video keeps pace with the audio instead
of ending seconds short. Audio blocks, when the plan has an audio stage, come on
a second input and are encoded beside (``stages.audio.encode``). Each packet is
handed to every output (``stages.outputs``: files, each on its own thread and
queue); the outputs are closed once every input ended. With a camera (port ``camera``)
its newest picture is pasted into each converted frame, or encoded as a track of its
own (``stages.video.overlay``). A pause leaves its frames
and samples out and shifts what follows back (``pipeline.pause``).
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import math
import os
from dataclasses import replace
from fractions import Fraction
from typing import Any

import numpy as np

from pipeline import messages as msg
from pipeline.clock import NS_PER_S, now_ns
from pipeline.config import EncodeConfig
from pipeline.errors import FramepipeError
from pipeline.pause import PauseSchedule
from pipeline.ring import Ring
from pipeline.stage import Stage
from stages.audio.encode import AudioEncoder
from stages.outputs.formats import GLOBAL_HEADER, OUTPUT_KINDS, frame_rate, output_size
from stages.outputs.output import Coded, Output, OutputState
from stages.video.overlay import CameraTrack, Overlay
from stages.video.picture import i420_frame
from stages.video.timestamp import VFR_TIME_BASE

FALLBACK_ENCODER = "libx264"
LATENCY_BIN_NS = 250_000  # capture-to-packet latency histogram: 0.25 ms bins ...
LATENCY_BINS = 20_000  # ... up to 5 s


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt() parameters
HEAP_BUFFERS_UP_TO = 32 << 20  # allocations up to this size come from the heap (glibc's upper limit) ...
HEAP_KEEP = 256 << 20  # ... and the heap keeps up to this much freed memory instead of giving it back
WARM_FRAMES = 2  # blank frames through the throwaway encoder before the start: this many more than x264's
# frame threads (``threads``, or 1.5 a CPU when automatic; each holds a frame); more only stay in the heap unused
BEHIND_NS = 500_000_000  # a repeat this far behind the clock is not encoded (see Encoder.handle)
ADAPT_BEHIND = 3  # ADAPTIVE threads: this many frames waiting in the ring (slices falling behind) switches to frames
SHED_HIGH = 0.5  # "shed" policy: start encoding every other frame when the ring is this full ...
SHED_LOW = 0.2  # ... and stop once it has drained to this
REPEAT_RUNS = 512  # the file ticks written as repeats are kept as this many runs (then only counted) ...
LATE_GRABS = 2048  # ... and the frames grabbed (their picture made by) over LATE_GRAB_NS after their tick
LATE_GRAB_NS = 1_000_000


def hist_percentile(hist: np.ndarray, q: float) -> float | None:
    """The q-th percentile, in ms, of a latency histogram (upper edge of its bin)."""
    total = int(hist.sum())
    if total == 0:
        return None
    index = int(np.searchsorted(np.cumsum(hist), total * q / 100))
    return (index + 1) * LATENCY_BIN_NS / 1e6


def reuse_frame_buffers() -> bool:
    """Keep freed picture buffers in this process's heap (glibc), so each converted frame reuses the last
    one's pages. By default glibc maps every buffer over 128 KiB afresh and unmaps it when freed: a new
    1080p picture then costs ~500 page faults, zeroed pages and 2 ms of kernel time. False elsewhere."""
    try:
        libc = ctypes.CDLL(None)
        mmap_set = libc.mallopt(M_MMAP_THRESHOLD, HEAP_BUFFERS_UP_TO)
        return bool(mmap_set and libc.mallopt(M_TRIM_THRESHOLD, HEAP_KEEP))
    except (OSError, AttributeError):  # not glibc
        return False


def conversion_options() -> dict[str, Any]:
    """How the encoder converts BGRA to YUV 4:2:0: one thread; chroma computed for every pixel
    (``FULL_CHR_H_INP``: swscale's SIMD input path) and averaged over each 2x2 block (``AREA``).
    Against the bilinear filter we used before: 4.4 ms a 1080p frame against 4.8, chroma as close or
    closer to the original, files at the same crf 2.5x smaller on the test screen (NOTES.md). Luma is
    not scaled and the same either way. Older PyAVs get what they support."""
    import av
    from av.video.reformatter import Interpolation, VideoReformatter

    options: dict[str, Any] = {"threads": 1, "interpolation": Interpolation.AREA}
    flags = getattr(Interpolation, "FULL_CHR_H_INP", None)
    if flags is not None:
        options["interpolation"] = Interpolation.AREA | flags
    probe = av.VideoFrame(16, 16, "bgra")
    for drop in ("interpolation", "threads"):
        try:
            VideoReformatter().reformat(probe, 16, 16, "yuv420p", **options)
            return options
        except (TypeError, ValueError):
            options.pop(drop, None)
    return options


def codec_options(config: EncodeConfig) -> dict[str, str]:
    """Private options for the codec: libx264 takes preset and crf; hardware encoders keep their defaults."""
    capped = {"maxrate": f"{config.max_kbps}k", "bufsize": f"{2 * config.max_kbps}k"} if config.max_kbps else {}
    if config.encoder == "libx264":  # no frames held for a lookahead thread: with frame threads x264 holds
        # threads - 1 + sync-lookahead frames, and sync-lookahead is the threads again by default (NOTES.md)
        return {"preset": config.preset, "crf": str(config.crf), "x264-params": "sync-lookahead=0", **capped}
    if config.encoder == "libx265":
        return {"preset": config.preset, "crf": str(config.crf), **capped}
    return capped


def try_open(config: EncodeConfig, width: int, height: int, fps: float) -> str | None:
    """Open the configured encoder for real; None if it works, else why not.

    Listed is not working (a wheel lists nvenc without a GPU): only an open
    proves it.
    """
    import av

    try:
        ctx: Any = av.CodecContext.create(config.encoder, "w")
        ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
        ctx.time_base = 1 / frame_rate(fps)
        ctx.options = codec_options(config)
        ctx.open()
        ctx.close() if hasattr(ctx, "close") else None
    except Exception as exc:
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return None


def make_output(settings: dict[str, Any], warn: Any) -> Output:
    """An output of the kind its settings name (imported here, in fp-encode, only when used)."""
    module, _, name = OUTPUT_KINDS[settings["kind"]].partition(":")
    cls: type[Output] = getattr(importlib.import_module(module), name)
    return cls(settings, warn)


class EncodeError(FramepipeError, RuntimeError):
    """The recording cannot go on: nothing is written any more."""


class Encoder(Stage):
    """The one encode: placed frames (port ``video``) and audio blocks (port ``audio``) in, encoded once, the
    packets handed to every output. Pauses are applied here, on the running times (``PauseSchedule``)."""

    name = "encode"

    @classmethod
    def preload(cls) -> None:
        import av.video.reformatter  # noqa: F401  (PyAV: 0.1 s, before the context rather than after it)

        import stages.outputs.file  # noqa: F401

    def open(self) -> dict[str, Any]:
        import av
        from av.video.reformatter import VideoReformatter

        config: EncodeConfig = self.ctx.config
        extra = self.ctx.extra
        self.ring = Ring.attach(extra["ring"])
        g = self.ring.geometry
        self.picture: tuple[int, int] = tuple(extra.get("picture") or (g.width, g.height))  # the screen's size
        fps = extra["fps"]
        info: dict[str, Any] = {}
        self.size = output_size(self.picture[0], self.picture[1], config.output_height)
        why = try_open(config, *self.size, fps) if config.encoder != FALLBACK_ENCODER else None
        if why is not None:
            self.ctx.warn(f"encoder {config.encoder} does not open here ({why}); using {FALLBACK_ENCODER}")
            info["fallback"] = f"{config.encoder} -> {FALLBACK_ENCODER}"
            config = EncodeConfig(**{**config.__dict__, "encoder": FALLBACK_ENCODER, "preset": "ultrafast"})
        # The encoders live in a container of the "null" format, which writes nothing: it opens them with
        # their headers apart (extradata), and every output makes its streams from them.
        self.codecs: Any = av.open(os.devnull, mode="w", format="null")
        rate = frame_rate(fps)
        self.time_base = Fraction(1, VFR_TIME_BASE) if extra["mode"] == "vfr" else 1 / rate
        self.ns_per_pts = float(self.time_base * NS_PER_S)  # for the behind-the-clock test, once
        stream: Any = self.codecs.add_stream(config.encoder, rate=rate)
        stream.time_base = self.time_base
        self.config, self.gop = config, max(1, round(fps * (config.gop_seconds or 1.0)))
        # ADAPTIVE: slice threads while they keep up (``_to_frame_threads``); only where a new encoder can take
        # over mid-stream: the same headers, and no B-frames (its first decoding times would go back)
        self.adaptive = config.thread_type == "ADAPTIVE" and config.encoder == FALLBACK_ENCODER \
            and config.preset == "ultrafast"  # fmt: skip
        threads = "SLICE" if self.adaptive else "FRAME" if config.thread_type == "ADAPTIVE" else config.thread_type
        self._set_up(stream.codec_context, threads)
        self.stream: Any = stream  # the track every output made from it
        self.video: Any = stream.codec_context  # what encodes it: this, or the frame-threaded one after a switch
        self.threading: dict[str, Any] = {"thread_type": threads, "frame_threads_from_frame": None}
        if extra.get("planar"):  # I420 slots (the screen stage converted them): copied into a frame of our own
            self.planes = [self.ring.planes(i, *self.picture) for i in range(self.ring.slots)]
            self.frames = []
        else:  # BGRA slots: converted from where they lie
            self.planes = []
            self.frames = [
                av.VideoFrame.from_numpy_buffer(self.ring.pixels(i), format="bgra") for i in range(self.ring.slots)
            ]
        self.reformatter = VideoReformatter()  # one cached scaler, one thread: least CPU per frame
        if reuse_frame_buffers() and config.encoder == FALLBACK_ENCODER:  # before the first picture
            self._warm_heap(threads)  # here, not in start(): frames would pile up in the ring meanwhile
        self.convert = conversion_options()
        self.last: Any = None  # the last frame converted to the codec's format: repeats re-encode it
        self.overload = config.overload
        self.shedding = False
        self.capture_of_pts: dict[int, int] = {}
        self.unwritten_end: int | None = None  # the last tick, when it was a repeat left out
        self.repeat_runs: list[list[int]] = []  # [file tick, n]: where the file shows the held picture again
        self.late_grabs: list[list[int]] = []  # [file tick, us, us]: grabbed this long after the tick, made within
        self.latency_hist = np.zeros(LATENCY_BINS, np.int64)  # bounded memory for hours of recording
        self.pauses = PauseSchedule()
        self.counts = {
            "encoded": 0, "repeated": 0, "repeats_not_written": 0, "held_skips": 0, "shed": 0, "packets": 0,
            "bytes": 0, "seq_mismatch": 0, "paused_frames": 0, "repeats_not_listed": 0,
        }  # fmt: skip
        self.audio: AudioEncoder | None = None  # added in start(), once the audio stage named its tracks
        camera = extra.get("camera")  # the camera's box: its newest picture is pasted into every frame ...
        self.overlay = self.camera_track = None
        if camera and camera["track"]:  # ... or it is a second video track (libx264, at its own rate)
            self.camera_track = CameraTrack(Ring.attach(extra["camera_ring"]), self._camera_stream(camera, config),
                                            camera)  # fmt: skip
        elif camera:
            self.overlay = Overlay(Ring.attach(extra["camera_ring"]), camera, camera["stale_ns"])
        reserved = extra.get("reserved", {})  # the files the supervisor created for us (stages.outputs.paths)
        self.outputs = [make_output({**o, "reserved": reserved.get(o.get("path"))}, self.ctx.warn)
                        for o in extra["outputs"]]  # fmt: skip
        info.update({"encoder": config.encoder, "size": list(self.size),
                     "outputs": [o.describe() for o in self.outputs]})  # fmt: skip
        return info

    def _set_up(self, cc: Any, thread_type: str) -> None:
        """Give a video codec context the recording's settings, with ``thread_type`` threads."""
        cc.width, cc.height = self.size
        cc.pix_fmt = "yuv420p"
        cc.time_base = self.time_base
        cc.gop_size = self.gop
        cc.thread_type = thread_type
        cc.thread_count = self.config.threads
        cc.options = codec_options(self.config)
        cc.flags |= GLOBAL_HEADER

    def _warm_heap(self, thread_type: str) -> None:
        """Run a throwaway encoder of the same settings through a few blank frames before the start, so the
        real one's buffers come from heap pages this process has already faulted in (``reuse_frame_buffers``
        keeps them). Without it, the first frames of a 1080p recording took 40-80 ms of CPU each in this
        process (x264 allocating its frames: page faults), a quarter of a second behind the screen just as
        the recording starts, where a 0.2 s ring on a loaded machine filled and dropped frames (NOTES.md)."""
        import av

        warm: Any = av.CodecContext.create(self.config.encoder, "w")
        self._set_up(warm, thread_type)
        warm.open()
        blank = av.VideoFrame(*self.size, "yuv420p")
        threads = self.config.threads or math.ceil(1.5 * len(os.sched_getaffinity(0)))
        for pts in range(threads + WARM_FRAMES):
            blank.pts = pts
            warm.encode(blank)
        warm.encode(None)  # every frame out: its buffers freed into the heap

    def _to_frame_threads(self) -> None:
        """Slice threads fell behind (frames waiting in the ring): a frame-threaded encoder takes over from here.

        It is opened first and must make the same headers (the outputs' tracks were made from them); the
        slice encoder's last frame comes out, then the new one starts with a keyframe at the next frame.
        """
        import av

        self.adaptive = False  # once, either way
        new: Any = av.CodecContext.create(self.config.encoder, "w")
        self._set_up(new, "FRAME")
        new.open()
        if new.extradata != self.video.extradata:
            self.ctx.warn("the encoder stays on slice threads (frame threads would change its headers)")
            return
        self._send(self.video.encode(None), video=True)
        self.video = new
        self.threading = {"thread_type": "SLICE, then FRAME", "frame_threads_from_frame": self.counts["encoded"]}

    def _camera_stream(self, box: dict[str, Any], config: EncodeConfig) -> Any:
        stream: Any = self.codecs.add_stream(FALLBACK_ENCODER, rate=30)
        stream.width, stream.height, stream.pix_fmt = box["width"], box["height"], "yuv420p"
        stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
        stream.codec_context.gop_size = 30
        stream.codec_context.options = codec_options(replace(config, encoder=FALLBACK_ENCODER, preset="ultrafast"))
        stream.codec_context.flags |= GLOBAL_HEADER
        return stream

    def start(self) -> None:
        """Add the audio tracks the audio stage names, open every encoder, then open every output."""
        audio = self.ctx.inputs.get("audio")
        tracks = self._audio_tracks(audio) if audio is not None else None
        if tracks is not None:
            extra = self.ctx.extra
            self.audio = AudioEncoder(self.codecs, Ring.attach(extra["audio_ring"]), tracks, extra["audio_codec"],
                                      extra["audio_bitrate_kbps"], self.pauses)  # fmt: skip
        self.codecs.start_encoding()
        templates = sorted(self.codecs.streams, key=lambda s: s.index)  # video, the camera's, the audio tracks
        for output in self.outputs:
            output.begin(templates)
        self._check_outputs()

    def _audio_tracks(self, source: Any) -> msg.AudioTracks | None:
        """The audio stage's first message names the tracks (sent before it was ready: here already)."""
        try:
            message = msg.decode(source.recv_bytes())
        except (EOFError, OSError):
            return None
        if not isinstance(message, msg.AudioTracks) or not message.names:
            return None  # no audio after all (no default input): video only
        return message

    def on_control(self, message: msg.Message) -> None:
        if isinstance(message, msg.Pause):
            self.pauses.pause(message.at)
        elif isinstance(message, msg.Resume):
            self.pauses.resume(message.at)
        elif isinstance(message, msg.SaveReplay):
            self._save_replay(message)

    def _save_replay(self, message: msg.SaveReplay) -> None:
        """Have the replay buffer write a file on its own thread; the supervisor hears when it is closed."""
        replay = next((o for o in self.outputs if o.kind == "replay"), None)

        def done(path: str, error: str, seconds: float) -> None:
            self.ctx.report(msg.Saved(self.name, message.request, path, error, seconds))

        if replay is None:
            done("", "this recording has no replay buffer: start it with --replay SECONDS", 0.0)
            return
        replay.save(message.seconds or None, done)  # type: ignore[attr-defined]

    def on_buffer(self, port: str, message: msg.Message) -> None:
        if isinstance(message, msg.Frame):  # port camera: a picture (the screen's come placed, as Encode)
            if self.overlay is not None:
                self.overlay.take(message)
            elif self.camera_track is not None:
                shift = self.pauses.offset(message.capture_ns)
                self._send(self.camera_track.encode(message, shift), video=False)
        elif isinstance(message, msg.AudioBlock):
            if self.audio is not None:
                self._send(self.audio.encode(message), video=False)
        else:
            self.handle(message)

    def handle(self, message: msg.Message) -> None:
        """Apply one instruction from the timestamper."""
        if isinstance(message, msg.Encode):
            if self._paused(message.pts):
                self._release(message.slot, message.seq)
                self.counts["paused_frames"] += 1
                return
            if self._shed():
                self._release(message.slot, message.seq)
                self.counts["shed"] += 1
                self._encode(message.pts, repeat=True)  # the previous picture again: cheap, the timeline whole
                return
            self.capture_of_pts[message.pts] = message.capture_ns
            if self.adaptive and self.ring.fill() > ADAPT_BEHIND:  # (the fill counts this frame too)
                self._to_frame_threads()
            self.last = self._picture(message.slot)
            if self.overlay is not None:  # the camera's newest picture, into the converted planes
                self.overlay.paste(self.last, message.capture_ns)
            self._release(message.slot, message.seq)  # converted: the slot can go back to capture now
            late_ns = message.capture_ns - round(message.pts * self.ns_per_pts)
            self._encode(message.pts, late_ns=late_ns, grab_ns=message.grab_ns)
            self.counts["encoded"] += 1
        elif isinstance(message, msg.Repeat):
            if self._paused(message.pts):
                return
            if self._behind(message.pts):  # overloaded: the picture stays on screen all the same (a pts gap),
                self.counts["repeats_not_written"] += 1  # and the encoder catches up instead of falling behind
                self.unwritten_end = message.pts
                return
            self._encode(message.pts, repeat=True)
            self.counts["repeated"] += 1
        elif isinstance(message, msg.Hold):
            self._release(message.slot, message.seq)
            self.counts["held_skips"] += 1

    def _picture(self, slot: int) -> Any:
        """The slot's picture as a yuv420p frame of the output's size, the slot no longer needed after."""
        if not self.planes:
            return self.reformatter.reformat(self.frames[slot], *self.size, "yuv420p", **self.convert)
        frame = i420_frame(self.planes[slot])
        if self.size != self.picture:  # output_height: scaled here (the ring holds what was grabbed)
            frame = self.reformatter.reformat(frame, *self.size, "yuv420p", **self.convert)
        return frame

    def _paused(self, pts: int) -> bool:
        return self.pauses.offset(round(pts * self.ns_per_pts)) is None

    def _behind(self, pts: int) -> bool:
        """Whether the frame at ``pts`` is more than BEHIND_NS older than now: the encoder is not keeping up."""
        due_ns = self.base_time + pts * self.ns_per_pts
        return now_ns() - due_ns > BEHIND_NS

    def _shed(self) -> bool:
        """Under the "shed" policy, whether to skip converting this frame (the ring is filling up)."""
        if self.overload != "shed" or self.last is None:
            return False
        fill = self.ring.fill()
        if fill >= self.ring.slots * SHED_HIGH:
            self.shedding = True
        elif fill <= self.ring.slots * SHED_LOW:
            self.shedding = False
        return self.shedding and self.counts["encoded"] % 2 == 1

    def _release(self, slot: int, seq: int) -> None:
        if self.ring.header(slot).seq != seq:  # the writer overran this slot: a bug, never silent
            self.counts["seq_mismatch"] += 1
        self.ring.release()

    def _encode(self, pts: int, repeat: bool = False, late_ns: int = 0, grab_ns: int = 0) -> None:
        """Encode the held picture at running-time tick ``pts``, shifted back by the paused time before it;
        a ``repeat`` (no new grab for that tick), or a grab ``late_ns`` after its tick whose picture was made
        within ``grab_ns`` more (the X server's copy), ending over 1 ms after the tick, is noted by file tick."""
        self.unwritten_end = None
        if self.last is None:
            return
        shift = self.pauses.offset(round(pts * self.ns_per_pts)) or 0
        out_pts = pts - round(shift / self.ns_per_pts)
        if repeat:
            self._note_repeat(out_pts)
        elif late_ns + grab_ns > LATE_GRAB_NS and len(self.late_grabs) < LATE_GRABS:
            self.late_grabs.append([out_pts, late_ns // 1000, grab_ns // 1000])
        if pts in self.capture_of_pts:
            self.capture_of_pts[out_pts] = self.capture_of_pts.pop(pts)
        self.last.pts = out_pts
        self.last.time_base = self.time_base
        self._send(self.video.encode(self.last), video=True)

    def _note_repeat(self, tick: int) -> None:
        """Add file tick ``tick`` to the repeat runs (a judge reads them: no grab stands behind these)."""
        runs = self.repeat_runs
        if runs and runs[-1][0] + runs[-1][1] == tick:
            runs[-1][1] += 1
        elif len(runs) < REPEAT_RUNS:
            runs.append([tick, 1])
        else:
            self.counts["repeats_not_listed"] += 1

    def _send(self, packets: list[Any], video: bool) -> None:
        """Every output gets each packet (its own queue); latency is measured at this hand-over."""
        now = now_ns() - self.base_time
        for packet in packets:
            captured = self.capture_of_pts.pop(packet.pts, -1) if video else -1
            if captured >= 0 and self.pauses.offset(captured) == self.pauses.offset(now):  # not held over a pause
                self.latency_hist[min(LATENCY_BINS - 1, max(0, (now - captured) // LATENCY_BIN_NS))] += 1
            if video:
                self.counts["packets"] += 1
                self.counts["bytes"] += packet.size
            track = self.stream.index if video else packet.stream.index  # video: from the codec context itself
            coded = Coded(track, bytes(packet), packet.pts, packet.dts, packet.time_base, packet.is_keyframe, video)
            for output in self.outputs:
                output.put(coded)
        if packets:
            self._check_outputs()

    def _check_outputs(self) -> None:
        """Every output failed: nothing is recorded any more, so the recording stops (one line each was said)."""
        if self.outputs and all(o.state is OutputState.FAILED for o in self.outputs):
            raise EncodeError("every output failed, nothing is recorded any more: "
                              + "; ".join(f"{o.describe()}: {o.why}" for o in self.outputs))

    def finish(self, flush: bool = True) -> None:
        """Flush the encoders (unless stopping fast) and end every output: the files are complete after this."""
        if flush:
            if self.unwritten_end is not None:  # end on the last tick: the video spans the whole recording
                self.counts["repeats_not_written"] -= 1
                self.counts["repeated"] += 1
                self._encode(self.unwritten_end, repeat=True)
            self._send(self.video.encode(None), video=True)
            if self.audio is not None:
                self._send(self.audio.flush(), video=False)
            if self.camera_track is not None:
                self._send(self.camera_track.flush(), video=False)
        for output in self.outputs:
            output.end()

    def stats(self) -> dict[str, Any]:
        if not hasattr(self, "counts"):
            return {}
        return {
            **self.counts,
            **self.threading,
            "latency_ms_p50": hist_percentile(self.latency_hist, 50),
            "latency_ms_p99": hist_percentile(self.latency_hist, 99),
            "paused_ms": round(self.pauses.paused_ns(now_ns() - self.base_time) / 1e6) if self.base_time else 0,
            "outputs": [o.stats() for o in self.outputs],
            "repeat_runs": self.repeat_runs,
            "late_grabs": self.late_grabs,
            **({"audio": self.audio.stats()} if self.audio is not None else {}),
            **(self.overlay.counts if self.overlay is not None else {}),
            **(self.camera_track.counts if self.camera_track is not None else {}),
        }

    def close(self) -> None:
        for output in getattr(self, "outputs", []):
            if output.state is OutputState.OPEN:
                output.end()  # an error mid-run: leave what was written as playable as it is
        codecs = getattr(self, "codecs", None)
        if codecs is not None:
            with contextlib.suppress(Exception):
                codecs.close()
            self.codecs = None
        self.frames, self.planes = [], []
        self.last = None
        self.stream = self.video = None
        audio, self.audio = getattr(self, "audio", None), None
        if audio is not None:
            audio.close()
        for camera in (getattr(self, "overlay", None), getattr(self, "camera_track", None)):
            if camera is not None:
                camera.close()
                camera.ring.close()
        self.overlay = self.camera_track = None
        if hasattr(self, "ring"):
            self.ring.close()
