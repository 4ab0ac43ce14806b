"""FFmpeg's network output through ctypes (fp-encode, a stream's thread): a ``Link`` to an rtmp/rtmps server.

Not ``av.open(url)``: PyAV 18 (and PyAV's main branch) opens network outputs with ``avio_open`` holding the
GIL, so the TCP connect, the RTMP handshake and the publish stopped every thread of fp-encode (measured:
0.18 s a connect to nginx on loopback, for ever against a frozen server), and it passes no options, so no
timeout reaches the socket. Here libavformat's public AVIO calls (``avio_open2``, ``avio_write``,
``avio_closep``) are called through ctypes, which releases the GIL in every call; ``rw_timeout`` bounds each
wait (a write to a frozen server fails that long after; measured) and FFmpeg's interrupt callback ends any
call at once. That callback is libc's ``atoi`` over a one-byte flag ("0" or "1"), so FFmpeg asks it (about
nine times a packet, measured) without taking the GIL. The library is the very copy PyAV loaded. The
AVIOContext's leading fields are read (its public ``error``); their layout is checked at every connect,
and a mismatch ends the stream with one line rather than guessing.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import threading
from pathlib import Path
from typing import Any

import av

_AVIO_FLAG_WRITE = 2
DEFAULT_TIMEOUT_S = 5.0  # a network wait without progress this long fails (rw_timeout)


_INTERRUPT = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)


class _InterruptCB(ctypes.Structure):
    _fields_ = [("callback", _INTERRUPT), ("opaque", ctypes.c_void_p)]


class _AVIOContext(ctypes.Structure):
    """The leading fields of libavformat's public AVIOContext (avio.h), up to ``error`` and ``write_flag``."""

    _fields_ = [
        ("av_class", ctypes.c_void_p), ("buffer", ctypes.c_void_p), ("buffer_size", ctypes.c_int),
        ("buf_ptr", ctypes.c_void_p), ("buf_end", ctypes.c_void_p), ("opaque", ctypes.c_void_p),
        ("read_packet", ctypes.c_void_p), ("write_packet", ctypes.c_void_p), ("seek", ctypes.c_void_p),
        ("pos", ctypes.c_int64), ("eof_reached", ctypes.c_int), ("error", ctypes.c_int), ("write_flag", ctypes.c_int),
    ]  # fmt: skip


def _library(name: str) -> str:
    """The lib``name`` PyAV loaded (the same copy, so one FFmpeg in the process): from /proc/self/maps, the
    wheel's folders, or the system's."""
    with contextlib.suppress(OSError), open("/proc/self/maps") as maps:
        for line in maps:
            path = line.split(maxsplit=5)[-1].strip()
            if os.path.basename(path).startswith(f"lib{name}") and ".so" in path:
                return path
    root = Path(av.__file__).resolve().parent
    for pattern in (f"../av.libs/lib{name}*", f".dylibs/lib{name}*", f"../av.libs/{name}*"):
        hits = sorted(root.glob(pattern))
        if hits:
            return str(hits[0])
    found = ctypes.util.find_library(name)
    if not found:
        raise OSError(f"cannot find lib{name}, the FFmpeg library PyAV uses")
    return found


class _FFmpeg:
    """The few libavformat and libavutil calls a Link makes (ctypes releases the GIL around each)."""

    def __init__(self) -> None:
        fmt, util = ctypes.CDLL(_library("avformat")), ctypes.CDLL(_library("avutil"))
        ctx, ptr = ctypes.POINTER(_AVIOContext), ctypes.POINTER
        self.open2 = fmt.avio_open2
        self.open2.argtypes = [ptr(ctx), ctypes.c_char_p, ctypes.c_int, ptr(_InterruptCB), ptr(ctypes.c_void_p)]
        self.open2.restype = ctypes.c_int
        self.write = fmt.avio_write
        self.write.argtypes, self.write.restype = [ctx, ctypes.c_char_p, ctypes.c_int], None
        self.flush = fmt.avio_flush
        self.flush.argtypes, self.flush.restype = [ctx], None
        self.closep = fmt.avio_closep
        self.closep.argtypes, self.closep.restype = [ptr(ctx)], ctypes.c_int
        self.dict_set = util.av_dict_set
        self.dict_set.argtypes = [ptr(ctypes.c_void_p), ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int]
        self.dict_free = util.av_dict_free
        self.dict_free.argtypes, self.dict_free.restype = [ptr(ctypes.c_void_p)], None
        self._strerror = util.av_strerror
        self._strerror.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t]
        libc = ctypes.cdll.msvcrt if os.name == "nt" else ctypes.CDLL(None)
        self.atoi = ctypes.cast(libc.atoi, _INTERRUPT)  # int (*)(void *): the flag's value, no GIL
        fmt.avformat_network_init()

    def error(self, code: int) -> OSError:
        """An FFmpeg error code as an OSError (errno set when it is one)."""
        text = ctypes.create_string_buffer(256)
        self._strerror(code, text, len(text))
        return OSError(-code if -code < 4096 else 0, text.value.decode(errors="replace") or f"error {code}")


_ffmpeg: _FFmpeg | None = None
_ffmpeg_lock = threading.Lock()


def ffmpeg() -> _FFmpeg:
    global _ffmpeg
    with _ffmpeg_lock:
        if _ffmpeg is None:
            _ffmpeg = _FFmpeg()
        return _ffmpeg


class Link:
    """One connection to the server through FFmpeg's rtmp(s) protocol, which takes an FLV byte stream
    (``write`` is what PyAV's FLV muxer writes into). Connects on creation; raises OSError when it cannot."""

    def __init__(self, url: str, stop: Any, timeout_s: float | None = None) -> None:
        self.lib = ffmpeg()
        timeout_s = DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s
        self.sent = 0  # FLV bytes handed to the connection
        self._stop = stop  # kept: FFmpeg reads it (a Flag's buffer)
        self._callback = _InterruptCB(self.lib.atoi, ctypes.cast(stop, ctypes.c_void_p))
        self.ctx = ctypes.POINTER(_AVIOContext)()
        options = ctypes.c_void_p()
        self.lib.dict_set(ctypes.byref(options), b"rw_timeout", str(round(timeout_s * 1e6)).encode(), 0)
        try:
            code = self.lib.open2(ctypes.byref(self.ctx), url.encode(), _AVIO_FLAG_WRITE,
                                  ctypes.byref(self._callback), ctypes.byref(options))  # fmt: skip
        finally:
            self.lib.dict_free(ctypes.byref(options))
        if code < 0:
            raise self.lib.error(code)
        head = self.ctx.contents
        if head.write_flag != 1 or head.buffer_size <= 0 or head.buf_ptr != head.buffer:
            self.hang_up()
            raise RuntimeError("this FFmpeg's AVIOContext is not laid out as avio.h of FFmpeg 8 has it; cannot stream")

    def write(self, data: bytes) -> int:
        if not self.ctx:
            raise OSError(errno.EPIPE, "the connection is closed")
        self.lib.write(self.ctx, data, len(data))
        self.lib.flush(self.ctx)
        code = self.ctx.contents.error
        if code < 0:
            raise self.lib.error(code)
        self.sent += len(data)
        return len(data)

    def hang_up(self) -> None:
        """Close the connection (after the FLV container that writes into it); again: nothing."""
        if self.ctx:
            self.lib.closep(ctypes.byref(self.ctx))
