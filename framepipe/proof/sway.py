"""A headless sway compositor for tests: one output of a given size, Xwayland, as a context manager.

sway refuses to run as root, so it runs as the unprivileged user ``framepipe-test`` (created with useradd
when missing; that needs root, as CI and the dev machines are), with its own XDG_RUNTIME_DIR (0700) in a
temporary folder. Headless: ``WLR_BACKENDS=headless WLR_RENDERER=pixman WLR_LIBINPUT_NO_DEVICES=1``.
``wayland_display`` is the socket's absolute path (libwayland and framepipe take one in WAYLAND_DISPLAY), so
a recorder running as root needs no access to sway's runtime folder by name. ``x_display`` is Xwayland's
display (rootless: an X program shows only in a window; the config makes the test screen's window
fullscreen and borderless).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from framepipe.proof.testscreen import WINDOW_TITLE
from framepipe.proof.xvfb import stop_process
from pipeline.errors import FramepipeError

USER = "framepipe-test"
START_TIMEOUT_S = 15.0


class SwayError(FramepipeError, RuntimeError):
    """The compositor could not be started; the message says why."""


def have_sway() -> bool:
    return shutil.which("sway") is not None and shutil.which("Xwayland") is not None


def test_user() -> pwd.struct_passwd:
    """The unprivileged user sway runs as (created when missing)."""
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        pass
    if os.geteuid() != 0:
        raise SwayError(f"sway refuses root and the user {USER} does not exist: create it, or run as root once")
    done = subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER],
                          capture_output=True, text=True, check=False)  # fmt: skip
    if done.returncode != 0 and "already exists" not in done.stderr:
        raise SwayError(f"cannot create the user {USER}: {done.stderr.strip()}")
    return pwd.getpwnam(USER)


class Sway:
    """Headless sway with one ``width`` x ``height`` output at ``refresh_hz``."""

    def __init__(self, width: int = 1280, height: int = 720, refresh_hz: int = 60) -> None:
        self.width, self.height, self.refresh_hz = width, height, refresh_hz
        self._proc: subprocess.Popen[bytes] | None = None
        self.folder: Path | None = None
        self.wayland_display = ""
        self.x_display = ""
        self.swaysock = ""

    def start(self) -> Sway:
        if not have_sway():
            raise SwayError("sway and Xwayland are not installed (apt-get install sway xwayland)")
        if os.geteuid() == 0:
            user = test_user()
            uid, gid = user.pw_uid, user.pw_gid
        else:
            uid, gid = os.getuid(), os.getgid()
        folder = Path(tempfile.mkdtemp(prefix="fp-sway-"))
        self.folder = folder
        runtime = folder / "run"
        runtime.mkdir(mode=0o700)
        config = folder / "config"
        config.write_text(
            f"output HEADLESS-1 mode {self.width}x{self.height}@{self.refresh_hz}Hz position 0 0\n"
            "default_border none\ndefault_floating_border none\nxwayland enable\n"
            f'for_window [title="{WINDOW_TITLE}"] fullscreen enable\n'
        )  # fmt: skip
        for path in (folder, runtime, config):
            os.chown(path, uid, gid)
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(folder), "XDG_RUNTIME_DIR": str(runtime),
               "WLR_BACKENDS": "headless", "WLR_RENDERER": "pixman", "WLR_LIBINPUT_NO_DEVICES": "1"}  # fmt: skip
        log = open(folder / "sway.log", "wb")  # noqa: SIM115 (sway writes it while it runs)
        as_user: dict[str, Any] = {"user": uid, "group": gid, "extra_groups": []} if os.geteuid() == 0 else {}
        try:
            self._proc = subprocess.Popen(
                ["sway", "-c", str(config)], env=env, cwd=folder, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True, **as_user,
            )  # fmt: skip
        finally:
            log.close()
        try:
            self._wait(runtime)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait(self, runtime: Path) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        assert self._proc is not None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise SwayError(f"sway exited with code {self._proc.returncode}: {self.log_tail()}")
            sockets = sorted(runtime.glob("wayland-*[0-9]"))
            ipc = sorted(runtime.glob("sway-ipc.*.sock"))
            if sockets and ipc:
                self.wayland_display, self.swaysock = str(sockets[0]), str(ipc[0])
                self.x_display = self._x_display()
                return
            time.sleep(0.05)
        raise SwayError(f"sway did not open its socket within {START_TIMEOUT_S:g} s: {self.log_tail()}")

    def _x_display(self) -> str:
        """Xwayland's display, as sway gives it to the programs it starts; this user (root) let in with xhost
        (Xwayland admits only its own user)."""
        assert self.folder is not None
        out = self.folder / "display"
        me = pwd.getpwuid(os.getuid()).pw_name
        self.swaymsg("exec", f"xhost +si:localuser:{me} >/dev/null 2>&1 || true && echo $DISPLAY > {out}.tmp "
                     f"&& mv {out}.tmp {out}")  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if out.exists() and out.read_text().strip():
                return out.read_text().strip()
            time.sleep(0.05)
        raise SwayError("sway did not tell its Xwayland display (is xwayland installed?)")

    def swaymsg(self, *args: str) -> str:
        done = subprocess.run(["swaymsg", "-s", self.swaysock, *args], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SwayError(f"swaymsg {' '.join(args)} failed: {(done.stdout + done.stderr).strip()}")
        return done.stdout

    def env(self) -> dict[str, str]:
        """What a recorder needs: WAYLAND_DISPLAY set, DISPLAY unset."""
        env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
        env["WAYLAND_DISPLAY"] = self.wayland_display
        return env

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def log_tail(self, lines: int = 5) -> str:
        if self.folder is None or not (self.folder / "sway.log").exists():
            return "no log"
        text = (self.folder / "sway.log").read_text(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:]) or "no output"

    def stop(self) -> None:
        if self._proc is not None:
            stop_process(self._proc)
            self._proc = None
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def __enter__(self) -> Sway:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
