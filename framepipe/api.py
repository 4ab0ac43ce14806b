"""The Python API: ``Recorder`` runs ``framepipe record`` as a child process and steers it over its control socket.

The caller's process checks the settings (``pipeline.config.load`` on the TOML it writes), spawns the
recording in a session of its own and then only talks to it through ``pipeline.control.request``: the
recording survives a crash of the caller, and Ctrl+C in the caller's terminal does not reach it.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, fields
from pathlib import Path
from types import TracebackType
from typing import Any

from pipeline.config import SECTIONS, AudioConfig, PipelineConfig, load
from pipeline.control import ControlError, request
from pipeline.errors import ConfigError, FramepipeError

START_TIMEOUT_S = 30.0  # start(): how long the recording may take to reach "recording"
TERM_TIMEOUT_S = 15.0  # a recording that never started: SIGTERM, then the whole group is killed
POLL_S = 0.05

# --- settings as config tables --------------------------------------------------------------

_SECTIONS_OF: dict[str, tuple[str, ...]] = {
    f.name: tuple(s for s, c in SECTIONS.items() if f.name in {g.name for g in fields(c)})
    for cls in SECTIONS.values() for f in fields(cls)
}  # each config key: the sections that have it


def _place(name: str, value: Any) -> tuple[str, str, Any]:
    """One keyword as (section, key, value); ConfigError in one line naming what is allowed."""
    if name == "audio":
        if isinstance(value, bool):
            return "audio", "sources", value  # on/off: config_tables resolves it against the config
        if isinstance(value, str):
            return "audio", "sources", (value,)
        if isinstance(value, (list, tuple)):
            return "audio", "sources", tuple(value)
        raise ConfigError(f"audio takes True, False, a source name or a list of them, not {value!r}")
    if name == "vfr":
        if not isinstance(value, bool):
            raise ConfigError(f"vfr takes True or False, not {value!r}")
        return "timestamp", "mode", "vfr" if value else "cfr"
    sections = _SECTIONS_OF.get(name, ())
    if len(sections) == 1:
        return sections[0], name, value
    if len(sections) > 1:
        qualified = ", ".join(f"{s}_{name}" for s in sections)
        raise ConfigError(f"setting {name} is in several sections: write one of {qualified}")
    prefix, _, key = name.partition("_")
    if prefix in SECTIONS and prefix in _SECTIONS_OF.get(key, ()):
        return prefix, key, value
    plain = sorted({"audio", "vfr", *(n for n, s in _SECTIONS_OF.items() if len(s) == 1)})
    raise ConfigError(f"unknown setting {name}; allowed: {', '.join(plain)}, or section_key for any key "
                      "(e.g. encode_nice)")


def config_tables(config: PipelineConfig | None = None, settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The TOML tables of ``config`` (all of it) with ``settings`` over it; without a config only the settings
    given are written, so this machine's tuned profile still decides the rest. A None setting is not given."""
    tables: dict[str, Any] = {name: {} for name in SECTIONS}
    if config is not None:
        tables.update({name: asdict(getattr(config, name)) for name in SECTIONS})
        if config.outputs:  # the [[output]] tables
            tables["output"] = [asdict(o) for o in config.outputs]
    given: dict[tuple[str, str], str] = {}
    for name, value in (settings or {}).items():
        if value is None:
            continue
        section, key, value = _place(name, value)
        if (section, key) in given:
            raise ConfigError(f"{given[section, key]} and {name} both set {section}.{key}: give one of them")
        given[section, key] = name
        if name == "audio" and isinstance(value, bool):  # off: no sources; on: the config's, or the default
            if not value or tables["audio"].get("sources") in ((), []):
                tables["audio"]["sources"] = AudioConfig().sources if value else ()
            continue
        tables[section][key] = value
    return tables


# --- a tiny TOML writer -----------------------------------------------------------------------

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _string(text: str, key: str) -> str:
    if any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        raise ConfigError(f"{key} holds a lone surrogate character, which a config file cannot hold")
    body = "".join(_ESCAPES.get(c) or (f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F else c) for c in text)
    return f'"{body}"'


def _key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else _string(name, name)


def _value(value: Any, key: str) -> str:
    """One TOML value: bools, ints, floats (always written as floats), strings, paths, arrays."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)  # has "." or "e", or is inf, -inf, nan: TOML reads a float back
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, str):
        return _string(value, key)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v, key) for v in value) + "]"
    raise ConfigError(f"{key} = {value!r} cannot go in a config file: give numbers, strings, True/False or lists")


def dump_toml(tables: Mapping[str, Any]) -> str:
    """Tables (dicts of values) and arrays of tables (lists of dicts) as TOML text; None values are left out."""
    lines: list[str] = []
    for name, body in tables.items():
        if isinstance(body, Mapping):
            groups = [(f"[{_key(name)}]", body)]
        elif isinstance(body, (list, tuple)) and all(isinstance(b, Mapping) for b in body):
            groups = [(f"[[{_key(name)}]]", b) for b in body]
        else:
            raise ConfigError(f"[{name}] must be a table of settings or a list of them, not {body!r}")
        for header, table in groups:
            lines.append(header)
            lines += [f"{_key(k)} = {_value(v, f'{name}.{k}')}" for k, v in table.items() if v is not None]
            lines.append("")
    return "\n".join(lines)


def _write_private(text: str, suffix: str) -> Path:
    """A new 0600 temp file holding ``text``."""
    fd, name = tempfile.mkstemp(prefix="framepipe-", suffix=suffix)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)
    return Path(name)


def record_argv(config_path: str | os.PathLike[str], output: str | os.PathLike[str] | None = None, *,
                duration: float | None = None, overwrite: bool = False, stats_json: str | None = None,
                profile: bool = True) -> list[str]:
    """The command line of the recording process (``framepipe record ... --quiet``)."""
    argv = [sys.executable, "-m", "framepipe", "record"]
    if output is not None:
        path = os.fspath(output)
        argv.append(os.path.join(os.curdir, path) if path.startswith("-") else path)  # never read as a flag
    argv += ["--config", os.fspath(config_path)]
    if duration is not None:
        argv += ["--duration", repr(float(duration))]
    argv += ["--overwrite"] * overwrite + (["--stats-json", stats_json] if stats_json else [])
    return argv + ["--no-profile"] * (not profile) + ["--quiet"]


# --- the recorder ----------------------------------------------------------------------------------


class RecorderError(FramepipeError, RuntimeError):
    """The recording process could not start, or did not end in time; the message says why."""


class Recorder:
    """One recording in a child process, steered from the caller's process.

    Settings are config keys as keywords (``fps=60``, ``crf=20``, ``encode_nice=0``, ``audio=False``,
    ``vfr=True``), over ``config`` if given. Dropping a Recorder, or the caller dying, does NOT stop the
    recording (there is deliberately no ``__del__``): it ends at ``duration``, ``stop()``,
    ``framepipe ctl stop --pid PID`` or a SIGINT/SIGTERM to ``pid``.
    """

    def __init__(self, output: str | os.PathLike[str] | None = None, *, config: PipelineConfig | None = None,
                 duration: float | None = None, overwrite: bool = False, stats_json: str | None = None,
                 log: str | None = None, profile: bool = True, **settings: Any) -> None:
        if duration is not None and (isinstance(duration, bool) or not isinstance(duration, (int, float))
                                     or not duration > 0):
            raise ConfigError(f"duration takes a number of seconds above 0, not {duration!r}")
        self.tables = config_tables(config, settings)
        if output is None and not self.tables.get("output"):
            raise ConfigError("Recorder needs an output path, or a config with [[output]] tables")
        self.toml = dump_toml(self.tables)
        check = _write_private(self.toml, ".toml")
        try:
            self.config = load(check)  # a bad value fails here, in the caller's process (without the profile)
        finally:
            check.unlink(missing_ok=True)
        self.output, self.duration, self.overwrite, self.stats_json = output, duration, overwrite, stats_json
        self.profile = profile
        self.log_path: Path | None = Path(log) if log else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._outputs: list[str] = []

    @property
    def pid(self) -> int | None:
        """The recording process's id (None before start)."""
        return self._proc.pid if self._proc else None

    @property
    def returncode(self) -> int | None:
        """The recording's exit status once it ended: 0 all went well, 1 a stage failed (the file is kept)."""
        return self._proc.poll() if self._proc else None

    def start(self, timeout: float = START_TIMEOUT_S) -> Recorder:
        """Spawn the recording and wait until its status says "recording"; RecorderError if it ends first."""
        if self._proc is not None:
            raise RecorderError(f"this Recorder already started (pid {self._proc.pid}): make a new one")
        config_path = _write_private(self.toml, ".toml")
        self.log_path = self.log_path or _write_private("", ".log")  # kept: read it when something went wrong
        argv = record_argv(config_path, self.output, duration=self.duration, overwrite=self.overwrite,
                           stats_json=self.stats_json, profile=self.profile)
        try:
            with open(self.log_path, "ab") as log:
                self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                              start_new_session=True, close_fds=True)
            self._wait_recording(self._proc, time.monotonic() + timeout)
        finally:
            config_path.unlink(missing_ok=True)  # read by the child before it listens
        return self

    def _wait_recording(self, proc: subprocess.Popen[bytes], deadline: float) -> None:
        while True:
            code = proc.poll()
            if code == 0:  # a short duration ran to its end before we looked
                self._outputs = self._outputs or ([os.fspath(self.output)] if self.output is not None else [])
                return
            if code is not None:
                raise RecorderError(f"the recording ended before it started (exit status {code}): "
                                    f"{self._last_line()} (log: {self.log_path})")
            with contextlib.suppress(ControlError):
                if self._ask("status").get("state") == "recording":
                    return
            if time.monotonic() > deadline:  # SIGTERM (a clean stop), then kill the whole group
                proc.terminate()
                try:
                    proc.wait(TERM_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                raise RecorderError(f"the recording did not reach \"recording\" in time; log: {self.log_path}")
            time.sleep(POLL_S)

    def _last_line(self) -> str:
        """The log's last non-empty line: the child's one-line error (the log is short with --quiet)."""
        try:
            lines = Path(self.log_path or "").read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return "no log"
        return next((line.strip() for line in reversed(lines) if line.strip()), "no message")

    def _ask(self, verb: str, args: dict[str, Any] | None = None, timeout_s: float | None = None) -> dict[str, Any]:
        if self._proc is None:
            raise RecorderError(f"the recording is not started: call start() before {verb}")
        result = request(verb, args, pid=self._proc.pid, timeout_s=timeout_s)
        if isinstance(result.get("outputs"), list):
            self._outputs = [str(p) for p in result["outputs"]]
        return result

    def status(self) -> dict[str, Any]:
        """The recording's status, as ``framepipe ctl status --json`` prints it."""
        return self._ask("status")

    def pause(self) -> dict[str, Any]:
        return self._ask("pause")

    def resume(self) -> dict[str, Any]:
        return self._ask("resume")

    def toggle_pause(self) -> dict[str, Any]:
        return self._ask("toggle-pause")

    def marker(self, text: str) -> dict[str, Any]:
        """Put a named marker at this moment of the recording."""
        return self._ask("marker", {"text": text})

    def save_replay(self, seconds: float | None = None) -> str:
        """Save the replay buffer's last ``seconds`` (all of it if None); the saved file's path."""
        return str(self._ask("save-replay", {"seconds": seconds})["path"])

    def stop(self, timeout: float = 90.0) -> list[str]:
        """Stop, wait for the process to end, return the output paths; harmless when it already ended."""
        proc = self._proc
        if proc is None:
            return list(self._outputs)
        deadline = time.monotonic() + timeout
        if proc.poll() is None:
            with contextlib.suppress(ControlError):  # it may be ending on its own: then only wait
                self._ask("stop", timeout_s=timeout)
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise RecorderError(f"recording {proc.pid} did not end within {timeout:g} s of stop; "
                                    f"log: {self.log_path}") from None
        return list(self._outputs)

    def __enter__(self) -> Recorder:
        return self if self._proc is not None else self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc is None:
            self.stop()
            return
        try:
            self.stop()
        except Exception as err:  # the body's exception is the one raised; this one rides along as a note
            exc.add_note(f"and stopping the recording failed: {err}")
