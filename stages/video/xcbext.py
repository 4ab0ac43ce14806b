"""What window capture and following a resize need from X beyond MIT-SHM (process fp-screen): Composite (a
window's own pixmap), RENDER (scaling in the server), geometry, attributes and events.

Minimal ctypes bindings of libxcb-composite, libxcb-render and libxcb-render-util, on the connection an
``XshmGrabber`` opened (so the pixmap it names is grabbed on the same connection, in order). No numpy.
"""

from __future__ import annotations

import ctypes
import struct
from ctypes import POINTER, Structure, c_char_p, c_int16, c_int32, c_uint8, c_uint16, c_uint32, c_void_p
from dataclasses import dataclass

from stages.video.xshm import XshmGrabber, XshmUnavailable, _Cookie, load_library

CW_EVENT_MASK = 1 << 11
STRUCTURE_NOTIFY = 1 << 17
REDIRECT_AUTOMATIC = 0
RENDER_OP_SRC = 1
RENDER_CP_SUBWINDOW_MODE = 1 << 8
INCLUDE_INFERIORS = 1
PICT_STANDARD_ARGB_32, PICT_STANDARD_RGB_24 = 0, 1
# event types (xcb response_type & 0x7f)
X_ERROR, DESTROY_NOTIFY, UNMAP_NOTIFY, MAP_NOTIFY, CONFIGURE_NOTIFY = 0, 17, 18, 19, 22
BAD_WINDOW, BAD_MATCH, BAD_DRAWABLE = 3, 8, 9


class _Transform(Structure):
    _fields_ = [(f"m{i}", c_int32) for i in range(9)]


class _Color(Structure):
    _fields_ = [("red", c_uint16), ("green", c_uint16), ("blue", c_uint16), ("alpha", c_uint16)]


class _Rect(Structure):
    _fields_ = [("x", c_int16), ("y", c_int16), ("width", c_uint16), ("height", c_uint16)]


class _PictFormInfo(Structure):
    _fields_ = [("id", c_uint32), ("type", c_uint8), ("depth", c_uint8)]  # the leading fields


@dataclass(frozen=True)
class Geometry:
    """A window's or pixmap's geometry (x, y relative to its parent)."""

    x: int
    y: int
    width: int
    height: int
    border: int
    depth: int


@dataclass(frozen=True)
class Event:
    """One event or error of interest: kind, the window it is about, and a ConfigureNotify's new size."""

    kind: int
    window: int
    width: int = 0
    height: int = 0
    error: int = 0


def _fixed(value: float) -> int:
    return round(value * 65536)


class Xext:
    """Composite, RENDER, geometry and events on an XshmGrabber's connection."""

    def __init__(self, xshm: XshmGrabber) -> None:
        comp, render, util = (load_library(n) for n in ("xcb-composite", "xcb-render", "xcb-render-util"))
        if comp is None or render is None or util is None:
            raise XshmUnavailable("libxcb-composite, libxcb-render or libxcb-render-util is not installed")
        self.xshm, self.conn = xshm, xshm._conn
        self.xcb, self.libc = xshm._xcb, xshm._libc
        self.comp, self.render, self.util = comp, render, util
        self._type()
        self.composite = self._query(self.comp, "xcb_composite", (0, 4), (0, 2))  # 0.2: NameWindowPixmap
        self.has_render = self._query(self.render, "xcb_render", (0, 11), (0, 6))  # 0.6: transforms, filters
        self._formats: int | None = None

    def _type(self) -> None:
        x, c, r, u = self.xcb, self.comp, self.render, self.util
        vp = c_void_p
        sig = {
            (x, "xcb_get_geometry"): ([vp, c_uint32], _Cookie),
            (x, "xcb_get_geometry_reply"): ([vp, _Cookie, POINTER(vp)], vp),
            (x, "xcb_get_window_attributes"): ([vp, c_uint32], _Cookie),
            (x, "xcb_get_window_attributes_reply"): ([vp, _Cookie, POINTER(vp)], vp),
            (x, "xcb_change_window_attributes_checked"): ([vp, c_uint32, c_uint32, POINTER(c_uint32)], _Cookie),
            (x, "xcb_create_pixmap"): ([vp, c_uint8, c_uint32, c_uint32, c_uint16, c_uint16], _Cookie),
            (x, "xcb_free_pixmap"): ([vp, c_uint32], _Cookie),
            (x, "xcb_poll_for_event"): ([vp], vp),
            (x, "xcb_flush"): ([vp], ctypes.c_int),
            (c, "xcb_composite_query_version"): ([vp, c_uint32, c_uint32], _Cookie),
            (c, "xcb_composite_query_version_reply"): ([vp, _Cookie, POINTER(vp)], vp),
            (c, "xcb_composite_redirect_window_checked"): ([vp, c_uint32, c_uint8], _Cookie),
            (c, "xcb_composite_unredirect_window"): ([vp, c_uint32, c_uint8], _Cookie),
            (c, "xcb_composite_name_window_pixmap_checked"): ([vp, c_uint32, c_uint32], _Cookie),
            (r, "xcb_render_query_version"): ([vp, c_uint32, c_uint32], _Cookie),
            (r, "xcb_render_query_version_reply"): ([vp, _Cookie, POINTER(vp)], vp),
            (r, "xcb_render_query_pict_formats"): ([vp], _Cookie),
            (r, "xcb_render_query_pict_formats_reply"): ([vp, _Cookie, POINTER(vp)], vp),
            (r, "xcb_render_create_picture_checked"): ([vp, c_uint32, c_uint32, c_uint32, c_uint32, POINTER(c_uint32)],
                                                       _Cookie),
            (r, "xcb_render_free_picture"): ([vp, c_uint32], _Cookie),
            (r, "xcb_render_set_picture_transform"): ([vp, c_uint32, _Transform], _Cookie),
            (r, "xcb_render_set_picture_filter"): ([vp, c_uint32, c_uint16, c_char_p, c_uint32, vp], _Cookie),
            (r, "xcb_render_composite"): ([vp, c_uint8, c_uint32, c_uint32, c_uint32, c_int16, c_int16, c_int16,
                                           c_int16, c_int16, c_int16, c_uint16, c_uint16], _Cookie),
            (r, "xcb_render_fill_rectangles"): ([vp, c_uint8, c_uint32, _Color, c_uint32, POINTER(_Rect)], _Cookie),
            (u, "xcb_render_util_find_standard_format"): ([vp, ctypes.c_int], POINTER(_PictFormInfo)),
        }  # fmt: skip
        for (lib, name), (args, res) in sig.items():
            func = getattr(lib, name)
            func.argtypes, func.restype = args, res

    def _query(self, lib: ctypes.CDLL, prefix: str, version: tuple[int, int], need: tuple[int, int]) -> bool:
        err = c_void_p()
        cookie = getattr(lib, f"{prefix}_query_version")(self.conn, *version)
        reply = getattr(lib, f"{prefix}_query_version_reply")(self.conn, cookie, ctypes.byref(err))
        if err:
            self.libc.free(err)
        if not reply:
            return False
        major, minor = struct.unpack_from("=II", ctypes.string_at(reply, 16), 8)
        self.libc.free(reply)
        return (major, minor) >= need

    # --- requests with replies -----------------------------------------------------------------

    def _reply(self, func: str, lib: ctypes.CDLL, *args: int) -> tuple[bytes | None, int]:
        """The reply's first 44 bytes, or None and the X error code."""
        err = c_void_p()
        reply = getattr(lib, f"{func}_reply")(self.conn, getattr(lib, func)(self.conn, *args), ctypes.byref(err))
        if not reply:
            code = ctypes.string_at(err, 2)[1] if err else 0
            if err:
                self.libc.free(err)
            return None, code
        data = ctypes.string_at(reply, 44)
        self.libc.free(reply)
        return data, 0

    def geometry(self, drawable: int) -> Geometry | None:
        """The drawable's geometry, or None when it does not exist."""
        data, _ = self._reply("xcb_get_geometry", self.xcb, drawable)
        if data is None:
            return None
        depth = data[1]
        x, y, w, h, bw = struct.unpack_from("=hhHHH", data, 12)
        return Geometry(x, y, w, h, bw, depth)

    def viewable(self, window: int) -> bool | None:
        """Whether the window is mapped and shown (its ancestors too); None when it does not exist."""
        data, _ = self._reply("xcb_get_window_attributes", self.xcb, window)
        return None if data is None else data[26] == 2

    def checked(self, cookie: _Cookie) -> int:
        """0, or the X error code of a checked request."""
        err = self.xcb.xcb_request_check(self.conn, cookie)
        if not err:
            return 0
        code = int(ctypes.string_at(err, 2)[1])
        self.libc.free(err)
        return code

    # --- Composite -------------------------------------------------------------------------------

    def select_structure(self, window: int) -> int:
        """Ask for the window's ConfigureNotify, MapNotify, UnmapNotify and DestroyNotify; 0 or the error."""
        mask = (c_uint32 * 1)(STRUCTURE_NOTIFY)
        return self.checked(self.xcb.xcb_change_window_attributes_checked(self.conn, window, CW_EVENT_MASK, mask))

    def redirect(self, window: int) -> int:
        return self.checked(self.comp.xcb_composite_redirect_window_checked(self.conn, window, REDIRECT_AUTOMATIC))

    def unredirect(self, window: int) -> None:
        self.comp.xcb_composite_unredirect_window(self.conn, window, REDIRECT_AUTOMATIC)
        self.xcb.xcb_flush(self.conn)

    def name_pixmap(self, window: int) -> tuple[int, int]:
        """A new name for the window's current pixmap: (pixmap, 0), or (0, the X error code)."""
        pixmap = self.xcb.xcb_generate_id(self.conn)
        code = self.checked(self.comp.xcb_composite_name_window_pixmap_checked(self.conn, window, pixmap))
        return (0, code) if code else (pixmap, 0)

    def free_pixmap(self, pixmap: int) -> None:
        self.xcb.xcb_free_pixmap(self.conn, pixmap)

    # --- RENDER ----------------------------------------------------------------------------------

    def standard_format(self, depth: int) -> int:
        if self._formats is None:
            err = c_void_p()
            cookie = self.render.xcb_render_query_pict_formats(self.conn)
            reply = self.render.xcb_render_query_pict_formats_reply(self.conn, cookie, ctypes.byref(err))
            if not reply:
                raise XshmUnavailable("the X server did not list its RENDER formats")
            self._formats = reply  # kept for the connection's life (a few hundred bytes)
        info = self.util.xcb_render_util_find_standard_format(
            self._formats, PICT_STANDARD_ARGB_32 if depth == 32 else PICT_STANDARD_RGB_24
        )
        if not info:
            raise XshmUnavailable(f"the X server has no RENDER format for depth {depth}")
        return int(info.contents.id)

    def picture(self, drawable: int, depth: int, include_inferiors: bool = False) -> int:
        pid = self.xcb.xcb_generate_id(self.conn)
        mask, values = (RENDER_CP_SUBWINDOW_MODE, (c_uint32 * 1)(INCLUDE_INFERIORS)) if include_inferiors else (0, None)
        code = self.checked(self.render.xcb_render_create_picture_checked(
            self.conn, pid, drawable, self.standard_format(depth), mask, values))  # fmt: skip
        if code:
            raise XshmUnavailable(f"RENDER refused a picture of the drawable (X error {code})")
        return int(pid)

    def scale_picture(self, picture: int, inverse: float, dx: float, dy: float) -> None:
        """Sample ``picture`` at (inverse * x + dx, inverse * y + dy), bilinear."""
        t = _Transform(_fixed(inverse), 0, _fixed(dx), 0, _fixed(inverse), _fixed(dy), 0, 0, _fixed(1))
        self.render.xcb_render_set_picture_transform(self.conn, picture, t)
        self.render.xcb_render_set_picture_filter(self.conn, picture, 8, b"bilinear", 0, None)

    def composite_src(self, src: int, dst: int, x: int, y: int, width: int, height: int) -> None:
        self.render.xcb_render_composite(self.conn, RENDER_OP_SRC, src, 0, dst, 0, 0, 0, 0, x, y, width, height)

    def fill_black(self, picture: int, width: int, height: int) -> None:
        rect = (_Rect * 1)(_Rect(0, 0, width, height))
        self.render.xcb_render_fill_rectangles(self.conn, RENDER_OP_SRC, picture, _Color(0, 0, 0, 0xFFFF), 1, rect)

    def free_picture(self, picture: int) -> None:
        self.render.xcb_render_free_picture(self.conn, picture)

    def create_pixmap(self, depth: int, drawable: int, width: int, height: int) -> int:
        pixmap = self.xcb.xcb_generate_id(self.conn)
        self.xcb.xcb_create_pixmap(self.conn, depth, pixmap, drawable, width, height)
        return int(pixmap)

    # --- events ----------------------------------------------------------------------------------

    def events(self) -> list[Event]:
        """Every event and error waiting (none: one cheap call, no round trip)."""
        out: list[Event] = []
        while True:
            ptr = self.xcb.xcb_poll_for_event(self.conn)
            if not ptr:
                return out
            data = ctypes.string_at(ptr, 32)
            self.libc.free(ptr)
            kind = data[0] & 0x7F
            if kind == CONFIGURE_NOTIFY:
                window, = struct.unpack_from("=I", data, 8)
                w, h = struct.unpack_from("=HH", data, 20)
                out.append(Event(kind, window, w, h))
            elif kind in (DESTROY_NOTIFY, UNMAP_NOTIFY, MAP_NOTIFY):
                out.append(Event(kind, struct.unpack_from("=I", data, 8)[0]))
            elif kind == X_ERROR:
                out.append(Event(kind, struct.unpack_from("=I", data, 4)[0], error=data[1]))


class Scaler:
    """A source drawable scaled in the X server into a fixed-size pixmap, aspect kept, centred, black bars;
    the pixmap is what ShmGetImage then copies into the slot (still no pixel touched in Python)."""

    def __init__(self, ext: Xext, source: int, depth: int, src_rect: tuple[int, int, int, int],
                 out_size: tuple[int, int], include_inferiors: bool = False) -> None:  # fmt: skip
        self.ext = ext
        sx, sy, sw, sh = src_rect
        ow, oh = out_size
        scale = min(ow / sw, oh / sh)
        self.w, self.h = max(1, min(ow, round(sw * scale))), max(1, min(oh, round(sh * scale)))
        self.x, self.y = (ow - self.w) // 2, (oh - self.h) // 2
        self.pixmap = ext.create_pixmap(24, ext.xshm.root, ow, oh)
        self.dst = ext.picture(self.pixmap, 24)
        self.src = ext.picture(source, depth, include_inferiors)
        ext.scale_picture(self.src, 1 / scale, sx, sy)
        ext.fill_black(self.dst, ow, oh)  # the bars; composites only ever touch the content rectangle

    def composite(self) -> None:
        self.ext.composite_src(self.src, self.dst, self.x, self.y, self.w, self.h)

    def close(self) -> None:
        self.ext.free_picture(self.src)
        self.ext.free_picture(self.dst)
        self.ext.free_pixmap(self.pixmap)
