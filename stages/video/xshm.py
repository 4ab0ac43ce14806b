"""Zero-copy X11 grabs: the X server writes each frame straight into a ring slot.

MIT-SHM 1.2 lets a client hand the server a file descriptor (``ShmAttachFd``).
We attach the ring's own shared-memory file, then each ``ShmGetImage`` names
the slot's offset: the server copies the screen into the slot and this
process touches no pixel. Used by the screen stage (process fp-screen) when
the display allows it; otherwise the stage falls back to mss and one copy,
and says so.

Minimal ctypes bindings of libxcb and libxcb-shm, for this one purpose.
"""

from __future__ import annotations

import ctypes
import os
from ctypes import POINTER, Structure, c_char_p, c_int, c_uint8, c_uint16, c_uint32, c_void_p
from typing import Any

from pipeline.errors import FramepipeError

ZPIXMAP = 2
ALL_PLANES = 0xFFFFFFFF
MAX_OFFSET = 2**32 - 1  # ShmGetImage offsets are 32-bit
GONE = "the X server closed the connection (the display is gone): the recording stops here and keeps what was captured"


class XshmUnavailable(FramepipeError, OSError):
    """This display cannot do fd-based MIT-SHM grabs (remote, old server, no libxcb-shm)."""


class _Cookie(Structure):
    _fields_ = [("sequence", ctypes.c_uint)]


class _Screen(Structure):
    _fields_ = [
        ("root", c_uint32),
        ("default_colormap", c_uint32),
        ("white_pixel", c_uint32),
        ("black_pixel", c_uint32),
        ("current_input_masks", c_uint32),
        ("width_in_pixels", c_uint16),
        ("height_in_pixels", c_uint16),
        ("width_in_millimeters", c_uint16),
        ("height_in_millimeters", c_uint16),
        ("min_installed_maps", c_uint16),
        ("max_installed_maps", c_uint16),
        ("root_visual", c_uint32),
        ("backing_stores", c_uint8),
        ("save_unders", c_uint8),
        ("root_depth", c_uint8),
        ("allowed_depths_len", c_uint8),
    ]


class _ScreenIterator(Structure):
    _fields_ = [("data", POINTER(_Screen)), ("rem", c_int), ("index", c_int)]


class _ShmVersionReply(Structure):
    _fields_ = [
        ("response_type", c_uint8),
        ("shared_pixmaps", c_uint8),
        ("sequence", c_uint16),
        ("length", c_uint32),
        ("major_version", c_uint16),
        ("minor_version", c_uint16),
    ]


class _ShmImageReply(Structure):
    _fields_ = [
        ("response_type", c_uint8),
        ("depth", c_uint8),
        ("sequence", c_uint16),
        ("length", c_uint32),
        ("visual", c_uint32),
        ("size", c_uint32),
    ]


SONAMES = {"c": "libc.so.6", "xcb": "libxcb.so.1", "xcb-shm": "libxcb-shm.so.0",
           "xcb-composite": "libxcb-composite.so.0", "xcb-render": "libxcb-render.so.0",
           "xcb-render-util": "libxcb-render-util.so.0", "xcb-randr": "libxcb-randr.so.0", "X11": "libX11.so.6"}


def load_library(name: str) -> ctypes.CDLL | None:
    """A system library by its usual soname, else as ctypes finds it (which runs ldconfig: 2 ms a name, on
    the start's path); None if it is not installed."""
    try:
        return ctypes.CDLL(SONAMES[name])
    except (KeyError, OSError):
        from ctypes.util import find_library

        found = find_library(name)
        return ctypes.CDLL(found) if found else None


def _load() -> tuple[ctypes.CDLL, ctypes.CDLL, ctypes.CDLL]:
    xcb, shm, libc = (load_library(n) for n in ("xcb", "xcb-shm", "c"))
    if xcb is None or shm is None or libc is None:
        raise XshmUnavailable("libxcb or libxcb-shm is not installed")
    xcb.xcb_connect.argtypes = [c_char_p, POINTER(c_int)]
    xcb.xcb_connect.restype = c_void_p
    xcb.xcb_connection_has_error.argtypes = [c_void_p]
    xcb.xcb_get_setup.argtypes = [c_void_p]
    xcb.xcb_get_setup.restype = c_void_p
    xcb.xcb_setup_roots_iterator.argtypes = [c_void_p]
    xcb.xcb_setup_roots_iterator.restype = _ScreenIterator
    xcb.xcb_screen_next.argtypes = [POINTER(_ScreenIterator)]
    xcb.xcb_generate_id.argtypes = [c_void_p]
    xcb.xcb_generate_id.restype = c_uint32
    xcb.xcb_request_check.argtypes = [c_void_p, _Cookie]
    xcb.xcb_request_check.restype = c_void_p
    xcb.xcb_disconnect.argtypes = [c_void_p]
    shm.xcb_shm_query_version.argtypes = [c_void_p]
    shm.xcb_shm_query_version.restype = _Cookie
    shm.xcb_shm_query_version_reply.argtypes = [c_void_p, _Cookie, POINTER(c_void_p)]
    shm.xcb_shm_query_version_reply.restype = POINTER(_ShmVersionReply)
    shm.xcb_shm_attach_fd_checked.argtypes = [c_void_p, c_uint32, c_int, c_uint8]
    shm.xcb_shm_attach_fd_checked.restype = _Cookie
    shm.xcb_shm_detach.argtypes = [c_void_p, c_uint32]
    shm.xcb_shm_detach.restype = _Cookie
    shm.xcb_shm_get_image.argtypes = [
        c_void_p, c_uint32, ctypes.c_int16, ctypes.c_int16, c_uint16, c_uint16, c_uint32, c_uint8, c_uint32, c_uint32,
    ]  # fmt: skip
    shm.xcb_shm_get_image.restype = _Cookie
    shm.xcb_shm_get_image_reply.argtypes = [c_void_p, _Cookie, POINTER(c_void_p)]
    shm.xcb_shm_get_image_reply.restype = POINTER(_ShmImageReply)
    libc.free.argtypes = [c_void_p]
    return xcb, shm, libc


def connect(xcb: ctypes.CDLL, display: str | None = None) -> tuple[Any, _Screen]:
    """An xcb connection (``_load``'s xcb) to ``display`` (else $DISPLAY) and its default screen; XshmUnavailable
    when there is none. The caller disconnects."""
    screen_num = c_int(0)
    conn = xcb.xcb_connect(display.encode() if display else None, ctypes.byref(screen_num))
    if not conn or xcb.xcb_connection_has_error(conn):
        if conn:
            xcb.xcb_disconnect(conn)
        raise XshmUnavailable("cannot connect to the X display")
    it = xcb.xcb_setup_roots_iterator(xcb.xcb_get_setup(conn))
    for _ in range(screen_num.value):
        xcb.xcb_screen_next(ctypes.byref(it))
    return conn, it.data.contents


class XshmGrabber:
    """Grabs a rectangle of the root window into offsets of one shared-memory file."""

    def __init__(self, shm_path: str, display: str | None = None) -> None:
        self._xcb, self._shm, self._libc = _load()
        self._conn, screen = connect(self._xcb, display)
        self.root, self.depth = screen.root, screen.root_depth
        self.width, self.height = screen.width_in_pixels, screen.height_in_pixels
        if self.depth not in (24, 32):
            self.close()
            raise XshmUnavailable(f"screen depth {self.depth} is not 24 or 32 bits")
        self._check_version()
        self._seg = self._xcb.xcb_generate_id(self._conn)
        fd = os.open(shm_path, os.O_RDWR)  # the server takes ownership of this fd
        err = self._xcb.xcb_request_check(self._conn, self._shm.xcb_shm_attach_fd_checked(self._conn, self._seg, fd, 0))
        if err:
            self._libc.free(err)
            self.close()
            raise XshmUnavailable("the X server refused the shared-memory segment (a remote display?)")

    def _check_version(self) -> None:
        err = c_void_p()
        reply = self._shm.xcb_shm_query_version_reply(self._conn, self._shm.xcb_shm_query_version(self._conn), err)
        if not reply:
            self.close()
            raise XshmUnavailable("the X server has no MIT-SHM extension")
        version = (reply.contents.major_version, reply.contents.minor_version)
        self._libc.free(reply)
        if version < (1, 2):
            self.close()
            raise XshmUnavailable(f"MIT-SHM {version[0]}.{version[1]} cannot take file descriptors (needs 1.2)")

    def get_image(self, drawable: int, x: int, y: int, width: int, height: int, offset: int) -> int:
        """Copy a rectangle of ``drawable`` (a window or pixmap) into the file at ``offset``; 0, or the X error
        code (8 BadMatch: outside the drawable; 9 BadDrawable: it was freed); -1: the connection is gone."""
        err = c_void_p()
        cookie = self._shm.xcb_shm_get_image(
            self._conn, drawable, x, y, width, height, ALL_PLANES, ZPIXMAP, self._seg, offset
        )
        reply = self._shm.xcb_shm_get_image_reply(self._conn, cookie, ctypes.byref(err))
        if reply:
            self._libc.free(reply)
            return 0
        code = ctypes.cast(err, POINTER(c_uint8))[1] if err else 0
        if err:
            self._libc.free(err)
        return -1 if self._xcb.xcb_connection_has_error(self._conn) else int(code) or 1

    def grab(self, left: int, top: int, width: int, height: int, offset: int) -> int:
        """Copy the root's rectangle into the file at ``offset`` (BGRX rows, no padding); return bytes."""
        code = self.get_image(self.root, left, top, width, height, offset)
        if code == -1:
            raise XshmUnavailable(GONE)
        if code:
            raise XshmUnavailable("the X server refused to copy the screen: it changed size and the recorded area "
                                  "is no longer on it; the recording stops here and keeps what was captured")
        return width * height * 4

    def close(self) -> None:
        if self._conn:
            if getattr(self, "_seg", None):
                self._shm.xcb_shm_detach(self._conn, self._seg)
            self._xcb.xcb_disconnect(self._conn)
            self._conn = None
