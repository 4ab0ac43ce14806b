"""BGRA grabs to I420 ring slots, converted in the capture process (fp-screen) by libswscale.

Chosen with ``[screen] ring_format = "i420"``: an I420 picture is 1.5 bytes a pixel against BGRA's 4,
so the video ring (the frames waiting for the encoder) takes 0.375 of the memory (1080p60: 46 MB with
the staging slot against 100; 4K: 180 against 400), and the conversion, 6-8 ms of a 1080p frame, runs
beside the encode in another process instead of before it on the encoder's thread. Measured on 2
cores it costs about 15 % more CPU in all (NOTES.md), so the default stays BGRA.

The grabber fills one BGRA staging slot (the "grab" ring, which the X server or the compositor writes
into); ``Converter.convert`` writes the I420 planes straight into the video ring's slot, with no picture
allocated and no copy.

libswscale is PyAV's own copy (the wheel's ``av.libs``) or the system's, loaded with ctypes: importing
PyAV would cost the capture process 0.1 s of its start. ``sws_scale_frame`` reads two ``AVFrame``s of
which only the leading fields are set (data, linesize, width, height, format: the same layout in
libavutil 57 to 60, checked). Where no usable libswscale is found the planner says so (``check_planar``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import glob
import importlib.util
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError, SetupError
from pipeline.ring import Ring

AVUTIL_MAJORS = range(57, 61)  # AVFrame's leading fields as declared below hold in these
BACK = 'set [screen] ring_format = "bgra"'  # what to do when the conversion cannot run
SWS_AREA = 0x20  # the encoder's interpolation before (identical output to PyAV's reformat)


class _AVFrame(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p * 8), ("linesize", ctypes.c_int * 8), ("extended_data", ctypes.c_void_p),
                ("width", ctypes.c_int), ("height", ctypes.c_int), ("nb_samples", ctypes.c_int),
                ("format", ctypes.c_int)]  # fmt: skip


def _bundled() -> tuple[str, str] | None:
    """PyAV's own libswscale and libavutil (manylinux wheels keep them in ``av.libs``), without importing av."""
    spec = importlib.util.find_spec("av")
    if spec is None or not spec.origin:
        return None
    libs = Path(spec.origin).parent.parent / "av.libs"
    sws, util = glob.glob(str(libs / "libswscale*.so*")), glob.glob(str(libs / "libavutil*.so*"))
    return (sws[0], util[0]) if sws and util else None


@functools.cache
def libraries() -> tuple[str, str] | None:
    """The libswscale and libavutil to load (PyAV's, else the system's), or None; no library is loaded."""
    found = _bundled()
    if found is not None:
        return found
    sws, util = ctypes.util.find_library("swscale"), ctypes.util.find_library("avutil")
    return (sws, util) if sws and util else None


def check_planar(width: int, height: int) -> None:
    """That an I420 ring can be used (the planner asks, for ``[screen] ring_format = "i420"``); ConfigError if not."""
    if width % 2 or height % 2:
        raise ConfigError(f"screen.ring_format = \"i420\" needs an even size, not {width}x{height}: "
                          "give an even region, or ring_format = \"bgra\"")  # fmt: skip
    if libraries() is None:
        raise ConfigError("screen.ring_format = \"i420\" needs libswscale (PyAV's own or the system's), "
                          "and none was found: reinstall PyAV, or ring_format = \"bgra\"")  # fmt: skip


class Converter:
    """BGRA slot 0 of ``src`` into I420 slots of ``dst`` (pictures ``width`` x ``height``)."""

    def __init__(self, src: Ring, dst: Ring, width: int, height: int) -> None:
        paths = libraries()
        if paths is None:
            raise SetupError("no libswscale found to convert the screen's pictures: reinstall PyAV (pip install av)")
        sws, util = ctypes.CDLL(paths[0]), ctypes.CDLL(paths[1])
        major = util.avutil_version() >> 16
        if major not in AVUTIL_MAJORS:
            raise SetupError(f"libavutil {major} is not one framepipe knows (57-60): {BACK}")
        util.av_get_pix_fmt.restype = ctypes.c_int
        util.av_get_pix_fmt.argtypes = [ctypes.c_char_p]
        util.av_opt_set_int.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int64, ctypes.c_int]
        sws.sws_alloc_context.restype = ctypes.c_void_p
        sws.sws_free_context.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
        sws.sws_scale_frame.argtypes = [ctypes.c_void_p, ctypes.POINTER(_AVFrame), ctypes.POINTER(_AVFrame)]
        util.av_frame_alloc.restype = ctypes.POINTER(_AVFrame)
        util.av_frame_free.argtypes = [ctypes.POINTER(ctypes.POINTER(_AVFrame))]
        self._sws, self._util = sws, util
        self._ctx = ctypes.c_void_p(sws.sws_alloc_context())
        if not self._ctx or util.av_opt_set_int(self._ctx, b"sws_flags", SWS_AREA, 0) < 0 \
                or util.av_opt_set_int(self._ctx, b"threads", 1, 0) < 0:  # fmt: skip
            raise SetupError(f"libswscale would not set up a conversion: {BACK}")
        self._frames: list[Any] = []  # every AVFrame we allocated (the library's size, zeroed), freed on close
        self._src = self._frame(width, height, util.av_get_pix_fmt(b"bgra"))
        self._src.contents.data[0], self._src.contents.linesize[0] = src.address(0), src.geometry.stride
        self._dst = []
        luma, chroma = width * height, width * height // 4
        for slot in range(dst.slots):
            base, frame = dst.address(slot), self._frame(width, height, util.av_get_pix_fmt(b"yuv420p"))
            for i, (offset, line) in enumerate(((0, width), (luma, width // 2), (luma + chroma, width // 2))):
                frame.contents.data[i], frame.contents.linesize[i] = base + offset, line
            self._dst.append(frame)

    def _frame(self, width: int, height: int, pixfmt: int) -> Any:
        """An AVFrame of libavutil's own (its fields past ours zeroed), pointing at memory we own: no buffers."""
        frame = self._util.av_frame_alloc()
        if not frame:
            raise MemoryError("av_frame_alloc")
        self._frames.append(frame)
        f = frame.contents
        f.width, f.height, f.format = width, height, pixfmt
        return frame

    def convert(self, slot: int) -> None:
        """Convert the staging picture into ``slot`` of the video ring (fp-screen's thread)."""
        code = self._sws.sws_scale_frame(self._ctx, self._dst[slot], self._src)
        if code < 0:
            raise SetupError(f"libswscale failed to convert a picture (error {code}): {BACK}")

    def close(self) -> None:
        if self._ctx:
            self._sws.sws_free_context(ctypes.byref(self._ctx))
        for frame in self._frames:  # data pointers into our rings, no buffers: freeing leaves those alone
            self._util.av_frame_free(ctypes.byref(frame))
        self._frames, self._dst = [], []

