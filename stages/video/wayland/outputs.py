"""Wayland outputs and what a screencopy of one gives (supervisor: planning and `framepipe devices`; fp-screen).

Outputs are numbered 1, 2, ... in the order the compositor announces them (``--monitor N``); monitor 0
("all of them", as mss has it) does not exist here: screencopy copies one output. Logical geometry comes
from xdg-output where the compositor has it, else from wl_output's position and current mode.
``probe`` asks for one frame's buffer parameters without copying anything: the ring is sized from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.config import ScreenConfig
from pipeline.errors import SetupError
from stages.video.wayland.wire import Connection, Globals, Proxy, WaylandError

SCREENCOPY = "zwlr_screencopy_manager_v1"
SCREENCOPY_VERSION = 3  # buffer_done (v3) and copy_with_damage (v2) where offered
#: wl_shm formats whose bytes in memory are B, G, R, X/A (little-endian 32-bit xRGB): the ring's BGRA
SHM_BGRA = {0: "argb8888", 1: "xrgb8888"}
Y_INVERT = 1


@dataclass
class Output:
    """One output as the compositor describes it."""

    index: int  # --monitor number, from 1
    name: str  # e.g. HEADLESS-1 (wl_output v4 or xdg-output), else ""
    description: str
    left: int  # logical position in the compositor's space
    top: int
    width: int  # current mode, pixels
    height: int
    logical_width: int
    logical_height: int
    scale: int
    refresh_mhz: int
    proxy: Proxy | None = None

    def public(self) -> dict[str, Any]:
        return {"index": self.index, "name": self.name, "description": self.description, "left": self.left,
                "top": self.top, "width": self.width, "height": self.height, "logical_width": self.logical_width,
                "logical_height": self.logical_height, "scale": self.scale,
                "refresh_hz": round(self.refresh_mhz / 1000, 3)}  # fmt: skip


@dataclass(frozen=True)
class BufferSpec:
    """What the compositor asks a client buffer of one capture to be (zwlr_screencopy_frame_v1.buffer)."""

    format: int
    width: int
    height: int
    stride: int


class Session:
    """A connection with the globals framepipe uses bound, and the outputs described."""

    def __init__(self, display: str | None = None) -> None:
        self.conn = Connection(display)
        try:
            self.globals = Globals(self.conn)
            self.outputs = self._outputs()
        except BaseException:
            self.conn.close()
            raise

    def _outputs(self) -> list[Output]:
        g = self.globals
        xdg = g.bind("zxdg_output_manager_v1", 3) if g.has("zxdg_output_manager_v1") else None
        outputs = []
        for i in range(len(g.offered.get("wl_output", []))):
            out = Output(i + 1, "", "", 0, 0, 0, 0, 0, 0, 1, 0)
            proxy = g.bind("wl_output", 4, i)
            out.proxy = proxy
            proxy.on["geometry"] = lambda x, y, *_, o=out: _set(o, left=x, top=y)
            proxy.on["mode"] = lambda flags, w, h, r, o=out: _set(o, **({"width": w, "height": h, "refresh_mhz": r}
                                                                        if flags & 1 else {}))  # the current mode
            proxy.on["scale"] = lambda s, o=out: _set(o, scale=s)
            proxy.on["name"] = lambda s, o=out: _set(o, name=s)
            proxy.on["description"] = lambda s, o=out: _set(o, description=s)
            if xdg is not None:
                xo = xdg.request("get_xdg_output", None, proxy)
                assert xo is not None
                xo.on["logical_position"] = lambda x, y, o=out: _set(o, left=x, top=y)
                xo.on["logical_size"] = lambda w, h, o=out: _set(o, logical_width=w, logical_height=h)
                xo.on["name"] = lambda s, o=out: _set(o, name=o.name or s)
            outputs.append(out)
        self.conn.roundtrip()
        self.conn.roundtrip()  # xdg-output's events follow wl_output's
        for out in outputs:
            out.logical_width = out.logical_width or out.width // max(out.scale, 1)
            out.logical_height = out.logical_height or out.height // max(out.scale, 1)
        return outputs

    @property
    def has_screencopy(self) -> bool:
        return self.globals.has(SCREENCOPY)

    def output(self, config: ScreenConfig) -> Output:
        """The output ``config.monitor`` names (1 the first); a clear line when there is none such."""
        if not self.outputs:
            raise SetupError("the Wayland compositor has no output to record")
        if config.monitor == 0 or config.monitor > len(self.outputs):
            names = ", ".join(f"{o.index} ({o.name or '?'})" for o in self.outputs)
            raise SetupError(f"monitor {config.monitor} does not exist on this Wayland desktop; its outputs are "
                             f"{names} (all at once is not possible here): see `framepipe devices`")  # fmt: skip
        return self.outputs[config.monitor - 1]

    def capture(self, manager: Proxy, output: Output, config: ScreenConfig, cursor: bool) -> Proxy:
        """A new zwlr_screencopy_frame_v1 of the whole output or of ``config.region`` (logical coordinates)."""
        if config.region:
            x, y, w, h = config.region
            frame = manager.request("capture_output_region", None, int(cursor), output.proxy, x, y, w, h)
        else:
            frame = manager.request("capture_output", None, int(cursor), output.proxy)
        assert frame is not None
        return frame

    def close(self) -> None:
        self.conn.close()


def _set(out: Output, **values: Any) -> None:
    for key, value in values.items():
        setattr(out, key, value)


def check_region(output: Output, config: ScreenConfig) -> None:
    if not config.region:
        return
    x, y, w, h = config.region
    if x + w > output.logical_width or y + h > output.logical_height:
        raise SetupError(f"region {x},{y},{w},{h} does not fit on monitor {config.monitor} "
                         f"({output.logical_width}x{output.logical_height}): choose a region inside it")  # fmt: skip


def probe(session: Session, output: Output, config: ScreenConfig, cursor: bool = False) -> BufferSpec:
    """The shm buffer one capture of ``output`` needs, asked of the compositor (nothing is copied)."""
    manager = session.globals.bind(SCREENCOPY, SCREENCOPY_VERSION)
    frame = session.capture(manager, output, config, cursor)
    got: list[BufferSpec] = []
    done: list[bool] = []
    frame.on["buffer"] = lambda f, w, h, s: got.append(BufferSpec(f, w, h, s))
    frame.on["buffer_done"] = lambda: done.append(True)
    frame.on["failed"] = lambda: done.append(False)
    session.conn.roundtrip()  # v1/v2 send buffer at once; v3 ends the list with buffer_done
    frame.request("destroy")
    manager.request("destroy")
    session.conn.roundtrip()
    if not got:
        raise SetupError("the Wayland compositor offers no shared-memory buffer for screencopy (only GPU "
                         "buffers): record with --backend portal")  # fmt: skip
    return got[0]


def output_rect(display: str | None, config: ScreenConfig) -> dict[str, Any]:
    """The rectangle recorded (supervisor, before rings exist): output position + region, and the buffer's
    size and stride in pixels as the compositor gives it."""
    try:
        session = Session(display)
    except WaylandError as exc:
        raise SetupError(f"cannot open the Wayland display ({exc})") from None
    try:
        if not session.has_screencopy:
            raise SetupError("this Wayland compositor does not offer wlroots screencopy")
        output = session.output(config)
        check_region(output, config)
        spec = probe(session, output, config)
        x, y = config.region[:2] if config.region else (0, 0)
        return {"left": output.left + x, "top": output.top + y, "width": spec.width, "height": spec.height,
                "stride": spec.stride, "format": spec.format, "output": output.name}  # fmt: skip
    except WaylandError as exc:
        raise SetupError(f"the Wayland compositor failed while planning ({exc})") from None
    finally:
        session.close()


def list_outputs(display: str | None = None) -> list[dict[str, Any]]:
    """`framepipe devices`: the outputs with their geometry (SetupError when the compositor is unreachable)."""
    try:
        session = Session(display)
    except WaylandError as exc:
        raise SetupError(f"cannot open the Wayland display ({exc})") from None
    try:
        return [{**o.public(), "screencopy": session.has_screencopy} for o in session.outputs]
    finally:
        session.close()
