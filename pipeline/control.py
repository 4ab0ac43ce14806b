"""The control plane: every recording's own Unix socket, and its small request/response vocabulary.

The supervisor listens on ``<folder>/<pid>.sock`` (``Server``); ``framepipe ctl``, the Python API and
the desktop bar are clients (``request``). The folder is ``$XDG_RUNTIME_DIR/framepipe`` or, without
one, ``framepipe-<uid>`` in the temp dir; it is 0700 and the socket 0600, so only the user who
started a recording can read or steer it. There is never a network listener.

On the wire a message is a 4-byte big-endian length and a msgpack map: a request
``{"verb": V, "args": {...}}``, a reply ``{"ok": bool, "result": {...}, "error": str}``. Every
request is answered; ``stop`` is answered once the files are closed.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

from pipeline.errors import FramepipeError
from pipeline.shm import pid_alive

VERBS = ("status", "pause", "resume", "toggle-pause", "stop", "save-replay", "marker")
LENGTH = struct.Struct(">I")
MAX_MESSAGE = 1 << 20  # a request or reply larger than this is not ours
MAX_MARKER = 200  # characters of a marker's text
CONNECT_TIMEOUT_S = 5.0
STOP_TIMEOUT_S = 90.0  # a stop waits for the stages to drain and the files to close


class ControlError(FramepipeError, ConnectionError):
    """No recording to talk to, or it refused the request; the message says what to do."""


@dataclass(frozen=True)
class Request:
    """A client asks the supervisor for one thing."""

    verb: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Reply:
    """The supervisor's answer: ``result`` when ``ok``, else ``error`` (one line for people)."""

    ok: bool
    result: dict[str, Any] = field(default_factory=dict)
    error: str = ""


def check_request(request: Request) -> Request:
    """A request with its arguments checked (ControlError naming what is allowed); both sides use it."""
    verb, args = request.verb, dict(request.args)
    if verb not in VERBS:
        raise ControlError(f"unknown request {verb!r}; allowed: {', '.join(VERBS)}")
    allowed = {"save-replay": {"seconds"}, "marker": {"text"}}.get(verb, set())
    extra = set(args) - allowed
    if extra:
        raise ControlError(f"{verb} takes no {', '.join(sorted(extra))}")
    if verb == "save-replay" and args.get("seconds") is not None:
        seconds = args["seconds"]
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds <= 3600:
            raise ControlError(f"save-replay takes a number of seconds from 0 to 3600, not {seconds!r}")
    if verb == "marker":
        text = args.get("text")
        if not isinstance(text, str) or not text.strip() or len(text) > MAX_MARKER:
            raise ControlError(f"marker takes a text of 1 to {MAX_MARKER} characters")
    return Request(verb, args)


# --- where the sockets live -------------------------------------------------------------


def socket_dir(create: bool = False) -> Path:
    """This user's folder of recording sockets (0700); refuses one another user owns, or a symlink."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(runtime) if runtime and Path(runtime).is_dir() else Path(tempfile.gettempdir())
    folder = base / ("framepipe" if base != Path(tempfile.gettempdir()) else f"framepipe-{os.getuid()}")
    if create:
        with contextlib.suppress(FileExistsError):
            folder.mkdir(mode=0o700)
    try:
        info = folder.lstat()
    except FileNotFoundError:
        return folder
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise ControlError(f"{folder} is not a folder of yours: remove it, or set XDG_RUNTIME_DIR to one")
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(folder, 0o700)  # ours, but readable by others: close it
    return folder


def socket_path(pid: int) -> Path:
    return socket_dir() / f"{pid}.sock"


def running() -> list[int]:
    """Process ids of this user's recordings that listen now (stale sockets of dead ones are removed)."""
    folder = socket_dir()
    pids = []
    for path in sorted(folder.glob("*.sock")) if folder.is_dir() else []:
        try:
            pid = int(path.stem)
        except ValueError:
            continue
        if pid_alive(pid):
            pids.append(pid)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
    return pids


def choose(pid: int | None) -> int:
    """The recording to talk to: ``pid``, or the only one running (ControlError otherwise)."""
    pids = running()
    if pid is not None:
        if pid not in pids:
            listed = f"; running: {', '.join(map(str, pids))}" if pids else ""
            raise ControlError(f"no recording with pid {pid} is running{listed}")
        return pid
    if not pids:
        raise ControlError("no recording is running: start one with `framepipe record`")
    if len(pids) > 1:
        listed = ", ".join(map(str, pids))
        raise ControlError(f"{len(pids)} recordings are running (pids {listed}): choose one with --pid")
    return pids[0]


# --- framing ---------------------------------------------------------------------------


def pack(payload: dict[str, Any]) -> bytes:
    body: bytes = msgpack.packb(payload)
    return LENGTH.pack(len(body)) + body


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ControlError("the recording closed the connection without answering (it may have ended)")
        data += chunk
    return data


def recv_message(sock: socket.socket) -> dict[str, Any]:
    """One framed message from a blocking socket."""
    (size,) = LENGTH.unpack(_recv_exact(sock, LENGTH.size))
    if size > MAX_MESSAGE:
        raise ControlError("the answer is too large to be framepipe's")
    try:
        message = msgpack.unpackb(_recv_exact(sock, size), strict_map_key=False)
    except (msgpack.UnpackException, ValueError) as exc:
        raise ControlError(f"not a framepipe answer: {exc}") from None
    if not isinstance(message, dict):
        raise ControlError("not a framepipe answer")
    return message


# --- the client ------------------------------------------------------------------------


def request(verb: str, args: dict[str, Any] | None = None, pid: int | None = None,
            timeout_s: float | None = None) -> dict[str, Any]:
    """Ask a running recording (``pid``, or the only one); its result, or ControlError with its one line."""
    req = check_request(Request(verb, args or {}))
    target = choose(pid)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(CONNECT_TIMEOUT_S)
        try:
            sock.connect(str(socket_path(target)))
        except OSError as exc:
            raise ControlError(f"cannot reach recording {target} ({exc.strerror or exc})") from None
        sock.settimeout(timeout_s or (STOP_TIMEOUT_S if verb == "stop" else CONNECT_TIMEOUT_S * 2))
        try:
            sock.sendall(pack({"verb": req.verb, "args": req.args}))
            answer = recv_message(sock)
        except TimeoutError:
            raise ControlError(f"recording {target} did not answer {verb} in time") from None
        except OSError as exc:
            raise ControlError(f"lost recording {target} while asking {verb} ({exc.strerror or exc})") from None
    finally:
        sock.close()
    if not answer.get("ok"):
        raise ControlError(str(answer.get("error") or f"{verb} failed"))
    result = answer.get("result") or {}
    return {**result, "pid": target} if isinstance(result, dict) else {"pid": target}


# --- the server (supervisor) --------------------------------------------------------------


class Client:
    """One connected client: bytes read so far, and how to answer (supervisor)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self) -> Request | Reply | None:
        """A complete request if one arrived; a Reply (an error to send back) if it is malformed."""
        try:
            chunk = self.sock.recv(65536)
        except BlockingIOError:
            return None
        except OSError:
            chunk = b""
        if not chunk:
            raise EOFError
        self.buffer += chunk
        if len(self.buffer) < LENGTH.size:
            return None
        (size,) = LENGTH.unpack(self.buffer[: LENGTH.size])
        if size > MAX_MESSAGE:
            return Reply(False, error="request too large")
        if len(self.buffer) < LENGTH.size + size:
            return None
        body, self.buffer = self.buffer[LENGTH.size : LENGTH.size + size], b""
        try:
            data = msgpack.unpackb(body, strict_map_key=False)
            return check_request(Request(str(data["verb"]), dict(data.get("args") or {})))
        except ControlError as exc:
            return Reply(False, error=str(exc))
        except (msgpack.UnpackException, ValueError, KeyError, TypeError):
            return Reply(False, error="not a framepipe request")

    def reply(self, reply: Reply) -> None:
        with contextlib.suppress(OSError):
            self.sock.setblocking(True)
            self.sock.settimeout(2.0)
            self.sock.sendall(pack({"ok": reply.ok, "result": reply.result, "error": reply.error}))
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class Server:
    """The supervisor's listening socket (0600 in a 0700 folder); ``accept`` and ``Client.read`` never block."""

    def __init__(self, pid: int | None = None) -> None:
        socket_dir(create=True)
        self.path = socket_path(pid or os.getpid())
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a stale socket of a process that had our pid
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # the socket is created 0600: no moment when others may connect
        try:
            self.sock.bind(str(self.path))
        finally:
            os.umask(old)
        self.sock.listen(8)
        self.sock.setblocking(False)

    def fileno(self) -> int:
        return self.sock.fileno()

    def accept(self) -> Client | None:
        try:
            conn, _ = self.sock.accept()
        except (BlockingIOError, OSError):
            return None
        conn.setblocking(False)
        return Client(conn)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
        with contextlib.suppress(OSError):
            self.path.unlink()
