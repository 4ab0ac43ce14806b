"""Files we write are created exclusively and never through a symlink.

The supervisor reserves each output file before any stage starts (``reserve``: ``O_CREAT | O_EXCL |
O_NOFOLLOW``), so two recordings to one new name cannot both succeed and a symlink at the name is
never followed; with ``--overwrite`` the old name is removed first (a symlink itself, not its
target). fp-encode then opens the reserved file (``open_reserved``) and checks it is the very file
reserved. PyAV writes to the open file object, so a name FFmpeg would read as a protocol
(``rec:1.mkv``) is a plain file. Saved replays are made the same way (``create_new``). Nothing here
imports PyAV or numpy.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

from pipeline.errors import SetupError

NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _why(path: str, exc: OSError) -> SetupError:
    if exc.errno == errno.EEXIST:
        return SetupError(f"{path} exists: pass --overwrite to replace it, or choose another name")
    if exc.errno == errno.ENAMETOOLONG:
        return SetupError(f"the output name {path[:40]}... is too long for the file system: choose a shorter one")
    if exc.errno == errno.ELOOP:
        return SetupError(f"{path} is a symlink: framepipe never writes through one; remove it or choose another name")
    return SetupError(f"cannot write {path} ({exc.strerror}): choose an output path you may write to")


def reserve(path: str, overwrite: bool) -> tuple[int, int]:
    """Create ``path`` empty and ours; (device, inode) to recognise it. SetupError in one line if it cannot."""
    if overwrite:
        with contextlib.suppress(FileNotFoundError):
            info = os.lstat(path)
            if stat.S_ISDIR(info.st_mode):
                raise SetupError(f"{path} is a folder: give a file name such as {Path(path) / 'recording.mkv'}")
            os.unlink(path)  # the name only: a symlink's target is left alone
    try:
        fd = os.open(path, NEW, 0o644)
    except OSError as exc:
        raise _why(path, exc) from None
    try:
        info = os.fstat(fd)
    finally:
        os.close(fd)
    return info.st_dev, info.st_ino


def release(path: str, ident: tuple[int, int]) -> None:
    """Remove a reserved file nothing was written to (the recording did not start)."""
    with contextlib.suppress(OSError):
        info = os.lstat(path)
        if (info.st_dev, info.st_ino) == tuple(ident) and info.st_size == 0:
            os.unlink(path)


def open_reserved(path: str, ident: tuple[int, int]) -> BinaryIO:
    """The file ``reserve`` made, open for writing (fp-encode); OSError if the name now holds another file."""
    fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    info = os.fstat(fd)
    if (info.st_dev, info.st_ino) != tuple(ident) or not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise FileExistsError(errno.EEXIST, f"{path} was replaced after it was reserved: not writing to it")
    return os.fdopen(fd, "wb")


def create_new(path: str) -> BinaryIO:
    """A new file (never an existing one, never through a symlink), open for writing."""
    return os.fdopen(os.open(path, NEW, 0o644), "wb")
