"""The Python API's pure logic: keywords to config tables, the TOML writer, the command line, and the
Recorder's lifecycle against a fake recording process (a control-socket server; no display, no stages)."""

from __future__ import annotations

import math
import os
import stat
import sys
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from framepipe import api
from framepipe.api import Recorder, RecorderError, config_tables, dump_toml, record_argv
from pipeline.config import AudioConfig, EncodeConfig, PipelineConfig, ScreenConfig, TimestampConfig, load
from pipeline.errors import ConfigError, FramepipeError

TRICKY = ('say "hi"', "back\\slash\\", "tab\tnew\nline\r", "del\x7f nul\x00 bell\x07", "é 日本 🎤", "'single'", "")


def settings(**kwargs: Any) -> dict[str, Any]:
    """The tables the keywords write (empty ones left out)."""
    return {name: table for name, table in config_tables(None, kwargs).items() if table}


def roundtrip(config: PipelineConfig, tmp_path: Path) -> PipelineConfig:
    path = tmp_path / "c.toml"
    path.write_text(dump_toml(config_tables(config)), encoding="utf-8")
    return load(path)


# --- keywords ---------------------------------------------------------------------------------


def test_keywords_of_one_section_go_to_it() -> None:
    assert settings(fps=30, region=(0, 0, 640, 480), mode="vfr", crf=18, preset="fast", mix=True) == {
        "screen": {"fps": 30, "region": (0, 0, 640, 480)},
        "timestamp": {"mode": "vfr"},
        "encode": {"crf": 18, "preset": "fast"},
        "audio": {"mix": True},
    }
    assert settings(gop_seconds=2.0, output_height=720, overload="shed", bitrate_kbps=96) == {
        "encode": {"gop_seconds": 2.0, "output_height": 720, "overload": "shed"}, "audio": {"bitrate_kbps": 96},
    }  # fmt: skip


def test_section_prefixed_keywords() -> None:
    assert settings(encode_nice=0, screen_affinity=[0], audio_ring_seconds=3.0, screen_fps=24) == {
        "encode": {"nice": 0}, "screen": {"affinity": [0], "fps": 24}, "audio": {"ring_seconds": 3.0},
    }  # fmt: skip


@pytest.mark.parametrize("name", ["nice", "affinity", "ring_seconds"])
def test_a_key_of_several_sections_needs_its_section(name: str) -> None:
    with pytest.raises(ConfigError, match=f"several sections.*encode_{name}|several sections.*screen_{name}") as err:
        settings(**{name: 1})
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["fsp", "encode_fps", "video_crf", "sources_x", "screen_"])
def test_an_unknown_keyword_is_one_line_naming_it_and_the_allowed(name: str) -> None:
    with pytest.raises(ConfigError) as err:
        settings(**{name: 1})
    message = str(err.value)
    assert f"unknown setting {name};" in message and "fps" in message and "encode_nice" in message
    assert "\n" not in message
    assert isinstance(err.value, FramepipeError)


def test_audio_keyword() -> None:
    assert settings(audio=False) == {"audio": {"sources": ()}}
    assert settings(audio=True) == {}  # on: the config's (here the default or the profile's) sources
    assert settings(audio=["system", "default"]) == {"audio": {"sources": ("system", "default")}}
    assert settings(audio="pulse:mic") == {"audio": {"sources": ("pulse:mic",)}}
    silent = PipelineConfig(audio=AudioConfig(sources=()))
    assert config_tables(silent, {"audio": True})["audio"]["sources"] == AudioConfig().sources
    system = PipelineConfig(audio=AudioConfig(sources=("system",)))
    assert config_tables(system, {"audio": True})["audio"]["sources"] == ("system",)
    assert config_tables(system, {"audio": False})["audio"]["sources"] == ()
    with pytest.raises(ConfigError, match="audio takes"):
        settings(audio=3)


def test_vfr_keyword() -> None:
    assert settings(vfr=True) == {"timestamp": {"mode": "vfr"}}
    assert settings(vfr=False) == {"timestamp": {"mode": "cfr"}}
    with pytest.raises(ConfigError, match="vfr takes"):
        settings(vfr="yes")


@pytest.mark.parametrize("pair", [{"fps": 30, "screen_fps": 60}, {"audio": False, "sources": ["x"]},
                                  {"vfr": True, "mode": "cfr"}])  # fmt: skip
def test_two_keywords_for_one_key_are_refused(pair: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="both set"):
        settings(**pair)


def test_none_means_not_given() -> None:
    assert settings(fps=None, crf=None, audio=None) == {}


def test_settings_override_the_config(tmp_path: Path) -> None:
    base = PipelineConfig(screen=ScreenConfig(fps=30.0, monitor=2), encode=EncodeConfig(crf=30))
    config = Recorder(tmp_path / "o.mkv", config=base, fps=50, encode_nice=0, audio=False).config
    assert config.screen == ScreenConfig(fps=50.0, monitor=2)
    assert config.encode == EncodeConfig(crf=30, nice=0)
    assert config.audio.sources == ()


def test_the_constructor_checks_values_in_the_callers_process(tmp_path: Path) -> None:
    out = tmp_path / "o.mkv"
    assert Recorder(out, vfr=True, crf=20).config == PipelineConfig(
        timestamp=TimestampConfig(mode="vfr"), encode=EncodeConfig(crf=20))
    cases: list[tuple[dict[str, Any], str]] = [
        ({"crf": 99}, "encode.crf"), ({"region": (0, 0, 8, 8)}, "screen.region"), ({"fps": "fast"}, "screen.fps"),
        ({"preset": "turbo"}, "encode.preset"), ({"fps": object()}, "screen.fps"), ({"bogus": 1}, "unknown setting"),
    ]
    for bad, match in cases:
        with pytest.raises(ConfigError, match=match):
            Recorder(out, **bad)
    with pytest.raises(ConfigError, match="output"):
        Recorder()
    for duration in (0, -1, "5", True):
        with pytest.raises(ConfigError, match="duration"):
            Recorder(out, duration=duration)  # type: ignore[arg-type]


# --- the TOML writer ------------------------------------------------------------------------------


def test_roundtrip_of_defaults_and_of_every_setting(tmp_path: Path) -> None:
    assert roundtrip(PipelineConfig(), tmp_path) == PipelineConfig()
    config = PipelineConfig(
        screen=ScreenConfig(fps=59.94, monitor=0, region=(10, 20, 640, 480), backend="mss", ring_seconds=0.5,
                            affinity=(0, 1), nice=-1),
        timestamp=TimestampConfig(mode="vfr", affinity=(1,)),
        encode=EncodeConfig(encoder="h264_nvenc", preset="p4 \"x\"", crf=0, threads=4, thread_type="SLICE",
                            gop_seconds=2.0, output_height=720, overload="shed", nice=19),
        audio=AudioConfig(sources=TRICKY[:-1], mix=True, gains=(1.0, 0.5, 2.0, 0.0, 10.0, 1e-9), codec="opus",
                          bitrate_kbps=64, channels=1, ring_seconds=3.0, max_delay_ms=100),
    )
    assert roundtrip(config, tmp_path) == config


def test_floats_stay_floats_and_ints_ints() -> None:
    values = {"one": 1.0, "int": 1, "big": 1e20, "tiny": 5e-324, "neg": -0.0, "third": 1 / 3, "huge": 10**30,
              "t": True, "f": False, "inf": math.inf, "ninf": -math.inf, "mixed": [1, 2.0, "x", [3]], "none": None}
    back = tomllib.loads(dump_toml({"t": values}))["t"]
    expected = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items() if v is not None}
    assert back == expected
    assert {k: type(v) for k, v in back.items()} == {k: type(v) for k, v in expected.items()}
    assert math.isnan(tomllib.loads(dump_toml({"t": {"n": math.nan}}))["t"]["n"])


@pytest.mark.parametrize("text", TRICKY)
def test_tricky_strings(text: str) -> None:
    assert tomllib.loads(dump_toml({"t": {"s": text, "a": [text, text]}}))["t"] == {"s": text, "a": [text, text]}


@given(st.text())
def test_any_string_roundtrips(text: str) -> None:
    assert tomllib.loads(dump_toml({"t": {"s": text}}))["t"]["s"] == text


def test_keys_tables_and_arrays_of_tables() -> None:
    text = dump_toml({"screen": {}, "odd key": {"a.b": 1}, "output": [{"kind": "file", "path": "a.mkv"},
                                                                    {"kind": "stream", "url": "rtmp://h/x"}]})
    assert tomllib.loads(text) == {"screen": {}, "odd key": {"a.b": 1},
                                   "output": [{"kind": "file", "path": "a.mkv"},
                                              {"kind": "stream", "url": "rtmp://h/x"}]}  # fmt: skip
    assert tomllib.loads(dump_toml({"t": {"p": Path("/x/y z")}})) == {"t": {"p": "/x/y z"}}


@pytest.mark.parametrize("bad", [{"t": {"v": object()}}, {"t": {"v": {"nested": 1}}}, {"t": 3},
                                 {"t": {"s": "\ud800"}}])  # fmt: skip
def test_what_toml_cannot_hold_is_a_config_error(bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        dump_toml(bad)


# --- the command line ---------------------------------------------------------------------------


def test_record_argv() -> None:
    head = [sys.executable, "-m", "framepipe", "record"]
    assert record_argv("/tmp/c.toml", "out.mkv") == [*head, "out.mkv", "--config", "/tmp/c.toml", "--quiet"]
    assert record_argv(Path("/tmp/c.toml"), Path("a b.mp4"), duration=5, overwrite=True, stats_json="s.json",
                       profile=False) == [*head, "a b.mp4", "--config", "/tmp/c.toml", "--duration", "5.0",
                                          "--overwrite", "--stats-json", "s.json", "--no-profile", "--quiet"]
    assert record_argv("c.toml")[len(head):] == ["--config", "c.toml", "--quiet"]
    assert record_argv("c.toml", "-x.mkv")[len(head)] == os.path.join(os.curdir, "-x.mkv")
    assert record_argv("c.toml", duration=0.1)[-2] == "0.1"


# --- the lifecycle, against a fake recording process -------------------------------------------

FAKE = r"""
import os, select, sys
from pathlib import Path
from pipeline.control import Reply, Server
out, config = sys.argv[1], sys.argv[2]
print("fake: config", oct(os.stat(config).st_mode & 0o777), Path(config).read_text().splitlines()[0], flush=True)
server, clients, state, asked = Server(), [], "starting", 0
while True:
    ready = select.select([server, *clients], [], [], 20)[0] or sys.exit(3)
    for conn in ready:
        if conn is server:
            client = server.accept()
            clients += [client] if client else []
            continue
        try:
            req = conn.read()
        except EOFError:
            clients.remove(conn)
            continue
        if req is None:
            continue
        clients.remove(conn)
        if isinstance(req, Reply):
            conn.reply(req)
            continue
        asked += 1
        state = "recording" if state == "starting" and asked > 2 else state
        state = {"pause": "paused", "resume": "recording", "toggle-pause": {"paused": "recording"}.get(state, "paused")
                 }.get(req.verb, state)
        result = {"state": state, "outputs": [out], "sid": os.getsid(0), "pgid": os.getpgrp(), "args": req.args}
        if req.verb == "save-replay":
            result = {"path": out + ".replay.mkv"}
        conn.reply(Reply(True, result))
        if req.verb == "stop":
            server.close()
            sys.exit(0)
"""


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[list[str]]:
    """record_argv replaced by the fake recording; returns the argv each start asked for."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parent.parent))
    asked: list[list[str]] = []

    def argv(config_path: Any, output: Any = None, **flags: Any) -> list[str]:
        asked.append(record_argv(config_path, output, **flags))
        return [sys.executable, "-c", FAKE, str(output), str(config_path)]

    monkeypatch.setattr(api, "record_argv", argv)
    return asked


def test_lifecycle(fake: list[list[str]], tmp_path: Path) -> None:
    out = str(tmp_path / "o.mkv")
    rec = Recorder(out, duration=60, fps=24, log=str(tmp_path / "rec.log"))
    assert rec.pid is None and rec.returncode is None and rec.stop() == []
    with pytest.raises(RecorderError, match="not started"):
        rec.status()
    assert rec.start() is rec and rec.pid is not None
    assert "--duration" in fake[0] and fake[0][-1] == "--quiet"
    config_path = Path(fake[0][fake[0].index("--config") + 1])
    assert not config_path.exists()  # removed once the child read it
    status = rec.status()
    assert status["state"] == "recording" and status["pid"] == rec.pid
    assert status["sid"] == rec.pid == status["pgid"] != os.getsid(0)  # its own session and process group
    assert rec.pause()["state"] == "paused" and rec.toggle_pause()["state"] == "recording"
    assert rec.toggle_pause()["state"] == "paused" and rec.resume()["state"] == "recording"
    assert rec.marker("take 2")["args"] == {"text": "take 2"}
    assert rec.save_replay(5) == out + ".replay.mkv"
    with pytest.raises(RecorderError, match="already started"):
        rec.start()
    assert rec.stop() == [out] and rec.returncode == 0
    assert rec.stop() == [out]  # harmless, same list
    log = (tmp_path / "rec.log").read_text()
    assert "fake: config 0o600 [screen]" in log


def test_a_child_that_dies_first_is_a_recorder_error_with_its_last_line(
        fake: list[list[str]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    script = "import sys; print('starting'); print('framepipe: no display :99\\n', file=sys.stderr); sys.exit(2)"
    monkeypatch.setattr(api, "record_argv", lambda *a, **k: [sys.executable, "-c", script])
    rec = Recorder(tmp_path / "o.mkv")
    with pytest.raises(RecorderError, match=r"exit status 2\): framepipe: no display :99 \(log: ") as err:
        rec.start()
    assert isinstance(err.value, RuntimeError) and isinstance(err.value, FramepipeError)
    assert rec.log_path is not None and stat.S_IMODE(rec.log_path.stat().st_mode) == 0o600
    rec.log_path.unlink()


def test_context_manager_stops_and_never_masks_the_body(fake: list[list[str]], tmp_path: Path) -> None:
    out, log = str(tmp_path / "o.mkv"), str(tmp_path / "rec.log")
    with Recorder(out, log=log) as rec:
        assert rec.status()["state"] == "recording"
    assert rec.returncode == 0 and rec.stop() == [out]
    with pytest.raises(KeyError, match="body"), Recorder(out, log=log) as rec:
        raise KeyError("body")
    assert rec.returncode == 0
    rec = Recorder(out, log=log)

    def broken(timeout: float = 90) -> list[str]:
        raise RecorderError("stop broke")

    with pytest.raises(ValueError, match="body") as err, rec:
        rec.stop = broken  # type: ignore[method-assign]
        raise ValueError("body")
    assert err.value.__notes__ == ["and stopping the recording failed: stop broke"]
    del rec.stop
    assert rec.stop() == [out]


def test_audio_true_turns_on_a_silent_config(tmp_path: Path) -> None:
    base = replace(PipelineConfig(), audio=AudioConfig(sources=()))
    assert Recorder(tmp_path / "o.mkv", config=base, audio=True).config.audio.sources == AudioConfig().sources
