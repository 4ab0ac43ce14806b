"""What ``framepipe tune`` measures before its trials (tune's process).

Cores and how busy each is, memory, free /dev/shm, the display's size, the cost of one grab per
backend (xshm: the X server writes into shared memory; mss: one grab plus one copy, as the
screen stage does it), audio inputs (when the audio stage is built), and which hardware
encoders really open (``stages.video.encode.try_open``: listed is not working).
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import psutil

from framepipe.tune.search import HARDWARE, Target
from pipeline.config import EncodeConfig
from pipeline.errors import FramepipeError
from pipeline.ring import Geometry, Ring, ring_bytes
from pipeline.shm import MARGIN, SHM_DIR, segment_name

GRABS = 20  # timed grabs per backend (after two untimed ones)
ENCODES = 48  # frames encoded to time the encoder (after its first, untimed)
LOAD_SAMPLE_S = 2.0  # how long per-CPU load is measured
RING_CHOICES = (0.2, 0.1)  # ring seconds for the trials, largest first: the first that /dev/shm holds is used


@dataclass(frozen=True)
class Probe:
    """The machine as tune found it."""

    cores: int  # CPUs this process may use
    cpu: str
    memory_gb: float
    shm_free_mb: float | None  # None: no /dev/shm (not Linux)
    display: str
    screen: tuple[int, int]  # the whole X screen
    cpus: tuple[int, ...]  # their numbers
    cpu_load: tuple[float, ...]  # busy percent of each, before the trials
    loadavg: tuple[float, float, float]
    grab_ms: dict[str, float | None]  # backend -> mean ms per grab of the target; None: unavailable
    encoders: dict[str, str | None]  # encoder -> None when it opens, else why not
    audio: str  # what the audio probe found
    raise_priority: bool  # this user may set a negative nice (root, or RLIMIT_NICE allows it)
    encode_ms: float  # CPU per frame of libx264 ultrafast on one thread at the target size, conversion included

    def encode_cores(self, fps: float) -> float:
        """CPUs the default encoder needs at ``fps``."""
        return self.encode_ms * fps / 1000

    def backend(self) -> str:
        """The cheapest grab backend that works (auto when none could be timed)."""
        timed = {name: ms for name, ms in self.grab_ms.items() if ms is not None}
        return min(timed, key=lambda name: timed[name]) if timed else "auto"

    def hardware(self) -> tuple[str, ...]:
        return tuple(name for name in HARDWARE if name in self.encoders and self.encoders[name] is None)

    def ring_seconds(self, target: Target) -> float:
        """The largest ring of RING_CHOICES that fits in free /dev/shm (the smallest if none does)."""
        w, h = target.region[2], target.region[3]
        for seconds in RING_CHOICES:
            need = ring_bytes(Geometry(w, h, w * 4), max(8, round(seconds * target.fps)))
            if self.shm_free_mb is None or need + MARGIN <= self.shm_free_mb * 2**20:
                return seconds
        return RING_CHOICES[-1]

    def lines(self) -> list[str]:
        """What people see before the trials."""
        grabs = ", ".join(f"{k} {'unavailable' if v is None else f'{v:.2f} ms'}" for k, v in self.grab_ms.items())
        opened = [name for name, why in self.encoders.items() if why is None]
        shm = "no /dev/shm" if self.shm_free_mb is None else f"/dev/shm {self.shm_free_mb:.0f} MiB free"
        busy = ", ".join(f"cpu {c} {v:.0f}%" for c, v in zip(self.cpus, self.cpu_load, strict=True))
        return [
            f"tune: machine: {self.cpu}, {self.cores} CPUs (busy now: {busy}; load average {self.loadavg[0]:.2f}), "
            f"{self.memory_gb:.1f} GiB memory, {shm}",
            f"tune: display {self.display}: {self.screen[0]}x{self.screen[1]}; one grab: {grabs}",
            f"tune: encoders that open: {', '.join(opened) or 'none'}; libx264 ultrafast: {self.encode_ms:.1f} ms "
            f"of CPU a frame; audio: {self.audio}",
        ]

    def as_dict(self) -> dict[str, object]:
        """For the profile's [probe] table (flat: scalars and lists)."""
        d = asdict(self)
        d.pop("grab_ms"), d.pop("encoders")
        d |= {f"grab_ms_{k.replace('-', '_')}": (-1.0 if v is None else round(v, 3)) for k, v in self.grab_ms.items()}
        d["encoders_open"] = [name for name, why in self.encoders.items() if why is None]
        d["encoders_failed"] = [name for name, why in self.encoders.items() if why is not None]
        return d


def _mean_ms(grab: Callable[[], object]) -> float:
    for _ in range(2):
        grab()
    t0 = time.perf_counter_ns()
    for _ in range(GRABS):
        grab()
    return (time.perf_counter_ns() - t0) / GRABS / 1e6


def grab_costs(display: str, rect: dict[str, int]) -> dict[str, float | None]:
    """Mean ms per grab of ``rect`` with each backend, the way the screen stage grabs."""
    import mss

    from stages.video.xshm import XshmGrabber, XshmUnavailable

    w, h = rect["width"], rect["height"]
    out: dict[str, float | None] = {}
    ring = Ring.create(segment_name("tuneprobe"), Geometry(w, h, w * 4), 2)
    try:
        grabber = XshmGrabber(ring.path, display)
        try:
            offset = ring.pixel_offset(0)
            out["xshm"] = _mean_ms(lambda: grabber.grab(rect["left"], rect["top"], w, h, offset))
        finally:
            grabber.close()
    except XshmUnavailable:
        out["xshm"] = None
    finally:
        ring.close()
    slot = np.empty((h, w, 4), np.uint8)
    try:
        with mss.MSS(display=display) as sct:
            out["mss"] = _mean_ms(lambda: np.copyto(slot, np.frombuffer(sct.grab(rect).raw, np.uint8).reshape(h, w, 4)))
    except mss.ScreenShotError:
        out["mss"] = None
    return out


def encode_cost(target: Target) -> float:
    """ms of CPU per frame for the default encoder on one thread, BGRA converted as the encoder stage does it."""
    import av
    from av.video.reformatter import VideoReformatter

    from stages.video.encode import codec_options, frame_rate

    w, h = target.region[2], target.region[3]
    ctx: Any = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt, ctx.time_base = w, h, "yuv420p", 1 / frame_rate(target.fps)
    ctx.thread_count, ctx.options = 1, codec_options(EncodeConfig())
    ctx.open()
    picture = np.full((h, w, 4), 40, np.uint8)
    reformatter = VideoReformatter()
    spent = 0
    for n in range(ENCODES + 1):
        picture[:, (n * 8) % w:(n * 8) % w + 160, :3] = 200 - n  # content that moves, like the test screen
        t0 = time.process_time_ns()
        frame = reformatter.reformat(av.VideoFrame.from_numpy_buffer(picture, format="bgra"), w, h, "yuv420p")
        frame.pts = n
        ctx.encode(frame)
        spent += (time.process_time_ns() - t0) if n else 0
    return spent / ENCODES / 1e6


def open_encoders(target: Target) -> dict[str, str | None]:
    """libx264 and each hardware encoder, opened for real at the target's size: None if it opens."""
    from stages.video.encode import try_open

    w, h = target.region[2], target.region[3]
    return {name: try_open(EncodeConfig(encoder=name), w, h, target.fps) for name in ("libx264", *HARDWARE)}


def audio_inputs() -> str:
    """The audio inputs, when the audio stage is built (its probe runs in a process of its own)."""
    try:
        from stages.audio.devices import probe_inputs
    except ImportError:
        return "not built"
    try:
        found = probe_inputs()
    except FramepipeError as exc:
        return f"none ({exc})"
    return f"{len(found.get('inputs', []))} inputs, {len(found.get('pulse_sources', []))} PulseAudio sources"


def may_raise_priority() -> bool:
    """True if this user may set nice below 0 (root, or an RLIMIT_NICE above 20)."""
    if os.geteuid() == 0:
        return True
    soft, _ = resource.getrlimit(resource.RLIMIT_NICE)
    return soft == resource.RLIM_INFINITY or soft > 20


def probe(display: str, screen: tuple[int, int], rect: dict[str, int], target: Target, cpu: str) -> Probe:
    """Measure everything; takes about LOAD_SAMPLE_S plus the audio probe."""
    shm = shutil.disk_usage(SHM_DIR).free / 2**20 if SHM_DIR.is_dir() else None
    cpus = tuple(sorted(os.sched_getaffinity(0)))
    every = psutil.cpu_percent(interval=LOAD_SAMPLE_S, percpu=True)
    load = tuple(float(every[c]) if c < len(every) else 0.0 for c in cpus)
    audio = "not probed"
    with contextlib.suppress(Exception):  # the audio probe never stops a tune
        audio = audio_inputs()
    return Probe(
        cores=len(cpus), cpus=cpus, cpu=cpu, memory_gb=round(psutil.virtual_memory().total / 2**30, 1),
        shm_free_mb=None if shm is None else round(shm, 1), display=display, screen=screen, cpu_load=load,
        loadavg=tuple(round(v, 2) for v in os.getloadavg()),  # type: ignore[arg-type]
        grab_ms=grab_costs(display, rect), encoders=open_encoders(target), audio=audio,
        raise_priority=may_raise_priority(), encode_ms=round(encode_cost(target), 2),
    )  # fmt: skip
