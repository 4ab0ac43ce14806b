"""A file output (fp-encode): the encoded packets muxed into .mkv, or fragmented .mp4/.mov, crash-safe.

The container's streams are made from the encoder's (``add_stream_from_template``: codec parameters
and headers, no second encoder). A full disk ends this file with what it holds, in one line; a disk
running low is warned about once.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path
from typing import Any

import av

from pipeline.clock import now_ns
from stages.outputs.formats import container_for
from stages.outputs.output import Coded, Output
from stages.outputs.paths import create_new, open_reserved

LOW_SPACE_BYTES = 1 << 30  # warn when the output's disk has less than this left ...
LOW_SPACE_SECONDS = 120  # ... or less than this many seconds at the current rate


class DiskFull(OSError):
    """The output's file system is full; the message says what is kept."""


class DiskWatch:
    """Warns once when the output's disk runs low (checked about once a second)."""

    def __init__(self, path: str, warn: Any) -> None:
        self.folder = str(Path(path).resolve().parent)
        self.warn = warn
        self.warned = False
        self.next_check = 0
        self.started = now_ns()

    def check(self, written: int) -> None:
        now = now_ns()
        if self.warned or now < self.next_check:
            return
        self.next_check = now + 1_000_000_000
        free = shutil.disk_usage(self.folder).free
        rate = written / max(1e-9, (now - self.started) / 1e9)
        if free < LOW_SPACE_BYTES or free < rate * LOW_SPACE_SECONDS:
            left = f" (about {free / rate:.0f} s at this rate)" if rate > 0 else ""
            self.warn(f"low disk space: {free / 2**20:.0f} MiB left in {self.folder}{left}; free some space")
            self.warned = True


def muxed(packet: Coded, stream: Any) -> Any:
    """A PyAV packet of ``stream`` with its own copy of the data (a muxer takes packets over)."""
    out = av.Packet(packet.data)
    out.pts, out.dts, out.time_base = packet.pts, packet.dts, packet.time_base
    out.is_keyframe = packet.keyframe
    out.stream = stream
    return out


class FileOutput(Output):
    """One recorded file."""

    kind = "file"

    def __init__(self, settings: dict[str, Any], warn: Any) -> None:
        super().__init__(settings, warn)
        self.path: str = settings["path"]
        self.ident = tuple(settings["reserved"]) if settings.get("reserved") else None
        self.container: Any = None
        self.file: Any = None

    def describe(self) -> str:
        return f"file {self.path}"

    def open(self, tracks: list[Any]) -> None:
        fmt, options = container_for(self.path)
        self.file = open_reserved(self.path, self.ident) if self.ident else create_new(self.path)  # type: ignore[arg-type]
        self.container = av.open(self.file, mode="w", format=fmt, options=options)  # a file object: no protocols
        self.streams = []
        for template in tracks:
            stream = self.container.add_stream_from_template(template)
            for key in ("title", "handler_name"):  # the track's name (Matroska's, MP4's)
                if key in template.metadata:
                    stream.metadata[key] = template.metadata[key]
            self.streams.append(stream)
        self.space = DiskWatch(self.path, self.warn)

    def write(self, packet: Coded) -> None:
        try:
            self.container.mux(muxed(packet, self.streams[packet.track]))
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise DiskFull(errno.ENOSPC, f"the disk is full: {self.path} keeps what was written so far") from None
            raise
        self.space.check(self.counts["bytes"])

    def close(self) -> None:
        container, self.container = self.container, None
        file, self.file = self.file, None
        try:
            if container is not None:
                container.close()
        finally:
            if file is not None:
                file.close()

    def details(self) -> dict[str, Any]:
        return {"path": self.path}
