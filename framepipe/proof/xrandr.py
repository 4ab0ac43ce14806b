"""Change a virtual screen's size the way xrandr does, in one X client (tests of following a screen resize).

The ``xrandr`` program cannot do it on Xvfb: a mode it makes with ``--newmode`` is freed when it exits, before
another run can add it to the output, and Xvfb has no mode but its start size. Here one connection makes
the mode (RandR CreateMode), adds it to the output, sets the CRTC to it and sets the screen size, in the
order that keeps the CRTC inside the screen; the CRTC holds the mode afterwards. Growing back beyond the
start size is not possible on Xvfb (its framebuffer is fixed); back to it is.

Run as ``python -m framepipe.proof.xrandr --display :91 1280x720``.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import sys
import time
from collections.abc import Sequence
from ctypes import POINTER, Structure, c_char_p, c_int, c_int16, c_uint16, c_uint32, c_void_p

from pipeline.errors import FramepipeError


class XrandrError(FramepipeError, RuntimeError):
    """The screen size could not be changed; the message says why."""


class _Cookie(Structure):
    _fields_ = [("sequence", ctypes.c_uint)]


class _ModeInfo(Structure):
    _fields_ = [("id", c_uint32), ("width", c_uint16), ("height", c_uint16), ("dot_clock", c_uint32),
                ("hsync_start", c_uint16), ("hsync_end", c_uint16), ("htotal", c_uint16), ("hskew", c_uint16),
                ("vsync_start", c_uint16), ("vsync_end", c_uint16), ("vtotal", c_uint16), ("name_len", c_uint16),
                ("mode_flags", c_uint32)]  # fmt: skip


class _Screen(Structure):
    _fields_ = [("root", c_uint32)]  # the leading field


class _ScreenIterator(Structure):
    _fields_ = [("data", POINTER(_Screen)), ("rem", c_int), ("index", c_int)]


def _libs() -> tuple[ctypes.CDLL, ctypes.CDLL]:
    names = [ctypes.util.find_library(n) for n in ("xcb", "xcb-randr")]
    if not all(names):
        raise XrandrError("libxcb or libxcb-randr is not installed")
    xcb, rr = (ctypes.CDLL(n) for n in names)  # type: ignore[arg-type]
    vp = c_void_p
    sig = {
        (xcb, "xcb_connect"): ([c_char_p, vp], vp), (xcb, "xcb_get_setup"): ([vp], vp),
        (xcb, "xcb_setup_roots_iterator"): ([vp], _ScreenIterator), (xcb, "xcb_disconnect"): ([vp], None),
        (xcb, "xcb_request_check"): ([vp, _Cookie], vp), (xcb, "xcb_connection_has_error"): ([vp], c_int),
        (rr, "xcb_randr_query_version"): ([vp, c_uint32, c_uint32], _Cookie),
        (rr, "xcb_randr_query_version_reply"): ([vp, _Cookie, vp], vp),
        (rr, "xcb_randr_get_screen_resources_current"): ([vp, c_uint32], _Cookie),
        (rr, "xcb_randr_get_screen_resources_current_reply"): ([vp, _Cookie, vp], vp),
        (rr, "xcb_randr_get_screen_resources_current_crtcs"): ([vp], POINTER(c_uint32)),
        (rr, "xcb_randr_get_screen_resources_current_outputs"): ([vp], POINTER(c_uint32)),
        (rr, "xcb_randr_create_mode"): ([vp, c_uint32, _ModeInfo, c_uint32, c_char_p], _Cookie),
        (rr, "xcb_randr_create_mode_reply"): ([vp, _Cookie, vp], vp),
        (rr, "xcb_randr_add_output_mode_checked"): ([vp, c_uint32, c_uint32], _Cookie),
        (rr, "xcb_randr_set_crtc_config"): ([vp, c_uint32, c_uint32, c_uint32, c_int16, c_int16, c_uint32, c_uint16,
                                             c_uint32, POINTER(c_uint32)], _Cookie),
        (rr, "xcb_randr_set_crtc_config_reply"): ([vp, _Cookie, vp], vp),
        (rr, "xcb_randr_set_screen_size_checked"): ([vp, c_uint32, c_uint16, c_uint16, c_uint32, c_uint32], _Cookie),
    }  # fmt: skip
    for (lib, name), (args, res) in sig.items():
        func = getattr(lib, name)
        func.argtypes, func.restype = args, res
    return xcb, rr


def set_screen_size(display: str, width: int, height: int) -> None:
    """Make the screen ``width`` x ``height`` (its one CRTC showing a new mode of that size)."""
    xcb, rr = _libs()
    conn = xcb.xcb_connect(display.encode(), None)
    if not conn or xcb.xcb_connection_has_error(conn):
        raise XrandrError(f"cannot connect to {display}")
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.free.argtypes = [c_void_p]
    try:
        root = xcb.xcb_setup_roots_iterator(xcb.xcb_get_setup(conn)).data.contents.root
        reply = rr.xcb_randr_query_version_reply(conn, rr.xcb_randr_query_version(conn, 1, 3), None)
        if not reply:
            raise XrandrError(f"{display} has no RandR extension")
        libc.free(reply)
        res = rr.xcb_randr_get_screen_resources_current_reply(
            conn, rr.xcb_randr_get_screen_resources_current(conn, root), None)  # fmt: skip
        if not res:
            raise XrandrError("RandR did not list the screen's resources")
        crtc = rr.xcb_randr_get_screen_resources_current_crtcs(res)[0]
        output = rr.xcb_randr_get_screen_resources_current_outputs(res)[0]
        config_ts = int.from_bytes(ctypes.string_at(res, 16)[12:16], "little")
        libc.free(res)
        name = f"fp{width}x{height}-{time.monotonic_ns()}".encode()  # a name no earlier mode has
        info = _ModeInfo(0, width, height, 60 * (width + 10) * (height + 10), width + 2, width + 4, width + 10, 0,
                         height + 2, height + 4, height + 10, len(name), 0)  # fmt: skip
        made = rr.xcb_randr_create_mode_reply(conn, rr.xcb_randr_create_mode(conn, root, info, len(name), name), None)
        if not made:
            raise XrandrError(f"RandR refused a {width}x{height} mode")
        mode = int.from_bytes(ctypes.string_at(made, 12)[8:12], "little")
        libc.free(made)
        if xcb.xcb_request_check(conn, rr.xcb_randr_add_output_mode_checked(conn, output, mode)):
            raise XrandrError("RandR refused to add the mode to the output")

        def crtc_to(m: int) -> None:
            outs = (c_uint32 * 1)(output)
            done = rr.xcb_randr_set_crtc_config_reply(
                conn, rr.xcb_randr_set_crtc_config(conn, crtc, 0, config_ts, 0, 0, m, 1, 1, outs), None)
            status = ctypes.string_at(done, 2)[1] if done else -1
            if done:
                libc.free(done)
            if status != 0:
                raise XrandrError(f"RandR refused to set the CRTC (status {status})")

        def size_to() -> None:
            mm_w, mm_h = width * 254 // 960, height * 254 // 960  # 96 dpi
            if xcb.xcb_request_check(conn, rr.xcb_randr_set_screen_size_checked(conn, root, width, height, mm_w, mm_h)):
                raise XrandrError(f"RandR refused the screen size {width}x{height} (Xvfb cannot grow past its start)")

        try:
            crtc_to(mode)  # shrinking: the CRTC first, so it always fits inside the screen
            size_to()
        except XrandrError:
            size_to()  # growing: the screen first
            crtc_to(mode)
    finally:
        xcb.xcb_disconnect(conn)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m framepipe.proof.xrandr",
                                     description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--display", required=True)
    parser.add_argument("size", help="WIDTHxHEIGHT")
    args = parser.parse_args(argv)
    try:
        w, h = (int(v) for v in args.size.split("x"))
        set_screen_size(args.display, w, h)
    except (ValueError, XrandrError) as exc:
        print(f"xrandr: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
