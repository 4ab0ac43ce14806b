"""A shared-memory ring of fixed frame slots: one writer, one reader.

Layout of the segment::

    [control: 64 B]  magic, slots, width, height, stride, released, written
    [slot 0: header 64 B | pixels (height x stride, 64 B aligned)]
    [slot 1: ...]

The capture process writes pixels into a slot once and publishes it with a
``Frame`` message (a pipe write, which is a syscall and so a memory barrier).
The encoder reads the slot in place and, when done, advances ``released``:
a counter only the reader writes (``written`` only the writer writes). Slots
are released strictly in the order they were written, so the writer knows
which are still in flight, and takes the lowest-numbered free one while
``written - released < slots``.

Elastic: ``slots`` is what the ring can hold (a stall of the encoder of up to
its length loses nothing), not what it takes. Only the first ``UPFRONT_SLOTS``
are allocated before the start; the writer allocates one more slot ahead each
time it reaches the last allocated one. As the lowest free slot is always
taken, a reader that keeps up cycles through the first few, and the memory the
ring takes is what the run needed (``allocated``), not its capacity.

Lifetimes: numpy views into the segment must be dropped before ``close()``;
``close()`` refuses (BufferError) while any still exist. numpy is imported
only where pixels are viewed (the encoder, the mss fallback): the supervisor,
the timestamper and the zero-copy capture start without it.
"""

from __future__ import annotations

import struct
import weakref
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.errors import SetupError
from pipeline.shm import Segment

if TYPE_CHECKING:
    import numpy as np

MAGIC = 0x46505247  # "FPRG"
CONTROL = struct.Struct("<IIIIIxxxxQQ")  # magic, slots, width, height, stride, pad, released, written
CONTROL_BYTES = 64
HEADER = struct.Struct("<QqIIIII")  # seq, capture_ns, width, height, stride, pixfmt, flags
HEADER_BYTES = 64
COUNTERS_OFFSET = CONTROL.size - 16  # released (only the reader writes it), written (only the writer)

UPFRONT_SLOTS = 2  # slots allocated before the start; the writer allocates the rest as it reaches them
FLAG_DISCONT = 1  # frames were dropped just before this one
PIXFMT_BGRA = 1
PIXFMT_I420 = 2  # planar Y, U, V (4:2:0), each plane packed (``planes``): the screen's and a camera's pictures


def _align(n: int, to: int = 64) -> int:
    return (n + to - 1) // to * to


@dataclass(frozen=True)
class Geometry:
    """Pixel layout of every slot of a ring."""

    width: int
    height: int
    stride: int  # bytes per row

    @property
    def frame_bytes(self) -> int:
        return self.height * self.stride

    @property
    def slot_bytes(self) -> int:
        return HEADER_BYTES + _align(self.frame_bytes)


def i420_geometry(width: int, height: int) -> Geometry:
    """The slot layout of I420 pictures ``width`` x ``height``: Y rows, then U and V packed (``Ring.planes``)."""
    return Geometry(width, height * 3 // 2, width)


def ring_bytes(geometry: Geometry, slots: int) -> int:
    """Size of the shared-memory segment for a ring (what it can hold; it takes what it allocated)."""
    return CONTROL_BYTES + slots * geometry.slot_bytes


def upfront_bytes(geometry: Geometry, slots: int) -> int:
    """What a ring of ``slots`` allocates before the start (``Ring.allocate``)."""
    return ring_bytes(geometry, min(slots, UPFRONT_SLOTS))


@dataclass(frozen=True)
class SlotHeader:
    """The fixed header every slot carries."""

    seq: int
    capture_ns: int
    width: int
    height: int
    stride: int
    pixfmt: int
    flags: int


class Ring:
    """One frame ring. The supervisor creates it; stages ``attach`` by name."""

    def __init__(self, shm: Segment) -> None:
        self._shm = shm
        self._buf: memoryview = shm.buf
        magic, self.slots, width, height, stride, _, _ = CONTROL.unpack_from(self._buf, 0)
        if magic != MAGIC:
            shm.close()
            raise ValueError(f"shared memory {shm.name} is not a framepipe ring")
        self.geometry = Geometry(width, height, stride)
        # released, written: each an aligned 8-byte word, stored whole by one side only
        self._counters = self._buf[COUNTERS_OFFSET : COUNTERS_OFFSET + 16].cast("Q")
        self._views: list[weakref.ref[np.ndarray]] = []
        self.upfront = min(self.slots, UPFRONT_SLOTS)
        self.allocated = self.upfront  # the writer's: slots whose pages exist (see the module's docstring)
        self._flight: deque[int] = deque()  # the writer's: slots written and not released, oldest first
        self._busy: set[int] = set()

    @property
    def name(self) -> str:
        return self._shm.name

    @classmethod
    def create(cls, name: str, geometry: Geometry, slots: int) -> Ring:
        """Create and initialise a ring segment (supervisor)."""
        if slots < 1:
            raise ValueError("a ring needs a slot at least")
        shm = Segment.create(name, ring_bytes(geometry, slots))
        CONTROL.pack_into(shm.buf, 0, MAGIC, slots, geometry.width, geometry.height, geometry.stride, 0, 0)
        return cls(shm)

    @classmethod
    def attach(cls, name: str) -> Ring:
        """Attach to an existing ring (stage processes)."""
        return cls(Segment.attach(name))

    def allocate(self) -> None:
        """Allocate the first ``upfront`` slots' pages now (supervisor, before the stages start): see
        ``Segment.allocate``; the writer allocates the others when it first needs them."""
        self._shm.allocate(CONTROL_BYTES, self._offset(self.upfront))

    # --- writer side (capture process) ---------------------------------------

    def fill(self) -> int:
        """Slots in use: handed to the writer and not yet released (either side may ask)."""
        return int(self._counters[1]) - int(self._counters[0])

    def acquire(self) -> int | None:
        """Take the lowest free slot, or None when the ring is full (writer only)."""
        written = int(self._counters[1])
        in_flight = written - int(self._counters[0])
        while len(self._flight) > in_flight:  # released since: the oldest ones
            self._busy.discard(self._flight.popleft())
        if in_flight >= self.allocated:
            return None
        slot = 0
        while slot in self._busy:
            slot += 1
        self._flight.append(slot)
        self._busy.add(slot)
        self._counters[1] = written + 1
        if slot == self.allocated - 1 and self.allocated < self.slots:
            self._grow()
        return slot

    def _grow(self) -> None:
        """Allocate one more slot, ahead of its need; a full /dev/shm ends the growth (frames are then dropped
        at a full ring, counted, instead of a SIGBUS when a page could not be had)."""
        try:
            self._shm.allocate(self._offset(self.allocated), self._offset(self.allocated + 1))
        except (OSError, SetupError):
            self.slots = self.allocated  # what this ring holds from now on
            return
        self.allocated += 1

    def cancel(self) -> None:
        """Give back the slot just acquired, unannounced and unused (writer only: no reader knows of it)."""
        self._busy.discard(self._flight.pop())
        self._counters[1] = int(self._counters[1]) - 1

    def write_header(self, slot: int, header: SlotHeader) -> None:
        HEADER.pack_into(
            self._buf,
            self._offset(slot),
            header.seq,
            header.capture_ns,
            header.width,
            header.height,
            header.stride,
            header.pixfmt,
            header.flags,
        )

    # --- both sides ------------------------------------------------------------

    def pixels(self, slot: int) -> np.ndarray:
        """A (height, width, 4) uint8 view of a slot's pixels; drop it before close()."""
        import numpy as np

        g = self.geometry
        # np.frombuffer holds an export of the segment's buffer, so close() refuses while a view
        # lives instead of unmapping memory under it (np.ndarray(buffer=...) would not).
        rows = np.frombuffer(self._buf, np.uint8, count=g.frame_bytes, offset=self.pixel_offset(slot))
        self._views = [ref for ref in self._views if ref() is not None]
        self._views.append(weakref.ref(rows))  # every view derived from it keeps it alive
        view = rows.reshape(g.height, g.stride)[:, : g.width * 4].reshape(g.height, g.width, 4)
        return view

    def raw(self, slot: int) -> np.ndarray:
        """A flat uint8 view of a slot's ``frame_bytes`` (planar pictures: see PIXFMT_I420); drop it before close()."""
        import numpy as np

        view = np.frombuffer(self._buf, np.uint8, count=self.geometry.frame_bytes, offset=self.pixel_offset(slot))
        self._views = [ref for ref in self._views if ref() is not None]
        self._views.append(weakref.ref(view))
        return view

    def address(self, slot: int) -> int:
        """The address of a slot's pixels in this process, for a writer in C (libswscale); valid until close()."""
        import ctypes

        anchor = ctypes.c_char.from_buffer(self._buf, self.pixel_offset(slot))  # an export, dropped at once
        try:
            return ctypes.addressof(anchor)
        finally:
            del anchor

    def planes(self, slot: int, width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The Y, U and V planes of an I420 picture ``width`` x ``height`` in a slot (PIXFMT_I420), as views."""
        raw = self.raw(slot)
        luma, chroma = width * height, width * height // 4
        return (raw[:luma].reshape(height, width), raw[luma : luma + chroma].reshape(height // 2, width // 2),
                raw[luma + chroma : luma + 2 * chroma].reshape(height // 2, width // 2))  # fmt: skip

    def pixel_offset(self, slot: int) -> int:
        """Byte offset of a slot's pixels within the segment (for zero-copy writers)."""
        return self._offset(slot) + HEADER_BYTES

    @property
    def path(self) -> str:
        """The segment's file (Linux: /dev/shm/<name>)."""
        return self._shm.path

    def header(self, slot: int) -> SlotHeader:
        return SlotHeader(*HEADER.unpack_from(self._buf, self._offset(slot)))

    # --- reader side (encoder process) -------------------------------------------

    @property
    def released(self) -> int:
        return int(self._counters[0])

    def release(self, count: int = 1) -> None:
        """Give ``count`` slots back to the writer, oldest first."""
        self._counters[0] += count

    # --- lifetime --------------------------------------------------------------------

    def close(self) -> None:
        """Unmap the segment (and unlink it if this process created it).

        Raises BufferError, leaving the ring usable, while a pixel view still lives.
        """
        alive = sum(ref() is not None for ref in self._views)
        if alive:
            raise BufferError(f"{alive} pixel view(s) of ring {self.name} still alive: drop them first")
        self._counters.release()
        self._shm.close()

    def _offset(self, slot: int) -> int:
        return CONTROL_BYTES + slot * self.geometry.slot_bytes
