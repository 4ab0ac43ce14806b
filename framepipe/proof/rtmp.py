"""A real RTMP server on 127.0.0.1 for tests and benchmarks (nginx with Debian's nginx-rtmp module), and a puller.

``with RtmpServer() as server:`` writes its own nginx config in a temporary folder, starts
``nginx -p DIR -c DIR/nginx.conf`` in the foreground (``daemon off``) and waits until the port accepts;
``server.url("key")`` is where to publish and to play. ``stop()`` and ``start()`` take it away and bring
it back on the same port (the reconnect tests); ``freeze()`` and ``thaw()`` stop and continue its
processes, so the connections stay open but nothing is read (a dead network, seen from the sender).

Facts (nginx 1.22, nginx-rtmp 1.2.2, Debian 12): as root the workers run as ``nobody``, which is fine (they
open no files); ``-e`` points the early error log into the folder, so nothing is written under /var/log.
A message over ``max_message`` (1 MB by default) drops the publisher's connection: a large keyframe (noise
at low crf) is one message, so the config raises it. A player that connects before the publisher waits
for it (the live application keeps idle players).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from pipeline.errors import FramepipeError

MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")
START_TIMEOUT_S = 10.0  # how long start() waits for the port to accept
STOP_TIMEOUT_S = 10.0  # how long stop() waits for nginx to exit before killing it
MAX_MESSAGE = "16M"  # largest RTMP message accepted (a keyframe is one)

CONFIG = """\
load_module {module};
daemon off;
error_log {folder}/error.log;
pid {folder}/nginx.pid;
events {{}}
rtmp {{
    server {{
        listen 127.0.0.1:{port};
        max_message {max_message};
        application live {{
            live on;
            record off;
        }}
    }}
}}
"""


class RtmpError(FramepipeError, RuntimeError):
    """The test RTMP server cannot run; the message says why."""


def have_nginx_rtmp() -> bool:
    """Whether nginx and its RTMP module are installed (apt-get install nginx libnginx-mod-rtmp)."""
    return shutil.which("nginx") is not None and MODULE.is_file()


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on now (bound to port 0, then given back)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def accepts(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class RtmpServer:
    """nginx-rtmp on 127.0.0.1:``port`` (a free one when None), application ``live``."""

    def __init__(self, port: int | None = None) -> None:
        if not have_nginx_rtmp():
            raise RtmpError(f"nginx with the RTMP module ({MODULE}) is not installed: "
                            "apt-get install nginx libnginx-mod-rtmp")  # fmt: skip
        self.port = port or free_port()
        self._tmp = tempfile.TemporaryDirectory(prefix="fp-rtmp-")
        self.folder = Path(self._tmp.name)
        self.config = self.folder / "nginx.conf"
        self.config.write_text(CONFIG.format(module=MODULE, folder=self.folder, port=self.port,
                                             max_message=MAX_MESSAGE))  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, key: str) -> str:
        return f"rtmp://127.0.0.1:{self.port}/live/{key}"

    def start(self) -> None:
        """Start nginx and wait until the port accepts (again after stop(): the same port)."""
        if self.process is not None and self.process.poll() is None:
            return
        log = open(self.folder / "nginx.out", "ab")  # noqa: SIM115 (the child holds it)
        with log:
            self.process = subprocess.Popen(
                ["nginx", "-p", str(self.folder), "-c", str(self.config), "-e", str(self.folder / "error.log")],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_S
        while not accepts(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RtmpError(f"nginx did not listen on 127.0.0.1:{self.port}: {self.log_tail()}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop nginx now (SIGTERM: connections are closed at once); the port is free after."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        self.thaw_group(proc.pid)
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(STOP_TIMEOUT_S)

    def freeze(self) -> None:
        """Stop nginx's processes (SIGSTOP): connections stay open and nothing is read."""
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        if self.process is not None:
            self.thaw_group(self.process.pid)

    @staticmethod
    def thaw_group(pgid: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGCONT)

    def log_tail(self, chars: int = 500) -> str:
        text = ""
        for name in ("nginx.out", "error.log"):
            path = self.folder / name
            if path.exists():
                text += path.read_text(errors="replace")
        return text[-chars:].strip() or "(nothing in its logs)"

    def __enter__(self) -> RtmpServer:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self.stop()
        self._tmp.cleanup()


def pull(url: str, seconds: float, out_path: str | os.PathLike[str], timeout_s: float = 10.0) -> subprocess.Popen[str]:
    """Start recording what a viewer of ``url`` receives for ``seconds`` into ``out_path`` (stream copy, the
    ffmpeg program; it starts at the first keyframe). Gives up after ``timeout_s`` without data. Wait for it."""
    cmd = ["ffmpeg", "-v", "error", "-nostdin", "-y", "-rw_timeout", str(round(timeout_s * 1e6)), "-i", url,
           "-t", f"{seconds:g}", "-c", "copy", str(out_path)]  # fmt: skip
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def push_test_camera(url: str, colour: str = "green", size: str = "640x360",
                     rate: int = 30) -> subprocess.Popen[bytes]:  # fmt: skip
    """A test camera: the ffmpeg program pushing a plain ``colour`` picture in H.264 to ``url`` in real time
    (niced: on a 2-CPU machine the recorder, not the test's camera, should win). Stop it with terminate()."""
    cmd = ["nice", "-n", "10", "ffmpeg", "-v", "error", "-nostdin", "-re", "-f", "lavfi", "-i",
           f"color={colour}:size={size}:rate={rate}", "-c:v", "libx264", "-preset", "ultrafast", "-tune",
           "zerolatency", "-g", str(rate), "-f", "flv", url]  # fmt: skip
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
