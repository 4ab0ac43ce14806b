"""Shared-memory segments: the files, their names, free space, sweeping leaks.

Every segment is a file in /dev/shm named ``fp_<pid>_<ring>``, with the
supervisor's pid, readable by this user only. The supervisor creates and
unlinks them; stages map them by name; a stage whose supervisor died unlinks
the ones it maps on its way out. No resource tracker is involved (its process
costs start-up time and it unlinks segments it did not create): at start the
supervisor removes segments whose supervisor no longer runs (a ``kill -9`` of
the whole group leaves them behind) and says so.
"""

from __future__ import annotations

import errno
import mmap
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from pipeline.errors import SetupError

PREFIX = "fp_"
SHM_DIR = Path("/dev/shm")
MARGIN = 16 * 1024 * 1024  # leave room for PulseAudio, X and others
PAGE = mmap.PAGESIZE


class Segment:
    """One mapped shared-memory file: ``create`` (supervisor) or ``attach`` (stages), then ``buf``."""

    def __init__(self, name: str, fd: int, size: int, owner: bool) -> None:
        self.name, self.size, self.owner = name, size, owner
        try:
            self._map = mmap.mmap(fd, size)
        finally:
            os.close(fd)  # the mapping keeps the memory; anyone else opens the file by name
        self.buf = memoryview(self._map)

    @classmethod
    def create(cls, name: str, size: int) -> Segment:
        fd = os.open(SHM_DIR / name, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, size)
        except OSError:
            os.close(fd)
            (SHM_DIR / name).unlink(missing_ok=True)
            raise
        return cls(name, fd, size, owner=True)

    @classmethod
    def attach(cls, name: str) -> Segment:
        fd = os.open(SHM_DIR / name, os.O_RDWR)
        return cls(name, fd, os.fstat(fd).st_size, owner=False)

    @property
    def path(self) -> str:
        return str(SHM_DIR / self.name)

    def allocate(self, start: int = 0, end: int | None = None) -> None:
        """Allocate the file's pages from ``start`` to ``end`` (the end of the file) now: a full /dev/shm
        fails here, in one line, not with SIGBUS in whichever process (the X server too) first writes a
        page. The pages are not mapped here: each process maps what it touches, so this costs a third of
        faulting them in."""
        start -= start % PAGE
        end = self.size if end is None else min(self.size, end)
        fd = os.open(self.path, os.O_RDWR)
        try:
            os.posix_fallocate(fd, start, end - start)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            raise SetupError(
                f"{SHM_DIR} filled up while the rings were allocated ({self.size >> 20} MiB for {self.name}): "
                "lower ring_seconds, record a smaller region, or enlarge /dev/shm"
            ) from None
        finally:
            os.close(fd)

    def close(self) -> None:
        """Unmap (BufferError while views of ``buf`` live), and unlink if this process created it."""
        self.buf.release()
        self._map.close()
        if self.owner:
            (SHM_DIR / self.name).unlink(missing_ok=True)


def segment_name(ring: str, pid: int | None = None) -> str:
    """The shared-memory name of ``ring`` for the supervisor ``pid``."""
    return f"{PREFIX}{pid or os.getpid()}_{ring}"


def sweep_stale() -> list[str]:
    """Unlink segments left by supervisors that are gone; return their names."""
    if not SHM_DIR.is_dir():
        return []
    swept = []
    for path in SHM_DIR.glob(f"{PREFIX}*"):
        pid_text = path.name[len(PREFIX) :].split("_", 1)[0]
        if pid_text.isdigit() and pid_alive(int(pid_text)) and int(pid_text) != os.getpid():
            continue
        try:
            path.unlink()
            swept.append(path.name)
        except OSError:
            pass
    return swept


def unlink_segments(names: Iterable[str]) -> None:
    """Remove segments by name (a stage whose supervisor died, on its way out); gone ones are fine."""
    for name in names:
        (SHM_DIR / name).unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (ours or another user's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def check_free(needed: int) -> None:
    """Fail clearly if /dev/shm cannot hold ``needed`` bytes (else SIGBUS on first write)."""
    if not SHM_DIR.is_dir():
        return
    free = shutil.disk_usage(SHM_DIR).free
    if free < needed + MARGIN:
        raise SetupError(
            f"/dev/shm has {free / 2**20:.0f} MiB free but the rings need {needed / 2**20:.0f} MiB: "
            "lower ring_seconds, record a smaller region, or enlarge /dev/shm "
            "(docker: --shm-size=1g)"
        )
