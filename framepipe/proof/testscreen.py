"""The test picture: a frame-numbered code plus moving content, painted on an X root window.

Run as ``python -m framepipe.proof.testscreen --display :91 --fps 60 [--heavy] [--info FILE] [--duration S]``
or start it from Python with :func:`start_testscreen`. ``--window`` paints a borderless window the size of
the screen (titled ``framepipe-testscreen``) instead of the root window: under a rootless X server
(Xwayland under sway) the root shows nothing, and the compositor is told to make that window fullscreen.

State ``n`` is painted at the absolute deadline ``base_ns + n / fps`` of ``pipeline.clock.now_ns()``
(late by more than one period: skip ahead and count it). Each state puts a frame-number code in one
XPutImage request, so a grab sees a whole code or the previous one, never half of one. The code is
2 rows of 16 blocks: the 16 bits of ``n mod 65536`` (most significant first, white = 1) over their
complements, in a white border. Moving bands (and with ``--heavy`` a large noise area) never touch
the code's rectangle: they are drawn through a clip that excludes it.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np

from framepipe.proof.launch import start_module
from pipeline.clock import NS_PER_S, now_ns, sleep_until
from pipeline.errors import FramepipeError

#: Bits of the frame number carried by the code (it wraps at 2**CODE_BITS).
CODE_BITS = 16
#: Side of one code block in pixels (large, so it survives yuv420p + crf compression).
CODE_BLOCK = 24
#: White border around the blocks, in pixels.
CODE_BORDER = 12
#: Size of the whole code image: 16 blocks wide, 2 rows (bits, complements) high, plus border.
CODE_WIDTH = CODE_BITS * CODE_BLOCK + 2 * CODE_BORDER
CODE_HEIGHT = 2 * CODE_BLOCK + 2 * CODE_BORDER

#: Width of the full-height band that steps across the screen, and its step per state.
BAND_WIDTH, BAND_STEP = 160, 8
#: Height of the full-width band that steps down the screen, and its step per state.
BAR_HEIGHT, BAR_STEP = 120, 6
#: Size of the noise area of ``--heavy`` (clipped to the screen), and how many noise images cycle.
NOISE_SIZE, NOISE_IMAGES = (960, 540), 6

BACKGROUND = 0x283038
BAND_COLOURS = (0xE04040, 0x40C060, 0x4080E0, 0xE0C040, 0xC040C0, 0x40C0C0)
BAR_COLOURS = (0xF0A030, 0x30F0A0, 0xA030F0)

#: The title of the ``--window`` window (a compositor's rule can match it).
WINDOW_TITLE = "framepipe-testscreen"

#: Seconds :func:`start_testscreen` waits for the painter's info file.
START_TIMEOUT_S = 10.0


class TestscreenError(FramepipeError, RuntimeError):
    """The test screen cannot run; the message says why."""

    __test__ = False  # not a pytest test class


# --------------------------------------------------------------------------- the code image


def code_bits(n: int) -> np.ndarray:
    """The 2 x CODE_BITS bit matrix of state ``n``: row 0 the bits of n (MSB first), row 1 complements."""
    value = n % (1 << CODE_BITS)
    bits = (value >> np.arange(CODE_BITS - 1, -1, -1)) & 1
    return np.stack([bits, 1 - bits]).astype(bool)


def draw_code(out: np.ndarray, n: int) -> None:
    """Draw state ``n``'s code into ``out`` (CODE_HEIGHT x CODE_WIDTH x 4, BGRA uint8) in place."""
    blocks = np.where(code_bits(n), 255, 0).astype(np.uint8)
    pixels = blocks.repeat(CODE_BLOCK, axis=0).repeat(CODE_BLOCK, axis=1)
    out[...] = 255
    inner = out[CODE_BORDER:CODE_HEIGHT - CODE_BORDER, CODE_BORDER:CODE_WIDTH - CODE_BORDER, :3]
    inner[...] = pixels[:, :, None]


def code_image(n: int) -> np.ndarray:
    """A new BGRA image (CODE_HEIGHT x CODE_WIDTH x 4, uint8) of state ``n``'s code."""
    out = np.empty((CODE_HEIGHT, CODE_WIDTH, 4), np.uint8)
    draw_code(out, n)
    return out


def code_origin(width: int, height: int) -> tuple[int, int]:
    """Top-left of the code on a ``width`` x ``height`` screen: centred, on even pixels."""
    return ((width - CODE_WIDTH) // 2) & ~1, ((height - CODE_HEIGHT) // 2) & ~1


# --------------------------------------------------------------------------- Xlib through ctypes


class _XImage(ctypes.Structure):
    """The leading fields of Xlib's XImage (enough to check the pixel layout)."""

    _fields_ = [
        ("width", ctypes.c_int), ("height", ctypes.c_int), ("xoffset", ctypes.c_int),
        ("format", ctypes.c_int), ("data", ctypes.c_void_p), ("byte_order", ctypes.c_int),
        ("bitmap_unit", ctypes.c_int), ("bitmap_bit_order", ctypes.c_int), ("bitmap_pad", ctypes.c_int),
        ("depth", ctypes.c_int), ("bytes_per_line", ctypes.c_int), ("bits_per_pixel", ctypes.c_int),
        ("red_mask", ctypes.c_ulong), ("green_mask", ctypes.c_ulong), ("blue_mask", ctypes.c_ulong),
    ]


class _XRectangle(ctypes.Structure):
    _fields_ = [("x", ctypes.c_short), ("y", ctypes.c_short),
                ("width", ctypes.c_ushort), ("height", ctypes.c_ushort)]


_ZPIXMAP, _LSBFIRST, _UNSORTED = 2, 0, 0


def _typed_xlib() -> ctypes.CDLL:
    """libX11 with the drawing calls typed."""
    from framepipe.proof.xvfb import load_xlib

    lib = load_xlib()
    vp, ul, i, u = ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, ctypes.c_uint
    img = ctypes.POINTER(_XImage)
    signatures: dict[str, tuple[list[Any], Any]] = {
        "XDefaultScreen": ([vp], i),
        "XRootWindow": ([vp, i], ul),
        "XDefaultVisual": ([vp, i], vp),
        "XDefaultDepth": ([vp, i], i),
        "XDisplayWidth": ([vp, i], i),
        "XDisplayHeight": ([vp, i], i),
        "XCreateGC": ([vp, ul, ul, vp], vp),
        "XFreeGC": ([vp, vp], i),
        "XSetForeground": ([vp, vp, ul], i),
        "XSetClipRectangles": ([vp, vp, i, i, ctypes.POINTER(_XRectangle), i, i], i),
        "XFillRectangle": ([vp, ul, vp, i, i, u, u], i),
        "XCreateImage": ([vp, vp, u, i, i, vp, u, u, i, i], img),
        "XPutImage": ([vp, ul, vp, img, i, i, i, i, u, u], i),
        "XSync": ([vp, i], i),
        "XWarpPointer": ([vp, ul, ul, i, i, u, u, i, i], i),
        "XCreateSimpleWindow": ([vp, ul, i, i, u, u, u, ul, ul], ul),
        "XStoreName": ([vp, ul, ctypes.c_char_p], i),
        "XInternAtom": ([vp, ctypes.c_char_p, i], ul),
        "XChangeProperty": ([vp, ul, ul, ul, i, i, ctypes.c_char_p, i], i),
        "XSelectInput": ([vp, ul, ctypes.c_long], i),
        "XMapWindow": ([vp, ul], i),
        "XNextEvent": ([vp, vp], i),
    }
    for name, (args, res) in signatures.items():
        func = getattr(lib, name)
        func.argtypes, func.restype = args, res
    return lib


class _Screen:
    """An open X display: the root window (or a window of our own, ``window`` = x, y, width, height), visual,
    and XImages over numpy buffers we own."""

    def __init__(self, display: str, window: tuple[int, int, int, int] | None = None,
                 title: str = "framepipe test window") -> None:  # fmt: skip
        self.lib = _typed_xlib()
        self.dpy = self.lib.XOpenDisplay(display.encode())
        if not self.dpy:
            raise TestscreenError(f"cannot open X display {display}")
        scr = self.lib.XDefaultScreen(self.dpy)
        self.root = self.lib.XRootWindow(self.dpy, scr)
        self.visual = self.lib.XDefaultVisual(self.dpy, scr)
        self.width = self.lib.XDisplayWidth(self.dpy, scr)
        self.height = self.lib.XDisplayHeight(self.dpy, scr)
        if self.lib.XDefaultDepth(self.dpy, scr) != 24:
            raise TestscreenError(f"display {display} is not 24 bits deep")
        self._buffers: list[np.ndarray] = []  # XImage data must outlive the XImages
        self.target, self.window = self.root, 0
        if window is not None:
            self._open_window(window, title)

    def _open_window(self, rect: tuple[int, int, int, int], title: str) -> None:
        """A top-level window to paint in (title and WM_CLASS set), mapped (MapNotify seen: under a compositor,
        Xwayland's, that is later than the request) when this returns. A rect of zeros covers the screen."""
        x, y, w, h = rect if rect[2] else (0, 0, self.width, self.height)
        lib = self.lib
        self.window = lib.XCreateSimpleWindow(self.dpy, self.root, x, y, w, h, 0, 0, BACKGROUND)
        lib.XStoreName(self.dpy, self.window, title.encode())
        wm_class = b"framepipe-test\0FramepipeTest\0"
        lib.XChangeProperty(self.dpy, self.window, lib.XInternAtom(self.dpy, b"WM_CLASS", 0), 31, 8, 0, wm_class,
                            len(wm_class))  # fmt: skip  # 31: XA_STRING, 0: PropModeReplace
        lib.XSelectInput(self.dpy, self.window, 1 << 17)  # StructureNotifyMask
        lib.XMapWindow(self.dpy, self.window)
        event = ctypes.create_string_buffer(192)  # an XEvent; its first int is the type
        while ctypes.c_int.from_buffer(event).value != 19:  # MapNotify
            lib.XNextEvent(self.dpy, event)
        lib.XSelectInput(self.dpy, self.window, 0)
        self.target, self.width, self.height = self.window, w, h

    def image(self, buffer: np.ndarray) -> Any:
        """An XImage over ``buffer`` (H x W x 4 uint8, C-contiguous); never XDestroyImage it."""
        h, w = buffer.shape[:2]
        ptr = self.lib.XCreateImage(self.dpy, self.visual, 24, _ZPIXMAP, 0, buffer.ctypes.data, w, h, 32,
                                    w * 4)
        if not ptr:
            raise TestscreenError("XCreateImage failed")
        im = ptr.contents
        if (im.bits_per_pixel, im.byte_order, im.red_mask, im.blue_mask) != (32, _LSBFIRST, 0xFF0000, 0xFF):
            raise TestscreenError("unsupported X pixel layout (need 32-bit BGRX TrueColor)")
        self._buffers.append(buffer)
        return ptr

    def gc(self, exclude: tuple[int, int, int, int] | None = None) -> Any:
        """A new graphics context, clipped to everything but the ``exclude`` rectangle if given."""
        gc = self.lib.XCreateGC(self.dpy, self.root, 0, None)
        if exclude is not None:
            x, y, w, h = exclude
            W, H = self.width, self.height
            parts = [(0, 0, W, y), (0, y + h, W, H - y - h), (0, y, x, h), (x + w, y, W - x - w, h)]
            rects = (_XRectangle * 4)(*[_XRectangle(*p) for p in parts])
            self.lib.XSetClipRectangles(self.dpy, gc, 0, 0, rects, 4, _UNSORTED)
        return gc

    def fill(self, gc: Any, colour: int, rect: tuple[int, int, int, int]) -> None:
        self.lib.XSetForeground(self.dpy, gc, colour)
        self.lib.XFillRectangle(self.dpy, self.target, gc, *rect)

    def put(self, gc: Any, image: Any, x: int, y: int, w: int, h: int) -> None:
        self.lib.XPutImage(self.dpy, self.target, gc, image, 0, 0, x, y, w, h)

    def park_pointer(self) -> None:
        """Move the pointer to the bottom-right corner, away from the code (grabbers may draw it)."""
        self.lib.XWarpPointer(self.dpy, 0, self.root, 0, 0, 0, 0, self.width - 1, self.height - 1)

    def sync(self) -> None:
        self.lib.XSync(self.dpy, 0)

    def close(self) -> None:
        self.lib.XCloseDisplay(self.dpy)


# --------------------------------------------------------------------------- the painter


class Painter:
    """Paints state ``n`` of the test picture: bands, optional noise, then the code in one request."""

    def __init__(self, screen: _Screen, heavy: bool = False) -> None:
        self.screen = screen
        W, H = screen.width, screen.height
        if W < CODE_WIDTH or H < CODE_HEIGHT:
            raise TestscreenError(f"screen {W}x{H} is smaller than the {CODE_WIDTH}x{CODE_HEIGHT} code")
        x, y = code_origin(W, H)
        self.code_rect = (x, y, CODE_WIDTH, CODE_HEIGHT)
        self._code_buf = np.zeros((CODE_HEIGHT, CODE_WIDTH, 4), np.uint8)
        self._code_img = screen.image(self._code_buf)
        self._code_gc = screen.gc()
        self._gc = screen.gc(exclude=self.code_rect)
        self._noise: list[Any] = []
        self._noise_size = (min(NOISE_SIZE[0], W), min(NOISE_SIZE[1], H))
        if heavy:
            nw, nh = self._noise_size
            rng = np.random.default_rng(20240611)
            for _ in range(NOISE_IMAGES):
                self._noise.append(screen.image(rng.integers(0, 256, (nh, nw, 4), np.uint8)))
        self._prev: tuple[tuple[int, int, int, int], ...] = ()
        screen.fill(self._code_gc, BACKGROUND, (0, 0, W, H))
        if not screen.window:
            screen.park_pointer()

    def _bands(self, n: int) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
        W, H = self.screen.width, self.screen.height
        bx = (n * BAND_STEP) % (W + BAND_WIDTH) - BAND_WIDTH
        by = (n * BAR_STEP) % (H + BAR_HEIGHT) - BAR_HEIGHT
        return (bx, 0, BAND_WIDTH, H), (0, by, W, BAR_HEIGHT)

    def paint(self, n: int) -> None:
        """Paint state ``n`` and wait until the server has done it."""
        s = self.screen
        for rect in self._prev:
            s.fill(self._gc, BACKGROUND, rect)
        band, bar = self._bands(n)
        s.fill(self._gc, BAND_COLOURS[(n // 30) % len(BAND_COLOURS)], band)
        s.fill(self._gc, BAR_COLOURS[(n // 45) % len(BAR_COLOURS)], bar)
        self._prev = (band, bar)
        if self._noise:
            s.put(self._gc, self._noise[n % len(self._noise)], 0, 0, *self._noise_size)
        draw_code(self._code_buf, n)
        s.put(self._code_gc, self._code_img, *self.code_rect)
        s.sync()


# --------------------------------------------------------------------------- pacing and files


@dataclass(frozen=True)
class TestscreenConfig:
    """What to paint and how fast."""

    __test__ = False  # not a pytest test class

    display: str  # X display name, e.g. ":91"
    fps: Fraction = Fraction(60)  # states per second
    heavy: bool = False  # add the large noise area
    info_path: Path | None = None  # where to write the info JSON (and FILE.stats at the end)
    duration_s: float | None = None  # stop after this many seconds (None: until a signal)
    window: tuple[int, int, int, int] | None = None  # paint in a window of our own (x, y, w, h; zeros: the
    # whole screen, for rootless X servers: Xwayland), not the root
    cover: bool = False  # paint the window once with a pattern that reads as no code (to cover another window)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` atomically (a temporary file, then rename)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def run(config: TestscreenConfig) -> dict[str, Any]:
    """Paint until SIGTERM/SIGINT or the duration ends; return the stats."""
    stop = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    title = "framepipe cover" if config.cover else WINDOW_TITLE if config.window == FULL else "framepipe test window"
    screen = _Screen(config.display, config.window, title)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if config.cover:
        return _cover(screen, config, lambda: stop)
    try:
        painter = Painter(screen, config.heavy)
        screen.sync()
        fps = config.fps
        # Half a frame off the clock's frame grid: a recorder that starts on the grid (framepipe does)
        # grabs mid-frame, far from the instant the screen changes, so runs compare without swaps.
        grid = round(NS_PER_S / fps)
        base = -(-(now_ns() + 20_000_000) // grid) * grid + grid // 2

        def deadline(k: int) -> int:
            return base + (k * NS_PER_S * fps.denominator) // fps.numerator

        period = round(NS_PER_S / fps)
        if config.info_path is not None:
            _write_json(config.info_path, {
                "base_ns": base, "fps": float(fps), "period_ns": period, "width": screen.width,
                "height": screen.height, "code_rect": list(painter.code_rect), "pid": os.getpid(),
                "display": config.display, "heavy": config.heavy, "window": hex(screen.window),
                "code": {"bits": CODE_BITS, "block": CODE_BLOCK, "border": CODE_BORDER},
            })
        end = base + int(config.duration_s * NS_PER_S) if config.duration_s is not None else None
        delays: list[int | None] = []  # per state n: paint done (after XSync) minus deadline, in us
        starts: list[int | None] = []  # per state n: paint begun minus deadline, in us (it cannot show before)
        skipped = 0
        n = 0
        while not stop and (end is None or deadline(n) < end):
            late = sleep_until(deadline(n))
            if late > period:
                now = now_ns()
                k = ((now - base) * fps.numerator) // (NS_PER_S * fps.denominator)
                skipped += k - n
                delays.extend([None] * (k - n))
                starts.extend([None] * (k - n))
                n = k
            starts.append((now_ns() - deadline(n)) // 1000)
            painter.paint(n)
            delays.append((now_ns() - deadline(n)) // 1000)
            n += 1
    finally:
        screen.close()
    done = np.array([d for d in delays if d is not None], dtype=np.int64)
    stats = {
        "paints": int(done.size), "skipped": skipped, "last_n": n - 1,
        "delay_p50_us": float(np.median(done)) if done.size else None,
        "delay_max_us": int(done.max()) if done.size else None,
        "paint_delay_us": delays, "paint_start_us": starts,
    }
    if config.info_path is not None:
        _write_json(Path(f"{config.info_path}.stats"), stats)
    return stats


COVER_GREY, COVER_STRIPE = 0x808080, 0x8C7C90  # mid luma: never a code's black or white


def _cover(screen: _Screen, config: TestscreenConfig, stopped: Any) -> dict[str, Any]:
    """Fill the window with grey and stripes (no block reads as a code's black or white); wait for a signal."""
    import time

    try:
        gc = screen.gc()
        screen.fill(gc, COVER_GREY, (0, 0, screen.width, screen.height))
        for x in range(0, screen.width, 64):
            screen.fill(gc, COVER_STRIPE, (x, 0, 24, screen.height))
        screen.sync()
        if config.info_path is not None:
            _write_json(config.info_path, {"window": hex(screen.window), "pid": os.getpid()})
        while not stopped():
            time.sleep(0.05)
    finally:
        screen.close()
    return {"paints": 1, "skipped": 0}


FULL = (0, 0, 0, 0)  # --window full: a window covering the screen


def _geometry(text: str) -> tuple[int, int, int, int]:
    """WxH+X+Y as x, y, w, h; "full" as FULL."""
    if text == "full":
        return FULL
    try:
        size, x, y = text.split("+")
        w, h = size.split("x")
        return int(x), int(y), int(w), int(h)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--window takes WIDTHxHEIGHT+X+Y, e.g. 960x540+0+0, not {text!r}") from None


def load_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The info JSON a test screen wrote."""
    data: dict[str, Any] = json.loads(Path(path).read_text())
    return data


def start_testscreen(display: str, fps: float = 60, heavy: bool = False, *,
                     info_path: str | os.PathLike[str], duration_s: float | None = None,
                     timeout_s: float = START_TIMEOUT_S, window: str | None = None,
                     cover: bool = False) -> subprocess.Popen[bytes]:  # fmt: skip
    """Start the test screen as a subprocess; return once its first state is on screen (``window``: WxH+X+Y,
    paint in a window of its own, "full": one covering the screen; ``cover``: a window of a pattern without
    codes, returned once shown)."""
    info = Path(info_path)
    args = ["--display", display, "--fps", str(fps), "--info", str(info)]
    if heavy:
        args.append("--heavy")
    if window is not None:
        args += ["--window", window]
    if cover:
        args.append("--cover")
        return start_module("framepipe.proof.testscreen", args, info, timeout_s=timeout_s, error=TestscreenError)
    if duration_s is not None:
        args += ["--duration", str(duration_s)]
    proc = start_module("framepipe.proof.testscreen", args, info, timeout_s=timeout_s, error=TestscreenError)
    data = load_info(info)
    sleep_until(data["base_ns"] + data["period_ns"])
    return proc


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m framepipe.proof.testscreen",
                                     description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--display", default=os.environ.get("DISPLAY"), help="X display, e.g. :91")
    parser.add_argument("--fps", default="60", help="states per second (e.g. 60, 120, 30000/1001)")
    parser.add_argument("--heavy", action="store_true", help="add a large noise area")
    parser.add_argument("--info", type=Path, help="write the info JSON here (and FILE.stats at the end)")
    parser.add_argument("--duration", type=float, help="stop after S seconds")
    parser.add_argument("--window", type=_geometry, metavar="WxH+X+Y|full",
                        help="paint in a window of its own (full: covering the screen, for rootless X servers)")
    parser.add_argument("--cover", action="store_true", help="with --window: a pattern that reads as no code")
    args = parser.parse_args(argv)
    try:
        fps = Fraction(args.fps)
        if not args.display:
            raise TestscreenError("no display: pass --display or set DISPLAY")
        if fps <= 0:
            raise TestscreenError(f"--fps must be positive, got {args.fps}")
        if args.cover and args.window is None:
            raise TestscreenError("--cover needs --window")
        stats = run(TestscreenConfig(args.display, fps, args.heavy, args.info, args.duration, args.window, args.cover))
    except (TestscreenError, ValueError, RuntimeError) as exc:
        print(f"testscreen: {exc}", file=sys.stderr)
        return 2
    print(f"testscreen: {stats['paints']} paints, {stats['skipped']} skipped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
