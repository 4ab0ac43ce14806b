"""Tuned profiles: one TOML file per machine and display, written by ``framepipe tune``.

A profile lives in ``$XDG_CONFIG_HOME/framepipe`` (or ``~/.config/framepipe``) as
``profile-<host>-<cpu hash>-<W>x<H>.toml``. Its ``[screen]``, ``[timestamp]`` and ``[encode]``
tables are pipeline settings under the config's own key names; ``[machine]`` says where it
applies (host, CPU model, cores, display size); ``[tuned]``, ``[figures]`` and ``[probe]`` are
what tune measured.

``framepipe record`` and ``demo`` (the CLI process, before any stage starts) call
``for_record``: it returns the profile whose settings lie under the ``--config`` file and the
flags (the CLI says so in one line); a profile made for another machine, display, or with an
encoder that does not open here, is ignored with a one-line warning.
"""

from __future__ import annotations

import hashlib
import math
import os
import platform
import re
import socket
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipeline.config import EncodeConfig, PipelineConfig, build_section
from pipeline.errors import ConfigError, FramepipeError, SetupError

#: Bumped when the file's meaning changes; an older or newer profile is ignored with a warning.
VERSION = 1
#: Pipeline config tables a profile may set.
SETTINGS = ("screen", "timestamp", "encode")
HEADER = """\
# framepipe tuned profile, written by `framepipe tune`; `framepipe record` and `demo` use it.
# [screen], [timestamp] and [encode] are pipeline settings (see README, Pipeline config): a
# --config file and flags override them, --no-profile ignores this file. [machine] says where
# it applies: elsewhere it is ignored with a warning. Tune again after changing the machine.
"""


class ProfileError(FramepipeError):
    """A profile file that cannot be used; the message says why."""


@dataclass(frozen=True)
class Machine:
    """What a profile is keyed by: this host, its CPU, and the display's size."""

    hostname: str
    cpu: str  # CPU model name
    cores: int  # logical CPUs
    display: str  # "WIDTHxHEIGHT" of the whole X screen

    def key(self) -> str:
        """File-name key: host, a short hash of the CPU model, display size."""
        host = re.sub(r"[^A-Za-z0-9.-]+", "_", self.hostname) or "host"
        cpu = hashlib.sha1(f"{self.cpu}/{self.cores}".encode()).hexdigest()[:8]
        return f"{host}-{cpu}-{self.display}"

    def differences(self, here: Machine) -> list[str]:
        """How ``self`` (a profile's machine) differs from ``here``, for people."""
        names = {"hostname": "host", "cpu": "CPU", "cores": "cores", "display": "display"}
        return [
            f"{names[k]} {v} (this one: {getattr(here, k)})"
            for k, v in asdict(self).items() if v != getattr(here, k)
        ]  # fmt: skip


def cpu_model() -> str:
    """The CPU model name, from /proc/cpuinfo (else what the platform module says)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def display_size(display: str | None = None) -> str:
    """The whole X screen as ``WxH`` (``display``, else $DISPLAY); SetupError without one."""
    import mss

    try:
        with mss.MSS(display=display) as sct:
            whole = sct.monitors[0]
    except mss.ScreenShotError as exc:
        raise SetupError(f"cannot open the display ({exc}): set DISPLAY, or pass --display") from None
    return f"{whole['width']}x{whole['height']}"


def machine_here(display: str | None = None, size: str | None = None) -> Machine:
    """This machine, with the display's size (``size`` if known, else asked of the X server)."""
    return Machine(socket.gethostname(), cpu_model(), os.cpu_count() or 1, size or display_size(display))


def folder() -> Path:
    """Where profiles live: $XDG_CONFIG_HOME/framepipe, else ~/.config/framepipe."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "framepipe"


def path_for(machine: Machine) -> Path:
    return folder() / f"profile-{machine.key()}.toml"


@dataclass(frozen=True)
class Profile:
    """A profile file as read."""

    path: Path
    machine: Machine
    settings: dict[str, dict[str, Any]]  # screen/timestamp/encode tables, pipeline key names
    tuned: dict[str, Any]  # when and for what target: date, fps, region, trials ...
    figures: dict[str, Any]  # the chosen candidate's measured figures

    def target(self) -> str:
        region = self.tuned.get("region") or [0, 0, 0, 0]
        return f"{region[2]}x{region[3]} at {self.tuned.get('fps', 0):g} fps"

    def notice(self, config: PipelineConfig) -> str:
        """The one line record and demo print: which profile, when tuned, and whether it covers this recording."""
        region = self.tuned.get("region") or [0, 0, 0, 0]
        w, h = (int(v) for v in self.machine.display.split("x"))
        want = config.screen.region[2:] if config.screen.region else (w, h)
        fps = config.screen.fps
        line = f"framepipe: using tuned profile {self.path} (tuned {self.tuned.get('date', '?')} for {self.target()})"
        if fps > self.tuned.get("fps", 0) or want[0] * want[1] > region[2] * region[3]:
            line += f"; this recording asks more ({want[0]}x{want[1]} at {fps:g} fps): tune for it"
        return line


def read(path: Path) -> Profile:
    """Read and check a profile; ProfileError says what is wrong with it."""
    import tomllib  # here: a start without a profile does not pay for it

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ProfileError(f"cannot read it ({str(exc).splitlines()[0]})") from None
    tuned = data.get("tuned", {})
    if tuned.get("version") != VERSION:
        raise ProfileError(f"it is profile version {tuned.get('version')}, this framepipe reads {VERSION}")
    try:
        machine = Machine(**data["machine"])
        settings = {name: dict(data.get(name, {})) for name in SETTINGS}
        for name, table in settings.items():
            build_section(name, table)  # the pipeline config's own checks
    except (KeyError, TypeError) as exc:
        raise ProfileError(f"its [machine] table is incomplete ({exc})") from None
    except ConfigError as exc:
        raise ProfileError(str(exc)) from None
    return Profile(path, machine, settings, dict(tuned), dict(data.get("figures", {})))


def encoder_problem(profile: Profile) -> str | None:
    """Why the profile's encoder does not open here (None: it opens, or it is libx264)."""
    encoder = profile.settings["encode"].get("encoder", "libx264")
    if encoder == "libx264":
        return None
    from stages.video.encode import try_open

    region = profile.tuned.get("region") or [0, 0, 1280, 720]
    why = try_open(EncodeConfig(encoder=encoder), int(region[2]), int(region[3]), float(profile.tuned.get("fps", 60)))
    return None if why is None else f"encoder {encoder} does not open here ({why})"


def problems(profile: Profile, here: Machine) -> list[str]:
    """Why ``profile`` does not apply on ``here`` (empty: it does)."""
    found = profile.machine.differences(here)
    out = [f"it was made for {', '.join(found)}"] if found else []
    why = encoder_problem(profile)
    return [*out, why] if why else out


def newest_other(here: Machine) -> Path | None:
    """The most recently written profile in the folder that is not keyed for ``here``."""
    mine = path_for(here)
    others = [p for p in folder().glob("profile-*.toml") if p != mine and p.is_file()]
    return max(others, key=lambda p: p.stat().st_mtime, default=None)


def for_record(size: str | None = None) -> tuple[Profile | None, str | None]:
    """This machine's profile, whose settings lie under --config and flags (CLI process), or the one-line
    warning that says why the profile found is ignored (made elsewhere, unreadable). ``size``: the
    display's ``WxH`` when already known."""
    if not any(folder().glob("profile-*.toml")):
        return None, None  # none at all: no display to ask (a connection costs the start 30 ms)
    try:
        here = machine_here(size=size)
    except SetupError:
        return None, None  # no display: the recording itself will say so
    path = path_for(here)
    candidate = path if path.is_file() else newest_other(here)
    if candidate is None:
        return None, None
    try:
        profile = read(candidate)
        why = problems(profile, here)
    except ProfileError as exc:
        why = [str(exc)]
    if why:
        return None, (f"framepipe: warning: ignoring tuned profile {candidate}: {'; '.join(why)}; "
                      "run `framepipe tune` for this machine")
    return profile, None


# --- writing ------------------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(round(value, 4)) if math.isfinite(value) else "nan"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(value, (list, tuple)):
        items = [_toml_value(v) for v in value]
        if sum(map(len, items)) > 100:  # long lists (tune's trials): one item a line
            return "[\n" + "".join(f"    {item},\n" for item in items) + "]"
        return "[" + ", ".join(items) + "]"
    raise TypeError(f"cannot write {value!r} to TOML")


def to_toml(tables: Mapping[str, Mapping[str, Any]], header: str = "") -> str:
    """Tables of scalars and lists of scalars as TOML (all a profile or a trial config needs)."""
    lines = [header] if header else []
    for name, table in tables.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in table.items() if value is not None]
        lines.append("")
    return "\n".join(lines)


def write(machine: Machine, settings: Mapping[str, Mapping[str, Any]], tuned: Mapping[str, Any],
          figures: Mapping[str, Any], probe: Mapping[str, Any]) -> Path:
    """Write this machine's profile (replacing an older one atomically); return its path."""
    path = path_for(machine)
    tables: dict[str, Mapping[str, Any]] = {name: settings.get(name, {}) for name in SETTINGS}
    tables.update({"machine": asdict(machine), "tuned": {"version": VERSION, **tuned},
                   "figures": figures, "probe": probe})
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(to_toml(tables, HEADER), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise SetupError(f"cannot write the profile {path} ({exc.strerror}): check {path.parent}") from None
    return path
