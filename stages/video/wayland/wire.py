"""The Wayland wire protocol over the compositor's Unix socket, in pure Python (any process that talks to it).

Written from the public specification (wayland.xml's wire format): every message is a header of two
32-bit words in host order (object id; size << 16 | opcode) and its arguments, each padded to 4 bytes
(int, uint, object and new_id one word; a string its length with the NUL, the bytes, padding). A file
descriptor is not in the body: it travels beside it as SCM_RIGHTS ancillary data. The client allocates
object ids from 2 up (1 is wl_display) and may reuse one after the server's ``delete_id``.

Only the interfaces framepipe needs are described (``INTERFACES``): the core globals, wl_shm and its
pool and buffers, wl_output, xdg-output, and wlroots' screencopy. No numpy, no PyAV: the supervisor
imports this to list outputs.
"""

from __future__ import annotations

import array
import contextlib
import os
import select
import socket
import struct
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pipeline.errors import FramepipeError

#: interface -> (requests, events), each a list of (name, signature). Signature letters: i int, u uint,
#: o object id, n new_id (typed: one word), N new_id untyped (string interface, uint version, id),
#: s string, h file descriptor (not in the body).
# fmt: off
INTERFACES: dict[str, tuple[list[tuple[str, str]], list[tuple[str, str]]]] = {
    "wl_display": ([("sync", "n"), ("get_registry", "n")], [("error", "ous"), ("delete_id", "u")]),
    "wl_registry": ([("bind", "uN")], [("global", "usu"), ("global_remove", "u")]),
    "wl_callback": ([], [("done", "u")]),
    "wl_shm": ([("create_pool", "nhi")], [("format", "u")]),
    "wl_shm_pool": ([("create_buffer", "niiiiu"), ("destroy", ""), ("resize", "i")], []),
    "wl_buffer": ([("destroy", "")], [("release", "")]),
    "wl_output": ([("release", "")],
                  [("geometry", "iiiiissi"), ("mode", "uiii"), ("done", ""), ("scale", "i"), ("name", "s"),
                   ("description", "s")]),
    "zxdg_output_manager_v1": ([("destroy", ""), ("get_xdg_output", "no")], []),
    "zxdg_output_v1": ([("destroy", "")],
                       [("logical_position", "ii"), ("logical_size", "ii"), ("done", ""), ("name", "s"),
                        ("description", "s")]),
    "zwlr_screencopy_manager_v1": ([("capture_output", "nio"), ("capture_output_region", "nioiiii"),
                                    ("destroy", "")], []),
    "zwlr_screencopy_frame_v1": ([("copy", "o"), ("destroy", ""), ("copy_with_damage", "o")],
                                 [("buffer", "uuuu"), ("flags", "u"), ("ready", "uuu"), ("failed", ""),
                                  ("damage", "uuuu"), ("linux_dmabuf", "uuu"), ("buffer_done", "")]),
}
# fmt: on

HEADER = struct.Struct("=II")
MAX_FDS = 28  # libwayland's own limit per message batch


class WaylandError(FramepipeError, OSError):
    """The compositor cannot be reached, or it sent a protocol error (the message says which)."""


class CompositorGone(WaylandError):
    """The connection to the compositor closed while we used it."""


def socket_path(display: str | None = None) -> Path:
    """The compositor's socket: WAYLAND_DISPLAY (a name under XDG_RUNTIME_DIR, or an absolute path)."""
    name = display or os.environ.get("WAYLAND_DISPLAY") or "wayland-0"
    if os.path.isabs(name):
        return Path(name)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if not runtime:
        raise WaylandError("XDG_RUNTIME_DIR is not set, so the Wayland socket cannot be found: set it, or give "
                           "WAYLAND_DISPLAY as an absolute path")  # fmt: skip
    return Path(runtime) / name


class Proxy:
    """A client-side object: its id and interface; ``on`` maps event names to handlers."""

    def __init__(self, conn: Connection, oid: int, interface: str, version: int) -> None:
        self.conn, self.id, self.interface, self.version = conn, oid, interface, version
        self.on: dict[str, Callable[..., None]] = {}

    def request(self, name: str, *args: Any, interface: str | None = None, version: int | None = None) -> Proxy | None:
        """Send request ``name``; a typed new_id argument is made here and returned (pass None in its place)."""
        return self.conn.request(self, name, args, interface, version)

    def __repr__(self) -> str:
        return f"{self.interface}@{self.id}"


class Connection:
    """One connection to a compositor; single-threaded: the caller dispatches events when it waits."""

    def __init__(self, display: str | None = None) -> None:
        path = socket_path(display)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            self.sock.connect(str(path))
        except OSError as exc:
            self.sock.close()
            raise WaylandError(f"cannot connect to the Wayland compositor at {path} ({exc.strerror or exc})") from None
        self.objects: dict[int, Proxy] = {}
        self._free: list[int] = []
        self._next = 2
        self._inbuf = b""
        self._out: list[bytes] = []
        self._out_fds: list[int] = []
        self.display = Proxy(self, 1, "wl_display", 1)
        self.objects[1] = self.display
        self.display.on["error"] = self._on_error
        self.display.on["delete_id"] = self._on_delete_id

    # --- requests -------------------------------------------------------------------

    def _new_id(self) -> int:
        if self._free:
            return self._free.pop()
        oid, self._next = self._next, self._next + 1
        return oid

    def request(self, proxy: Proxy, name: str, args: Sequence[Any], interface: str | None,
                version: int | None) -> Proxy | None:  # fmt: skip
        requests = INTERFACES[proxy.interface][0]
        opcode = next(i for i, (n, _) in enumerate(requests) if n == name)
        sig = requests[opcode][1]
        body, created = bytearray(), None
        values = list(args)
        for letter in sig:
            if letter == "n":
                iface = interface or _new_id_interface(proxy.interface, name)
                created = Proxy(self, self._new_id(), iface, version or proxy.version)
                self.objects[created.id] = created
                values.pop(0)
                body += struct.pack("=I", created.id)
                continue
            value = values.pop(0)
            if letter == "N":  # wl_registry.bind: interface name, version, new id
                iface, ver = interface or "", version or 1
                created = Proxy(self, self._new_id(), iface, ver)
                self.objects[created.id] = created
                body += _string(iface) + struct.pack("=II", ver, created.id)
            elif letter == "i":
                body += struct.pack("=i", value)
            elif letter in "uo":
                body += struct.pack("=I", value.id if isinstance(value, Proxy) else value)
            elif letter == "s":
                body += _string(value)
            elif letter == "h":
                self._out_fds.append(value)
        self._out.append(HEADER.pack(proxy.id, (HEADER.size + len(body)) << 16 | opcode) + bytes(body))
        if name == "destroy" or (proxy.interface == "wl_output" and name == "release"):
            proxy.on.clear()  # the id comes back with delete_id (wl_display's own ids never do)
        return created

    def flush(self) -> None:
        """Send what was queued (with its file descriptors)."""
        if not self._out:
            return
        data = b"".join(self._out)
        fds, self._out, self._out_fds = self._out_fds, [], []
        try:
            sent = socket.send_fds(self.sock, [data], fds) if fds else self.sock.send(data)
            if sent < len(data):
                self.sock.sendall(data[sent:])
        except OSError as exc:
            raise CompositorGone(f"the Wayland compositor closed the connection ({exc.strerror or exc})") from None

    # --- events -----------------------------------------------------------------------

    def dispatch(self, timeout_s: float | None) -> bool:
        """Flush, then read and handle what arrives within ``timeout_s`` (None: wait); False when nothing came."""
        self.flush()
        ready, _, _ = select.select([self.sock], [], [], timeout_s)
        if not ready:
            return False
        try:
            data, ancdata, _, _ = self.sock.recvmsg(65536, socket.CMSG_SPACE(MAX_FDS * 4))
        except OSError as exc:
            raise CompositorGone(f"the Wayland compositor closed the connection ({exc.strerror or exc})") from None
        for level, kind, payload in ancdata:  # no event we bind carries an fd: close any we get
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
                for fd in fds:
                    os.close(fd)
        if not data:
            raise CompositorGone("the Wayland compositor closed the connection (it exited?)")
        self._inbuf += data
        self._handle()
        return True

    def _handle(self) -> None:
        buf = self._inbuf
        pos = 0
        while len(buf) - pos >= HEADER.size:
            oid, word = HEADER.unpack_from(buf, pos)
            size, opcode = word >> 16, word & 0xFFFF
            if len(buf) - pos < size:
                break
            body = buf[pos + HEADER.size : pos + size]
            pos += size
            proxy = self.objects.get(oid)
            if proxy is None:
                continue  # an event for an object we destroyed already
            events = INTERFACES[proxy.interface][1]
            if opcode >= len(events):
                continue  # newer than we know
            name, sig = events[opcode]
            handler = proxy.on.get(name)
            if handler is not None:
                handler(*_decode(sig, body))
        self._inbuf = buf[pos:]

    def _on_error(self, oid: int, code: int, message: str) -> None:
        target = self.objects.get(oid)
        raise WaylandError(f"the Wayland compositor reported a protocol error on {target or oid}: {message} "
                           f"(code {code})")  # fmt: skip

    def _on_delete_id(self, oid: int) -> None:
        if self.objects.pop(oid, None) is not None:
            self._free.append(oid)

    def roundtrip(self, timeout_s: float = 5.0) -> None:
        """Wait until the compositor has handled every request sent so far (wl_display.sync)."""
        done: list[int] = []
        cb = self.display.request("sync", None, interface="wl_callback")
        assert cb is not None
        cb.on["done"] = done.append
        while not done:
            if not self.dispatch(timeout_s):
                raise WaylandError(f"the Wayland compositor did not answer within {timeout_s:g} s")

    def close(self) -> None:
        with contextlib.suppress(WaylandError):
            self.flush()
        self.sock.close()


def _new_id_interface(interface: str, request: str) -> str:
    return {
        ("wl_display", "sync"): "wl_callback",
        ("wl_display", "get_registry"): "wl_registry",
        ("wl_shm", "create_pool"): "wl_shm_pool",
        ("wl_shm_pool", "create_buffer"): "wl_buffer",
        ("zxdg_output_manager_v1", "get_xdg_output"): "zxdg_output_v1",
        ("zwlr_screencopy_manager_v1", "capture_output"): "zwlr_screencopy_frame_v1",
        ("zwlr_screencopy_manager_v1", "capture_output_region"): "zwlr_screencopy_frame_v1",
    }[(interface, request)]


def _string(text: str) -> bytes:
    raw = text.encode() + b"\0"
    return struct.pack("=I", len(raw)) + raw + b"\0" * (-len(raw) % 4)


def _decode(sig: str, body: bytes) -> list[Any]:
    out: list[Any] = []
    pos = 0
    for letter in sig:
        if letter == "s":
            (length,) = struct.unpack_from("=I", body, pos)
            pos += 4
            out.append(body[pos : pos + max(length - 1, 0)].decode(errors="replace"))
            pos += length + (-length % 4)
        elif letter == "i":
            out.append(struct.unpack_from("=i", body, pos)[0])
            pos += 4
        else:
            out.append(struct.unpack_from("=I", body, pos)[0])
            pos += 4
    return out


class Globals:
    """The registry's globals after one roundtrip: interface -> [(name, version)]."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.offered: dict[str, list[tuple[int, int]]] = {}
        registry = conn.display.request("get_registry", None, interface="wl_registry")
        assert registry is not None
        self.registry = registry
        registry.on["global"] = lambda name, iface, ver: self.offered.setdefault(iface, []).append((name, ver))
        conn.roundtrip()

    def has(self, interface: str) -> bool:
        return interface in self.offered

    def bind(self, interface: str, max_version: int, index: int = 0) -> Proxy:
        name, offered = self.offered[interface][index]
        proxy = self.registry.request("bind", name, None, interface=interface, version=min(offered, max_version))
        assert proxy is not None
        return proxy
