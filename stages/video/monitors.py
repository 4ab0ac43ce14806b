"""The X screen's monitors, as mss numbers them (supervisor: planning; a few ms where mss takes 85).

``monitors()[0]`` is the whole screen, then one rectangle per RandR monitor in the server's order, as
``mss.MSS().monitors`` gives them on RandR 1.5 (every X server of the last decade). None when RandR is
older or libxcb-randr is missing: the caller asks mss then.
"""

from __future__ import annotations

import ctypes
from ctypes import POINTER, Structure, c_char_p, c_int, c_int16, c_uint8, c_uint16, c_uint32, c_void_p

from stages.video.xshm import _Cookie, _load, connect, load_library


class _Extension(Structure):
    _fields_ = [("name", c_char_p), ("global_id", c_int)]


class _ExtensionReply(Structure):
    _fields_ = [("response_type", c_uint8), ("pad", c_uint8), ("sequence", c_uint16), ("length", c_uint32),
                ("present", c_uint8), ("major_opcode", c_uint8), ("first_event", c_uint8),
                ("first_error", c_uint8)]  # fmt: skip


class _VersionReply(Structure):
    _fields_ = [("response_type", c_uint8), ("pad", c_uint8), ("sequence", c_uint16), ("length", c_uint32),
                ("major_version", c_uint32), ("minor_version", c_uint32)]  # fmt: skip


class _MonitorInfo(Structure):
    _fields_ = [("name", c_uint32), ("primary", c_uint8), ("automatic", c_uint8), ("n_output", c_uint16),
                ("x", c_int16), ("y", c_int16), ("width", c_uint16), ("height", c_uint16),
                ("width_mm", c_uint32), ("height_mm", c_uint32)]  # fmt: skip


class _MonitorIterator(Structure):
    _fields_ = [("data", POINTER(_MonitorInfo)), ("rem", c_int), ("index", c_int)]


def _randr() -> ctypes.CDLL | None:
    lib = load_library("xcb-randr")
    if lib is None:
        return None
    vp = c_void_p
    lib.xcb_randr_query_version.argtypes = [vp, c_uint32, c_uint32]
    lib.xcb_randr_query_version.restype = _Cookie
    lib.xcb_randr_query_version_reply.argtypes = [vp, _Cookie, vp]
    lib.xcb_randr_query_version_reply.restype = POINTER(_VersionReply)
    lib.xcb_randr_get_monitors.argtypes = [vp, c_uint32, c_uint8]
    lib.xcb_randr_get_monitors.restype = _Cookie
    lib.xcb_randr_get_monitors_reply.argtypes = [vp, _Cookie, vp]
    lib.xcb_randr_get_monitors_reply.restype = vp
    lib.xcb_randr_get_monitors_monitors_iterator.argtypes = [vp]
    lib.xcb_randr_get_monitors_monitors_iterator.restype = _MonitorIterator
    lib.xcb_randr_monitor_info_next.argtypes = [POINTER(_MonitorIterator)]
    return lib


def monitors(display: str | None = None) -> list[dict[str, int]] | None:
    """The whole screen and each monitor as mss's ``left, top, width, height`` dicts; None: ask mss (no
    RandR 1.5 here). XshmUnavailable when the display cannot be opened."""
    randr = _randr()
    if randr is None:
        return None
    xcb, _, libc = _load()
    xcb.xcb_get_extension_data.argtypes = [c_void_p, c_void_p]
    xcb.xcb_get_extension_data.restype = POINTER(_ExtensionReply)
    conn, screen = connect(xcb, display)
    try:
        out = [{"left": 0, "top": 0, "width": screen.width_in_pixels, "height": screen.height_in_pixels}]
        ext = xcb.xcb_get_extension_data(conn, ctypes.byref(_Extension.in_dll(randr, "xcb_randr_id")))
        if not ext or not ext.contents.present:
            return None
        version = randr.xcb_randr_query_version_reply(conn, randr.xcb_randr_query_version(conn, 1, 5), None)
        if not version:
            return None
        recent = (version.contents.major_version, version.contents.minor_version) >= (1, 5)
        libc.free(version)
        if not recent:
            return None
        reply = randr.xcb_randr_get_monitors_reply(conn, randr.xcb_randr_get_monitors(conn, screen.root, 1), None)
        if not reply:
            return None
        it = randr.xcb_randr_get_monitors_monitors_iterator(reply)
        while it.rem > 0:
            m = it.data.contents
            out.append({"left": m.x, "top": m.y, "width": m.width, "height": m.height})
            randr.xcb_randr_monitor_info_next(ctypes.byref(it))
        libc.free(reply)
        return out
    finally:
        xcb.xcb_disconnect(conn)
