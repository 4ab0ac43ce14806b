"""``framepipe record``: turn a config with its outputs into a running pipeline.

Runs in the supervisor process: checks the output paths, has the planner build the graph, runs it
(answering the control plane: ``status`` is built here), shows the live line and writes the stats.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import sys
import tempfile
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from framepipe.plan import plan
from framepipe.targets import likely_stages
from pipeline.clock import NS_PER_S, now_ns
from pipeline.config import AudioConfig, PipelineConfig
from pipeline.errors import SetupError
from pipeline.graph import RingSpec
from pipeline.hosts import StageHosts
from pipeline.ring import ring_bytes
from pipeline.stage import StageState
from pipeline.steering import RecordingState
from pipeline.supervisor import Outcome, Supervisor
from stages.audio.devices import in_audio_process, pulse_answers
from stages.outputs.formats import container_for, frame_rate, output_size, public_url
from stages.outputs.paths import release, reserve

REACH_TIMEOUT_S = 5.0  # a lone stream's server must answer a TCP connect within this
RING_NEAR_FULL = 0.75  # a peak fill past this fraction of the video ring is said after the run
SERIES_LIMIT = 2000  # ring fill samples kept in the stats (2 a second; halved when full)


@dataclass(frozen=True)
class RecordJob:
    """One recording as people asked for it (its outputs are in the config)."""

    config: PipelineConfig
    duration_s: float | None = None
    overwrite: bool = False
    stats_json: str | None = None
    status_line: bool = True
    dry_run: bool = False  # print the graph, run nothing


def check_output(path: str, overwrite: bool) -> None:
    """Fail before anything starts if the recording cannot be written (nothing is created)."""
    container_for(path)
    check_writable(path, overwrite)


def check_writable(path: str, overwrite: bool) -> None:
    """Fail if ``path`` cannot be created (its folder is missing or read-only, or it exists)."""
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise SetupError(f"folder {folder} does not exist: create it first or choose another output path")
    try:  # a real probe: os.access() says yes to root even on read-only file systems
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise SetupError(
            f"cannot write in folder {folder} ({exc.strerror}): choose an output path you may write to"
        ) from None
    try:
        info = os.lstat(target)
    except FileNotFoundError:
        return
    except OSError as exc:  # a name too long, a folder we may not look in
        raise SetupError(f"cannot write {str(path)[:60]} ({exc.strerror}): choose another output name") from None
    if stat.S_ISDIR(info.st_mode):
        raise SetupError(f"{path} is a folder: give a file name such as {target / 'recording.mkv'}")
    if stat.S_ISLNK(info.st_mode) and not overwrite:
        raise SetupError(f"{path} is a symlink: framepipe never writes through one; remove it, pass --overwrite "
                         "to replace the link itself, or choose another name")  # fmt: skip
    if not overwrite:
        raise SetupError(f"{path} exists: pass --overwrite to replace it, or choose another name")


class RingSeries:
    """Ring fill over time, from the screen stage's periodic stats (supervisor); bounded for long runs."""

    def __init__(self, limit: int = SERIES_LIMIT) -> None:
        self.limit = limit
        self.every = 1  # keep one report in this many; doubles each time the series is halved
        self.reports = 0
        self.last_ns: int | None = None
        self.rows: list[tuple[float, int, int, int]] = []  # (running time s, ring fill, captured, dropped)

    def __call__(self, sup: Supervisor) -> None:
        screen = sup.outcome.stages.get("screen")
        stats = screen.stats if screen is not None else {}
        t = stats.get("recorded_ns")
        if t is None or t == self.last_ns:
            return
        self.last_ns = t
        self.reports += 1
        if self.reports % self.every:
            return
        dropped = stats.get("dropped_ring_full", 0) + stats.get("dropped_late", 0)
        self.rows.append((t / NS_PER_S, stats.get("ring_fill", 0), stats.get("captured", 0), dropped))
        if len(self.rows) >= self.limit:
            self.rows = self.rows[::2]
            self.every *= 2

    def as_dict(self) -> dict[str, Any]:
        """Columns for the stats JSON."""
        columns = zip(*self.rows, strict=True) if self.rows else ((), (), (), ())
        t, fill, captured, dropped = (list(c) for c in columns)
        return {"t_s": t, "ring_fill": fill, "captured": captured, "dropped": dropped}


def starting_line(waiting: list[str]) -> str:
    """The live line before the start: which stages are not ready yet (audio learns its clock first)."""
    why = " (audio learns its input's clock first)" if "audio" in waiting else ""
    return f"○ starting: waiting for {', '.join(waiting) or 'the go'}{why}; Ctrl+C now records nothing"


def _rate(then_ns: int, then: int, at_ns: int, count: int) -> float:
    """``count`` less ``then`` a second, over the time between them (0 for a span under 0.25 s)."""
    span = (at_ns - then_ns) / NS_PER_S
    return (count - then) / span if span > 0.25 else 0.0


class StatusLine:
    """One live line on the terminal (supervisor): time recorded, frames captured and written a second over
    the last second (not since the start: that ratio lags by the encoder's latency), drops, ring fill;
    cut to the terminal's width, so the in-place updates never wrap."""

    def __init__(self, fps: float, enabled: bool) -> None:
        self.fps = fps
        self.enabled = enabled
        self.last = 0
        self.shown = False
        # (when the screen's stats came, captured, when the encoder's came, written), looked at 0.5 s apart
        self.history: deque[tuple[int, int, int, int]] = deque(maxlen=3)

    def __call__(self, sup: Supervisor) -> None:
        now = now_ns()
        if not self.enabled or now - self.last < NS_PER_S // 2:
            return
        self.last = now
        if not sup.outcome.base_time:
            self._show(starting_line([n for n, r in sup.outcome.stages.items() if r.state == StageState.STARTING]))
            return
        self._show(self.line(sup, now))

    def line(self, sup: Supervisor, now: int) -> str:
        grab = sup.outcome.stages["screen"]
        screen = grab.stats
        enc = sup.outcome.stages.get("encode")
        written, written_ns = (enc.stats.get("packets", 0), enc.stats_ns) if enc is not None else (0, 0)
        self.history.append((grab.stats_ns, screen.get("captured", 0), written_ns, written))
        old, new = self.history[0], self.history[-1]
        # each count over the time between the two stats messages it came in (a stage's stats come every
        # 0.5 s at its own phase: over the line's own clock, one more or one fewer message read 73 or 48 fps)
        rate_in, rate_out = _rate(old[0], old[1], new[0], new[1]), _rate(old[2], old[3], new[2], new[3])
        dropped = screen.get("dropped_ring_full", 0) + screen.get("dropped_late", 0)
        fill = screen.get("ring_fill", 0)
        slots = screen.get("ring_slots", 1) or 1
        steering = sup.steering
        elapsed = max(0.0, (now - sup.outcome.base_time) / NS_PER_S)
        paused_s = steering.pauses.paused_ns(now - sup.outcome.base_time) / NS_PER_S if steering else 0.0
        mark = "❚❚ PAUSED" if steering is not None and steering.state is RecordingState.PAUSED else "● REC"
        pause = f"  paused {paused_s:.1f} s" if paused_s else ""
        return (f"{mark} {elapsed - paused_s:6.1f} s{pause}  {rate_in:3.0f} fps in, {rate_out:3.0f} written  "
                f"dropped {dropped}  ring {fill}/{slots}")

    def _show(self, text: str) -> None:
        width = shutil.get_terminal_size((120, 24)).columns - 1
        sys.stderr.write(f"\r{text[:width]}\x1b[K")
        sys.stderr.flush()
        self.shown = True

    def end(self) -> None:
        if self.shown:
            sys.stderr.write("\n")


def file_outputs(enc: dict[str, Any], config: PipelineConfig) -> list[dict[str, Any]]:
    """Each output's own counts (from fp-encode's stats: drops by cause, and what its kind adds: bytes sent,
    memory held), named by its path or URL even before the first report."""
    reported = enc.get("outputs") or []
    out = []
    for i, o in enumerate(config.outputs):
        counts = reported[i] if i < len(reported) else {}
        dropped = {"behind": 0, "failed": 0} | {k[len("dropped_"):]: v for k, v in counts.items()
                                                 if k.startswith("dropped_")}  # fmt: skip
        rest = {k: v for k, v in counts.items() if not k.startswith("dropped_") and k not in ("kind", "path")}
        where = o.path or (public_url(o.url) if o.url else "")
        out.append({**rest, "kind": o.kind, "path": where, "state": counts.get("state", "open"),
                    "frames": counts.get("frames", 0), "bytes": counts.get("bytes", 0), "dropped": dropped})
    return out


def frame_counts(st: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Frames by stage, and drops by stage and cause (stats JSON and ``ctl status``)."""
    screen, ts, enc = st.get("screen", {}), st.get("timestamp", {}), st.get("encode", {})
    dropped = {
        "ring_full": screen.get("dropped_ring_full", 0),
        "capture_late": screen.get("dropped_late", 0),
        "encoder_shed": enc.get("shed", 0),
    }
    return {
        "captured": screen.get("captured", 0),
        "handed_on": ts.get("frames", 0),
        "encoded": enc.get("encoded", 0),
        "written": enc.get("packets", 0),
        "paused": enc.get("paused_frames", 0),
        "repeats": ts.get("repeats", 0),
        "repeats_not_written": enc.get("repeats_not_written", 0),
        "skips": ts.get("skips", 0),
        "dropped": sum(dropped.values()),
        "dropped_by_reason": dropped,
    }


def status_of(config: PipelineConfig) -> Any:
    """The ``ctl status`` document's recording part (the supervisor adds state and times)."""

    def status(sup: Supervisor) -> dict[str, Any]:
        st = {name: rec.stats for name, rec in sup.outcome.stages.items()}
        screen, enc = st.get("screen", {}), st.get("encode", {})
        outputs = file_outputs(enc, config)
        drops = {name: {k[len("dropped_"):]: v for k, v in stats.items() if k.startswith("dropped_")}
                 for name, stats in st.items()}  # fmt: skip
        drops["outputs"] = {o["path"] or o["kind"]: o["dropped"] for o in outputs}
        audio = audio_section(st.get("audio", {}), enc)
        return {
            "pid": os.getpid(),
            "outputs": [o["path"] for o in outputs if o["path"]],
            "output_details": outputs,
            "fps": config.screen.fps,
            "frames": frame_counts(st),
            "drops": drops,
            "ring": {"fill": screen.get("ring_fill", 0), "slots": screen.get("ring_slots", 0),
                     "peak": screen.get("ring_peak", 0)},
            "audio": audio["sources"] if audio else {},
            "audio_tracks": audio["tracks"] if audio else [],
            "warnings": sup.outcome.warnings[-20:],
            "errors": sup.outcome.errors[-20:],
        }

    return status


def stats_of(
    job: RecordJob, outcome: Outcome, rect: dict[str, int], ring: RingSpec, series: RingSeries | None = None,
    steering: dict[str, Any] | None = None, staging: RingSpec | None = None,
) -> dict[str, Any]:
    """The --stats-json document: every counter, by stage, with drops by reason (and ring fill over time)."""
    st = {name: rec.stats for name, rec in outcome.stages.items()}
    screen, enc = st.get("screen", {}), st.get("encode", {})
    outputs = file_outputs(enc, job.config)
    return {
        "output": outputs[0]["path"],
        "outputs": outputs,
        "fps": job.config.screen.fps,
        "mode": job.config.timestamp.mode,
        "rect": rect,
        "output_size": list(output_size(rect["width"], rect["height"], job.config.encode.output_height)),
        "base_time_ns": outcome.base_time,
        "recorded_s": screen.get("recorded_ns", 0) / NS_PER_S - enc.get("paused_ms", 0) / 1000,
        "paused_s": enc.get("paused_ms", 0) / 1000,
        "pauses": (steering or {}).get("pauses", 0),
        "pause_spans_s": (steering or {}).get("pause_spans_s", []),
        "markers": (steering or {}).get("markers", []),
        "frames": frame_counts(st),
        "ring": {
            "slots": ring.slots,
            "bytes": ring_bytes(ring.geometry, ring.slots),  # what it could hold ...
            "allocated": screen.get("ring_allocated", 0),  # ... and the slots it took
            "allocated_bytes": ring_bytes(ring.geometry, screen.get("ring_allocated", 0)),
            "format": "I420" if staging is not None else "BGRA",  # I420: converted by the screen stage
            "staging_bytes": ring_bytes(staging.geometry, staging.slots) if staging is not None else 0,
            "peak_fill": screen.get("ring_peak", 0),
        },
        "latency_ms": {"p50": enc.get("latency_ms_p50"), "p99": enc.get("latency_ms_p99")},
        "audio": audio_section(st.get("audio", {}), enc),
        "stages": {
            name: {
                "cpu_s": rec.stats.get("cpu_s", rec.cpu_s),
                "peak_private_rss_mb": round(rec.peak_private_mb, 1),
                "exitcode": rec.exitcode,
                "info": rec.info,
                "stats": rec.stats,
            }
            for name, rec in outcome.stages.items()
        },
        "series": series.as_dict() if series is not None else None,
        "pid": os.getpid(),
        "shm_bytes": outcome.shm_bytes,
        "fast_stop": outcome.fast_stop,
        "warnings": outcome.warnings,
        "errors": outcome.errors,
    }


def audio_section(capture: dict[str, Any], encoded: dict[str, Any]) -> dict[str, Any] | None:
    """The --stats-json "audio" section from the audio and encode stages' stats (supervisor); None: no audio."""
    if not capture.get("tracks"):
        return None
    written = encoded.get("audio", {}).get("samples", {})
    return {
        "tracks": capture["tracks"],
        "rate": capture.get("rate"),
        "recorded_s": capture.get("recorded_s"),
        "blocks": capture.get("blocks", 0),
        "dropped_ring_full": capture.get("dropped_ring_full", 0),
        "ring_peak": capture.get("ring_peak", 0),
        "encoded_samples": written,
        "sources": capture.get("sources", {}),
        "library_lines": capture.get("library_lines", 0),  # PortAudio's and ALSA's own stderr, kept off the terminal
        "library_last": capture.get("library_last", []),
    }


def audio_line(section: dict[str, Any] | None) -> str | None:
    """One line for people: per source, silence put in and drift measured."""
    if not section:
        return None
    parts = [
        f"{name} (silence {s['silence_ms']:g} ms, drift {s['drift_ppm']:+.0f} ppm)"
        for name, s in section["sources"].items()
    ]
    mix = " + mix" if "mix" in section["tracks"] else ""
    return f"  audio {section['rate'] // 1000} kHz: {', '.join(parts)}{mix}"


def scaled(stats: dict[str, Any]) -> str:
    """", scaled from WxH to WxH" when the video was scaled, else nothing."""
    rect, size = stats["rect"], stats.get("output_size")
    if not size or list(size) == [rect["width"], rect["height"]]:
        return ""
    return f", scaled from {rect['width']}x{rect['height']} to {size[0]}x{size[1]}"


def behind(frames: dict[str, Any]) -> str:
    """" (N not written: the encoder was behind)" when repeats were left out, else nothing."""
    n = frames.get("repeats_not_written", 0)
    return f" ({n} not written: the encoder was behind)" if n else ""


def summary(stats: dict[str, Any]) -> str:
    """A short report for people at the end of a recording."""
    f = stats["frames"]
    cpu = sum(s["cpu_s"] or 0 for s in stats["stages"].values())
    secs = stats["recorded_s"] or 1
    paused = f", paused {stats['paused_s']:.1f} s ({stats['pauses']}x)" if stats.get("paused_s") else ""
    lines = [output_summary(o, stats) + paused + output_trouble(o) for o in stats["outputs"]]
    lines += [
        f"  dropped {f['dropped']} (ring full {f['dropped_by_reason']['ring_full']}, "
        f"late {f['dropped_by_reason']['capture_late']}, shed {f['dropped_by_reason']['encoder_shed']}"
        + (f", lost with the encoder {f['lost_with_encoder']}" if f.get("lost_with_encoder") is not None else "")
        + "), "
        f"repeats {f['repeats']}{behind(f)}, skips {f['skips']}, "
        f"ring peak {stats['ring']['peak_fill']}/{stats['ring']['slots']}",
        f"  latency p50 {stats['latency_ms']['p50']} ms, p99 {stats['latency_ms']['p99']} ms"
        f"{threads_note(stats)}; CPU {cpu / secs:.2f} cores",
    ]
    followed = followed_line(stats["stages"].get("screen", {}).get("stats") or {})
    audio = audio_line(stats.get("audio"))
    near = ring_warning(stats["ring"])
    camera = camera_line(stats["stages"])
    return "\n".join([*lines, *(x for x in (followed, audio, camera, near) if x)])


def threads_note(stats: dict[str, Any]) -> str:
    """Where the encoder went from slice to frame threads (ADAPTIVE: slices fell behind), for the latency line."""
    at = (stats["stages"].get("encode", {}).get("stats") or {}).get("frame_threads_from_frame")
    fps = stats.get("fps") or 60
    return "" if at is None else f" (slice threads, frame threads from {at / fps:.1f} s: the content was heavy)"


def ring_warning(ring: dict[str, Any]) -> str:
    """A line when the video ring came close to full (the encoder fell behind): what to do about it."""
    peak, slots = ring.get("peak_fill", 0), ring.get("slots", 0)
    if not slots or peak < RING_NEAR_FULL * slots:
        return ""
    return (f"framepipe: warning: the frame ring came close to full (peak {peak} of {slots} slots): the encoder "
            "fell behind; give [screen] ring_seconds more, a faster --preset, or run `framepipe tune`")


def followed_line(screen: dict[str, Any]) -> str:
    """What following the window (or the screen) did: resizes scaled, frames held while it was not shown."""
    parts = []
    if screen.get("resizes"):
        parts.append(f"resized {screen['resizes']}x, {screen.get('scaled_frames', 0)} frames scaled to fit")
    if screen.get("held"):
        parts.append(f"{screen['held']} frames held (the last picture repeated while nothing was shown)")
    return f"  {'; '.join(parts)}" if parts else ""


def camera_line(stages: dict[str, Any]) -> str | None:
    """One line for people on the camera: pictures, frames it was shown in, times it was lost."""
    if "camera" not in stages:
        return None
    cam, enc = stages["camera"]["stats"], stages.get("encode", {}).get("stats", {})
    where = (f"its own track, {enc.get('camera_encoded', 0)} encoded" if "camera_encoded" in enc else
             f"shown in {enc.get('camera_shown', 0)} frames, not in {enc.get('camera_not_shown', 0)}")  # fmt: skip
    return (f"  camera {stages['camera']['info'].get('source', '')}: {cam.get('pictures', 0)} pictures, {where}; "
            f"lost {cam.get('lost', 0)}x, dropped {cam.get('dropped_ring_full', 0)} (ring full)")


def output_summary(out: dict[str, Any], stats: dict[str, Any]) -> str:
    """One output's first line: what it wrote, streamed or held."""
    if out["kind"] == "replay":
        return (f"framepipe: replay buffer: held {out.get('held_s', 0):.1f} s in {out.get('held_mb', 0):.1f} MB "
                f"at the end, {out.get('saved', 0)} saved to {out.get('folder', '?')}")  # fmt: skip
    if out["kind"] == "stream":
        return (f"framepipe: streamed to {out['path']}: {out.get('bytes_sent', out['bytes']) / 1e6:.1f} MB, "
                f"{out.get('reconnects', 0)} reconnects")  # fmt: skip
    return (f"framepipe: wrote {out['path']}: {out['frames']} frames in {stats['recorded_s']:.1f} s "
            f"at {stats['fps']:g} fps" + scaled(stats))


def output_trouble(out: dict[str, Any]) -> str:
    """What went wrong with one output, if anything (its error; packets it dropped)."""
    parts = [f"failed: {out['error']}"] if out.get("error") else []
    parts += [f"{n} packets dropped ({cause})" for cause, n in out["dropped"].items() if n and cause != "failed"]
    return f" ({'; '.join(parts)})" if parts else ""


def frames_in_file(path: str) -> int | None:
    """Video packets the file holds, read back (supervisor; only after the encoder died)."""
    import av

    try:
        with av.open(path) as container:
            if not container.streams.video:
                return 0
            return sum(1 for p in container.demux(container.streams.video[0]) if p.size)
    except (OSError, av.FFmpegError):
        return None


def recount(stats: dict[str, Any]) -> None:
    """The encoder died: its last report is not what the files hold. Count the files, and say how many
    frames were captured but went with it (the stats and the summary then tell what the file holds)."""
    frames = stats["frames"]
    for out in stats["outputs"]:
        if out["kind"] == "file":
            counted = frames_in_file(out["path"])
            out["frames"] = counted if counted is not None else 0
            out["counted_from_file"] = True
    files = [o["frames"] for o in stats["outputs"] if o["kind"] == "file"]
    if files:
        frames["written"] = files[0]
    lost = max(0, frames["captured"] - frames["paused"] - frames["written"] + frames["repeats"] - frames["skips"])
    frames["lost_with_encoder"] = lost
    frames["dropped_by_reason"]["encoder_died"] = lost
    frames["dropped"] += lost


def write_replacing(path: str, text: str) -> None:
    """Write a new file beside ``path`` and rename it over: a symlink at ``path`` is replaced, never followed."""
    target = Path(path)
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=target.parent or ".", prefix=f".{target.name}.",
                                     delete=False) as tmp:  # fmt: skip
        tmp.write(text)
    os.replace(tmp.name, target)


def check_reachable(url: str) -> None:
    """A stream that is the only output must reach its server now: else nothing would be recorded at all."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "rtmps" else 1935)
    try:
        socket.create_connection((parts.hostname or "", port), timeout=REACH_TIMEOUT_S).close()
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise SetupError(f"cannot reach {public_url(url)} ({reason}): the stream is the only output, so nothing "
                         "would be recorded; start the server, check the URL, or add an output file") from None


def check_outputs(job: RecordJob) -> None:
    """Every file output can be written (nothing is created); the stats file too; a lone stream reaches."""
    for out in job.config.outputs:
        if out.kind == "file":
            check_output(out.path, job.overwrite)
    streams = [o for o in job.config.outputs if o.kind == "stream"]
    if streams and len(streams) == len(job.config.outputs):
        for out in streams:
            check_reachable(out.url)
    if job.stats_json:
        check_writable(job.stats_json, overwrite=True)


def record(job: RecordJob, hosts: StageHosts | None = None) -> int:
    """Run one recording; 0 when everything went well, 1 if a stage or an output failed (the files are kept).
    ``hosts``: its stage processes, already started (the CLI starts them before importing this module)."""
    if job.dry_run:
        print("\n".join(plan(job.config).lines()))
        return 0
    if hosts is not None:
        return run_job(job, hosts)
    with StageHosts(likely_stages(job.config)) as started:  # they import their libraries while we plan
        return run_job(job, started)


def check_audio(audio: AudioConfig) -> None:
    """Sources that must be there (named with --audio): a wrong one is one line before anything starts.
    The microphone and the computer's sound are checked in the audio stage (a PortAudio probe here costs a
    process and 0.2-0.5 s of start-up): only whether a sound server answers, for ``system``."""
    if audio.missing != "fail":
        return
    if any(s not in ("default", "system") for s in audio.sources):
        in_audio_process("check_sources", audio.sources, audio.missing)
    elif "system" in audio.sources and not pulse_answers():
        raise SetupError("audio source 'system' needs PulseAudio (or PipeWire's pulse server), and none answers "
                         "here: start one, or record without --audio system")  # fmt: skip


def run_job(job: RecordJob, hosts: StageHosts) -> int:
    """The recording itself, with its stage processes already starting."""
    check_outputs(job)
    graph = plan(job.config)
    if graph.info.get("backend_line"):  # Wayland, or a fallback: which backend records, in one line
        print(f"framepipe: {graph.info['backend_line']}", file=sys.stderr)
    check_audio(job.config.audio)
    status = StatusLine(job.config.screen.fps, job.status_line and sys.stderr.isatty())
    grid = round(NS_PER_S / job.config.screen.fps)
    series = RingSeries()

    def on_tick(sup: Supervisor) -> None:
        status(sup)
        series(sup)

    reserved = {o.path: reserve(o.path, job.overwrite) for o in job.config.outputs if o.kind == "file"}
    stages = [replace(s, extra={**s.extra, "reserved": reserved}) if s.name == "encode" else s for s in graph.stages]
    supervisor = Supervisor(
        stages, list(graph.rings), job.duration_s, on_tick=on_tick, grid_ns=grid,
        status_of=status_of(job.config), period_ns=float(NS_PER_S / frame_rate(job.config.screen.fps)),
        outputs=tuple(o.path or o.url or o.kind for o in job.config.outputs),
        replay=any(o.kind == "replay" for o in job.config.outputs), hosts=hosts,
    )  # fmt: skip
    for sig in (signal.SIGINT, signal.SIGTERM):  # the supervisor handles them while it runs; after it, what
        signal.signal(sig, signal.SIG_IGN)  # is left is the stats and the summary of a complete file: a Ctrl+C
        # pressed once more as the stop finished must not cut them short, nor kill the exit (an ignored signal
        # is not reset to the default by the interpreter on its way out)
    try:
        outcome = supervisor.run()
    except BaseException:
        for path, ident in reserved.items():  # nothing was recorded: leave no empty files behind
            release(path, ident)
        raise
    finally:
        status.end()
    steering = supervisor.steering.status() if supervisor.steering is not None else None
    staging = next((r for r in graph.rings if r.key == "grab"), None)
    stats = stats_of(job, outcome, graph.info["rect"], graph.rings[0], series, steering, staging)
    encoder = outcome.stages.get("encode")
    if encoder is not None and encoder.exitcode != 0:
        recount(stats)
    if job.stats_json:
        write_replacing(job.stats_json, json.dumps(stats, indent=2) + "\n")
    print(summary(stats), file=sys.stderr)
    failed = any(o.get("error") for o in stats["outputs"])
    return 1 if outcome.errors or failed else 0
