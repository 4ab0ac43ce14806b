"""Micro-benchmark of the pipeline's frame transport: 1080p BGRA frames from one process to another.

What "transport" means: the frame is in one process and must become readable in another.

- ring (``pipeline.ring.Ring``): the writer copies the frame once into a shared-memory slot (in the
  real pipeline the X server writes it there), writes the slot header and sends a msgpack ``Frame``
  descriptor over a pipe, as the screen stage does; the reader receives it, checks the slot header
  and a sequence stamp in the slot's first pixels, and releases the slot. No pixel crosses the pipe.
- memcpy: ``np.copyto`` of the same bytes within one process, into as many buffers as the ring has
  slots. One copy and no second process: the ceiling the ring is measured against.
- queue: the writer puts the numpy frame on a ``multiprocessing.Queue`` (pickled, written through a
  pipe, unpickled), the reader gets it.

Bandwidth is frame bytes made readable to the reader per second, from the writer's first frame to
the reader's last. Rounds interleave the three methods; the median of the rounds is reported.
"""

from __future__ import annotations

import multiprocessing as mp
import statistics
import time
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from pipeline import messages as msg
from pipeline.clock import NS_PER_S, now_ns
from pipeline.ring import PIXFMT_BGRA, Geometry, Ring, SlotHeader
from pipeline.shm import segment_name

RING_TARGET = 0.8  # ring bandwidth at least this share of memcpy's
QUEUE_TARGET = 20.0  # ring bandwidth at least this many times the queue's


@dataclass(frozen=True)
class MicroConfig:
    """How the transport micro-benchmark runs."""

    width: int = 1920  # frame width, pixels
    height: int = 1080  # frame height, pixels
    slots: int = 8  # ring slots (and memcpy buffers, and queue size)
    seconds: float = 1.0  # how long each method runs in each round
    rounds: int = 3  # rounds; each runs every method once


@dataclass(frozen=True)
class Transfer:
    """One method in one round."""

    frames: int
    seconds: float  # writer's first frame to reader's last
    frame_bytes: int
    bad: int = 0  # frames whose header or stamp did not match
    latency_us_p50: float | None = None  # writer send to reader receipt, per frame
    latency_us_p99: float | None = None

    @property
    def gb_per_s(self) -> float:
        return self.frames * self.frame_bytes / self.seconds / 1e9 if self.seconds > 0 else 0.0


def _frame(config: MicroConfig) -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, (config.height, config.width, 4), dtype=np.uint8)


def _percentiles(values: list[int]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    arr = np.array(values, dtype=np.float64) / 1000
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


def memcpy(config: MicroConfig) -> Transfer:
    """np.copyto of the frame into ``slots`` buffers in turn, in this process."""
    src = _frame(config)
    dst = np.zeros((config.slots, *src.shape), np.uint8)
    n, t0 = 0, now_ns()
    while now_ns() - t0 < config.seconds * NS_PER_S:
        np.copyto(dst[n % config.slots], src)
        n += 1
    return Transfer(n, (now_ns() - t0) / NS_PER_S, src.nbytes)


def _ring_writer(name: str, seconds: float, out: Connection, go: Connection) -> None:
    ring = Ring.attach(name)
    g = ring.geometry
    src = _frame(MicroConfig(width=g.width, height=g.height))
    views = [ring.pixels(i) for i in range(ring.slots)]
    stamps = [v.reshape(-1)[:8].view(np.uint64) for v in views]
    go.recv()
    seq, waits, t0 = 0, 0, now_ns()
    while now_ns() - t0 < seconds * NS_PER_S:
        slot = ring.acquire()
        while slot is None:  # the reader is behind: wait (a live capture would drop instead)
            waits += 1
            time.sleep(0)
            slot = ring.acquire()
        np.copyto(views[slot], src)
        stamps[slot][0] = seq
        ring.write_header(slot, SlotHeader(seq, now_ns(), g.width, g.height, g.stride, PIXFMT_BGRA, 0))
        out.send_bytes(msg.encode(msg.Frame(slot, seq, now_ns(), 0)))
        seq += 1
    out.send_bytes(msg.encode(msg.EndOfStream("writer")))
    go.send((t0, seq, waits))
    del views, stamps
    ring.close()


def _ring_reader(name: str, inp: Connection, done: Connection) -> None:
    ring = Ring.attach(name)
    stamps = [ring.pixels(i).reshape(-1)[:8].view(np.uint64) for i in range(ring.slots)]
    latency: list[int] = []
    frames = bad = 0
    last = now_ns()
    while not isinstance(message := msg.decode(inp.recv_bytes()), msg.EndOfStream):
        assert isinstance(message, msg.Frame)
        latency.append(now_ns() - message.capture_ns)
        if ring.header(message.slot).seq != message.seq or int(stamps[message.slot][0]) != message.seq:
            bad += 1
        ring.release()
        frames += 1
        last = now_ns()
    done.send((last, frames, bad, _percentiles(latency)))
    del stamps
    ring.close()


def ring(config: MicroConfig) -> Transfer:
    """Frames through a shared-memory ring between two processes, descriptors over a pipe."""
    ctx = mp.get_context("spawn")
    shm = Ring.create(segment_name("microbench"), Geometry(config.width, config.height, config.width * 4),
                      config.slots)
    try:
        data_r, data_w = ctx.Pipe(duplex=False)
        go_parent, go_child = ctx.Pipe()
        done_r, done_w = ctx.Pipe(duplex=False)
        writer = ctx.Process(target=_ring_writer, args=(shm.name, config.seconds, data_w, go_child))
        reader = ctx.Process(target=_ring_reader, args=(shm.name, data_r, done_w))
        writer.start()
        reader.start()
        go_parent.send("go")
        t0, sent, _waits = go_parent.recv()
        last, frames, bad, (p50, p99) = done_r.recv()
        writer.join()
        reader.join()
    finally:
        shm.close()
    assert frames == sent
    return Transfer(frames, (last - t0) / NS_PER_S, config.width * config.height * 4, bad, p50, p99)


def _queue_writer(q: Any, seconds: float, go: Connection, shape: tuple[int, int]) -> None:
    src = _frame(MicroConfig(width=shape[0], height=shape[1]))
    go.recv()
    seq, t0 = 0, now_ns()
    while now_ns() - t0 < seconds * NS_PER_S:
        q.put((seq, now_ns(), src))
        seq += 1
    q.put(None)
    go.send((t0, seq))


def _queue_reader(q: Any, done: Connection) -> None:
    latency: list[int] = []
    frames = bad = 0
    last = now_ns()
    while (item := q.get()) is not None:
        seq, sent, frame = item
        latency.append(now_ns() - sent)
        bad += seq != frames or frame.nbytes == 0
        frames += 1
        last = now_ns()
    done.send((last, frames, bad, _percentiles(latency)))


def queue(config: MicroConfig) -> Transfer:
    """Frames as numpy arrays through a multiprocessing.Queue between two processes."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue(maxsize=config.slots)
    go_parent, go_child = ctx.Pipe()
    done_r, done_w = ctx.Pipe(duplex=False)
    writer = ctx.Process(target=_queue_writer, args=(q, config.seconds, go_child, (config.width, config.height)))
    reader = ctx.Process(target=_queue_reader, args=(q, done_w))
    writer.start()
    reader.start()
    go_parent.send("go")
    t0, _sent = go_parent.recv()
    last, frames, bad, (p50, p99) = done_r.recv()
    writer.join()
    reader.join()
    return Transfer(frames, (last - t0) / NS_PER_S, config.width * config.height * 4, bad, p50, p99)


METHODS = {"memcpy": memcpy, "ring": ring, "queue": queue}


def run_micro(config: MicroConfig | None = None) -> dict[str, Any]:
    """Every method, ``rounds`` times interleaved; medians, ratios against the targets, and a summary."""
    config = config or MicroConfig()
    rounds: dict[str, list[Transfer]] = {name: [] for name in METHODS}
    for _ in range(config.rounds):
        for name, method in METHODS.items():
            rounds[name].append(method(config))
    median = {name: statistics.median(t.gb_per_s for t in runs) for name, runs in rounds.items()}
    vs_memcpy = median["ring"] / median["memcpy"] if median["memcpy"] else 0.0
    vs_queue = median["ring"] / median["queue"] if median["queue"] else 0.0
    descriptor = len(msg.encode(msg.Frame(config.slots - 1, 10**6, 10**11, 0))) + 4  # + the pipe's length prefix
    mb = config.width * config.height * 4 / 1e6
    lines = [f"Ring transport, {config.width}x{config.height} BGRA ({mb:.1f} MB a frame), median of {config.rounds}:"]
    for name, runs in rounds.items():
        p50s = [t.latency_us_p50 for t in runs if t.latency_us_p50 is not None]
        lat = f", latency p50 {statistics.median(p50s):.0f} us" if p50s else ""
        lines.append(f"  {name:7s} {median[name]:6.2f} GB/s = {median[name] * 1e3 / mb:7.0f} frames/s{lat}")
    verdict = {True: "met", False: "MISSED"}
    lines.append(
        f"  ring / memcpy = {vs_memcpy:.2f}x (target >= {RING_TARGET}x: {verdict[vs_memcpy >= RING_TARGET]}); "
        f"ring / queue = {vs_queue:.1f}x (target >= {QUEUE_TARGET:g}x: {verdict[vs_queue >= QUEUE_TARGET]}); "
        f"descriptor {descriptor} B a frame"
    )
    return {
        "config": asdict(config),
        "definition": (__doc__ or "").split("\n\n", 1)[1].strip(),
        "rounds": {name: [{**asdict(t), "gb_per_s": round(t.gb_per_s, 3)} for t in runs]
                   for name, runs in rounds.items()},
        "median_gb_per_s": {k: round(v, 3) for k, v in median.items()},
        "ring_vs_memcpy": round(vs_memcpy, 3),
        "ring_vs_queue": round(vs_queue, 2),
        "targets": {"ring_vs_memcpy": RING_TARGET, "ring_vs_queue": QUEUE_TARGET,
                    "met": vs_memcpy >= RING_TARGET and vs_queue >= QUEUE_TARGET},
        "descriptor_bytes": descriptor,
        "summary": "\n".join(lines),
    }
