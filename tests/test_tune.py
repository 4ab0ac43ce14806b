"""framepipe tune: profile keying and matching, precedence, the search on fake trials, and one real tune."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import run_framepipe

from framepipe import cli
from framepipe.proof.xvfb import VirtualScreen
from framepipe.tune import profile, tune
from framepipe.tune.search import (
    CONFIRM_FACTOR,
    Candidate,
    Search,
    Space,
    Target,
    Trial,
    choose,
    closest,
    diagnose,
    fallback_targets,
    nothing_holds,
    output_heights,
    placements,
    split_cpus,
    threads,
)
from framepipe.tune.tune import ring_for
from pipeline.config import EncodeConfig, ScreenConfig, load
from pipeline.errors import ConfigError
from stages.video.encode import try_open

FULL_HD = Target(60.0, (0, 0, 1920, 1080))
DEFAULTS = Candidate()
LONG = 2.5 * CONFIRM_FACTOR  # the confirmation trial
HERE = "1920x1080"


def here() -> profile.Machine:
    return profile.machine_here(size=HERE)


def write_profile(machine: profile.Machine, cand: Candidate = DEFAULTS, fps: float = 60.0) -> Path:
    tuned = {"date": "2025-01-02 03:04", "fps": fps, "region": [0, 0, 1920, 1080]}
    return profile.write(machine, cand.settings(), tuned, {"lost": 0}, {"cores": machine.cores})


# --- profile keying and matching ------------------------------------------------------------


def test_profile_lives_in_xdg_config_home_keyed_by_host_cpu_and_display(own_config_dir: Path) -> None:
    m = here()
    path = profile.path_for(m)
    assert path.parent == own_config_dir / "framepipe"
    assert path.name.startswith(f"profile-{m.hostname}-") and path.name.endswith("-1920x1080.toml")
    assert profile.path_for(dataclasses.replace(m, display="2560x1440")) != path
    assert profile.path_for(dataclasses.replace(m, cpu="Another CPU")) != path


def test_profile_round_trip_loads_through_the_pipeline_config() -> None:
    cand = Candidate(encode_cpus=(1,), encode_nice=0, capture_cpus=(0,), threads=2, ring_seconds=0.5)
    prof = profile.read(write_profile(here(), cand))
    assert prof.machine == here()
    config = load(None, None, prof.settings)
    assert config.encode.affinity == (1,) and config.encode.nice == 0 and config.encode.threads == 2
    assert config.screen.affinity == (0,) and config.timestamp.affinity == (0,) and config.screen.ring_seconds == 0.5
    assert profile.for_record(HERE) == (prof, None)


@pytest.mark.parametrize(
    ("change", "needle"),
    [({"display": "2560x1440"}, "display 2560x1440 (this one: 1920x1080)"),
     ({"cpu": "Another CPU 9000"}, "CPU Another CPU 9000"),
     ({"hostname": "elsewhere"}, "host elsewhere")],
)
def test_a_profile_from_another_machine_is_ignored_with_one_warning(change: dict[str, Any], needle: str) -> None:
    other = dataclasses.replace(here(), **change)
    path = write_profile(other)
    used, warning = profile.for_record(HERE)
    assert used is None and warning is not None
    assert str(path) in warning and needle in warning and "ignoring" in warning, warning


def test_a_profile_whose_encoder_does_not_open_here_is_ignored() -> None:
    if try_open(EncodeConfig(encoder="h264_nvenc"), 1920, 1080, 60) is None:
        pytest.skip("h264_nvenc opens on this machine")
    write_profile(here(), Candidate(encoder="h264_nvenc"))
    used, warning = profile.for_record(HERE)
    assert used is None and warning is not None and "encoder h264_nvenc does not open here" in warning


@pytest.mark.parametrize(
    ("edit", "needle"),
    [(lambda t: "[encode]\nthreads = 1\n", "profile version None"),
     (lambda t: t.replace("threads = 0", "threads = -1"), "encode.threads = -1 is out of range"),
     (lambda t: t.replace("hostname =", "colour = 1\nhostname ="), "[machine] table is incomplete"),
     (lambda t: t + "[[", "cannot read it")],
)
def test_a_broken_profile_is_ignored_with_one_warning(edit: Callable[[str], str], needle: str) -> None:
    path = write_profile(here())
    path.write_text(edit(path.read_text()))
    used, warning = profile.for_record(HERE)
    assert used is None and warning is not None and needle in warning, warning


def test_precedence_defaults_profile_config_file_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_profile(here(), Candidate(preset="superfast", ring_seconds=2.0, encode_nice=0, encode_cpus=(1,)))
    conf = tmp_path / "p.toml"
    conf.write_text('[encode]\npreset = "veryfast"\nnice = 5\n')
    args = cli.build_parser().parse_args(["record", "o.mkv", "--config", str(conf), "--preset", "faster"])
    config = cli.pipeline_config(args, HERE)
    assert config.screen.ring_seconds == 2.0 and config.encode.affinity == (1,)  # the profile over defaults
    assert config.encode.nice == 5  # the config file over the profile
    assert config.encode.preset == "faster"  # flags over the file
    assert config.encode.crf == 23  # defaults where nobody says
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"framepipe: using tuned profile {path} (tuned 2025-01-02 03:04 for 1920x1080 at 60 fps)"]
    args = cli.build_parser().parse_args(["record", "o.mkv", "--no-profile"])
    assert cli.pipeline_config(args, HERE).screen.ring_seconds == ScreenConfig.ring_seconds
    assert capsys.readouterr().err == ""


def test_show_without_a_profile_for_here_lists_the_others(monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    path = write_profile(dataclasses.replace(here(), display="2560x1440"))
    monkeypatch.delenv("DISPLAY", raising=False)
    assert tune.show(None) == 1
    out = capsys.readouterr().out
    assert "no tuned profile for this machine (no display to key by)" in out
    assert f"{path}: tuned 2025-01-02 03:04 on {here().hostname}" in out and "2560x1440" in out


def test_a_bad_flag_beside_an_ignored_profile_is_still_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    write_profile(dataclasses.replace(here(), display="2560x1440"))
    with pytest.raises(ConfigError, match=r"encode\.crf = 99"):
        cli.pipeline_config(cli.build_parser().parse_args(["record", "o.mkv", "--crf", "99"]), HERE)
    assert capsys.readouterr().err == ""  # the CLI prints the error alone
    cli.pipeline_config(cli.build_parser().parse_args(["record", "o.mkv"]), HERE)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "ignoring tuned profile" in err[0]


def test_the_notice_says_when_a_recording_asks_more_than_was_tuned() -> None:
    prof = profile.read(write_profile(here(), fps=30.0))
    line = prof.notice(load(None, {"screen": {"fps": 60.0}}))
    assert "for 1920x1080 at 30 fps" in line and "asks more (1920x1080 at 60 fps): tune for it" in line


# --- the search, on fake trials ----------------------------------------------------------------


def trial(cand: Candidate = DEFAULTS, target: Target = FULL_HD, seconds: float = 2.5, cpu: float = 1.0,
          **figures: Any) -> Trial:
    return Trial(cand, target, seconds, cores=2, cpu_cores=cpu, ring_slots=60, **figures)


def test_choose_keeps_the_holding_candidate_with_the_most_headroom() -> None:
    a, b, c = Candidate(), Candidate(encode_cpus=(1,)), Candidate(preset="veryfast")
    trials = [trial(a, cpu=1.2), trial(b, cpu=0.9), trial(c, cpu=0.5, ring_full=3)]
    assert choose(trials, FULL_HD) is trials[1]
    assert choose([*trials, trial(b, seconds=LONG, cpu=1.0, lost=1)], FULL_HD) is trials[0]  # b failed its confirmation
    assert choose(trials, Target(30.0, FULL_HD.region)) is None
    near = closest([trial(a, ring_full=9), trial(b, late=2), trial(c, ring_peak=50)], FULL_HD)
    assert near is not None and near.candidate == b  # fewest losses; a filling ring ranks behind a few losses
    near = closest([trial(a, ring_full=9), trial(b, seconds=LONG, lost=2), trial(c, lost=1)], FULL_HD)
    assert near is not None and near.candidate == b  # losses are counted a second


def test_a_trial_holds_only_without_loss_drops_or_a_filling_ring() -> None:
    assert trial().holds
    cases: list[dict[str, Any]] = [{"lost": 1}, {"ring_full": 1}, {"late": 1}, {"shed": 1}, {"ring_peak": 31}]
    for figures in cases:
        assert not trial(**figures).holds, figures
    assert not dataclasses.replace(trial(), error="boom").holds
    assert trial(cpu=0.5).headroom == pytest.approx(0.75)


def test_busy_cpus_are_split_from_free_ones() -> None:
    assert split_cpus({0: 100.0, 1: 3.0}) == ((0,), (1,))
    assert split_cpus({0: 40.0, 1: 55.0}) == ((), ())
    assert split_cpus({0: 90.0, 1: 20.0, 2: 5.0, 3: 95.0}) == ((0, 3), (2, 1))
    assert split_cpus({4: 2.0, 6: 100.0}) == ((6,), (4,))  # the CPUs this process may use, by number


class FakeRunner:
    """Trials decided by a rule; the clock advances by each trial's length plus start-up."""

    def __init__(self, rule: Callable[[Candidate, Target, float], dict[str, float]]) -> None:
        self.rule, self.now = rule, 0.0
        self.ran: list[tuple[Candidate, Target, float]] = []

    def clock(self) -> float:
        return self.now

    def __call__(self, cand: Candidate, target: Target, seconds: float) -> Trial:
        self.now += seconds + 3
        self.ran.append((cand, target, seconds))
        figures = dict(self.rule(cand, target, seconds))
        return trial(cand, target, seconds, cpu=figures.pop("cpu", 1.0), **{k: int(v) for k, v in figures.items()})


def search(rule: Callable[[Candidate, Target, float], dict[str, float]], budget: float = 110, **space: Any) -> tuple[
        Search, FakeRunner]:
    runner = FakeRunner(rule)
    s = Search(Space(cores=2, **space), FULL_HD, 2.5, runner, budget, say=lambda line: None, clock=runner.clock)
    return s, runner


def test_the_search_pins_the_encoder_off_the_busy_cpu_and_prunes() -> None:
    def rule(c: Candidate, t: Target, seconds: float) -> dict[str, float]:
        if c.encode_cpus != (1,):
            return {"ring_full": 40}
        cpu = {"ultrafast": 0.8, "superfast": 1.3}.get(c.preset, 1.5) - (0.1 if c.thread_type == "SLICE" else 0)
        return {"cpu": cpu, "lost": 2 if c.preset == "veryfast" else 0}

    s, runner = search(rule, busy=(0,), free=(1,))
    verdict = s.run()
    tried = [(c.encode_cpus, c.encode_nice, c.preset, sec) for c, _, sec in runner.ran]
    assert tried == [
        ((), 10, "ultrafast", 2.5),  # as configured: fails
        ((), 0, "ultrafast", 2.5),  # the encoder at normal priority: fails
        ((1,), 10, "ultrafast", 2.5),  # the encoder off the busy CPU: holds ...
        ((1,), 10, "ultrafast", LONG),  # ... and is confirmed at once: placement stops
        # threads: none on one CPU
        ((1,), 10, "superfast", 2.5),  # presets while they hold ...
        ((1,), 10, "veryfast", 2.5),  # ... until one fails; none has more headroom: nothing more to confirm
    ]
    assert verdict.chosen is not None and verdict.chosen.seconds == LONG
    assert verdict.chosen.candidate == Candidate(encode_cpus=(1,))
    assert verdict.fallback is None and verdict.skipped == 0


def test_placements_go_from_least_to_most_intrusive() -> None:
    busy = Space(cores=2, busy=(0,), free=(1,), raise_priority=True)
    got = [(c.encode_cpus, c.encode_nice, c.capture_cpus, c.capture_nice) for c in placements(busy, DEFAULTS, False)]
    assert got == [((), 10, (), -10), ((), 0, (), -10), ((1,), 10, (), -10), ((1,), 0, (), -10),
                   ((1,), 0, (0,), -10), ((), -5, (), -10)]  # capture above the busy program throughout
    quiet = [(c.encode_nice, c.capture_nice) for c in placements(Space(cores=2, raise_priority=True), DEFAULTS, False)]
    assert quiet == [(10, 0), (0, 0), (0, -10), (-5, -10)]  # nothing busy: capture raised only later
    even = [(c.encode_cpus, c.encode_nice) for c in placements(Space(cores=2), DEFAULTS, False)]
    assert even == [((), 10), ((), 0)]  # no CPU is busier: nothing to pin, no privilege: no capture priority
    heavy = [c.encode_cpus for c in placements(dataclasses.replace(busy, encode_cores=1.1), DEFAULTS, False)]
    assert heavy == [(), (), ()]  # one free CPU cannot carry an encoder that needs 1.1: never pinned there
    many = placements(Space(cores=8, busy=(0,), free=(3, 1, 2, 4, 5, 6, 7)), DEFAULTS, False)[-1]
    assert many.capture_cpus == (3,) and many.encode_cpus == (1, 2, 4, 5, 6, 7)  # capture on the least busy
    assert placements(dataclasses.replace(busy, quick=True), DEFAULTS, False) == [DEFAULTS]


def test_thread_variants_only_where_the_encoder_has_several_cpus() -> None:
    space = Space(cores=4)
    assert threads(space, Candidate(encode_cpus=(3,)), True) == []
    assert [(c.thread_type, c.threads) for c in threads(space, DEFAULTS, True)] == [("SLICE", 0), ("FRAME", 4)]
    assert threads(space, Candidate(encoder="h264_nvenc"), True) == []


def test_hardware_encoders_that_open_are_tried_and_a_failed_confirmation_gives_way() -> None:
    def rule(c: Candidate, t: Target, seconds: float) -> dict[str, float]:
        if c.encoder == "h264_nvenc":
            return {"lost": 1} if seconds > 2.5 else {"cpu": 0.2}  # holds short trials, fails its confirmation
        return {"cpu": 1.0}

    s, runner = search(rule, hardware=("h264_nvenc",))
    verdict = s.run()
    confirmed = [c.encoder for c, _, sec in runner.ran if sec == LONG]
    assert confirmed == ["libx264", "h264_nvenc"]  # the placement; then the cheaper encoder, which fails
    assert verdict.chosen is not None and verdict.chosen.candidate.encoder == "libx264"


def test_a_placement_that_fails_its_confirmation_gives_way_to_the_next() -> None:
    def rule(c: Candidate, t: Target, seconds: float) -> dict[str, float]:
        if c.encode_cpus == (1,):
            return {"cpu": 1.2}
        if c.encode_nice == 0:
            return {"lost": 1} if seconds > 2.5 else {}  # holds short trials only
        return {"ring_full": 40}

    s, runner = search(rule, busy=(0,), free=(1,))
    verdict = s.run()
    failed = [c for c, _, sec in runner.ran if sec == LONG and c.encode_cpus != (1,) and not c.output_height]
    assert failed == [Candidate(encode_nice=0)]  # held the short trial, failed the long one: placement goes on
    assert verdict.chosen is not None and verdict.chosen.candidate.encode_cpus == (1,)
    assert verdict.chosen.seconds == LONG
    a, b = Candidate(encode_nice=0), Candidate()
    near = closest([trial(a), trial(a, seconds=LONG, lost=1), trial(b, ring_full=3)], FULL_HD)
    assert near is not None and near.seconds == LONG and near.lost == 1  # a candidate counts by its worst trial


def test_the_search_stops_starting_trials_when_the_budget_is_spent() -> None:
    s, runner = search(lambda c, t, sec: {"cpu": 1.0}, budget=12, busy=(0,), free=(1,))
    verdict = s.run()
    assert verdict.skipped > 0
    assert [sec for _, _, sec in runner.ran] == [2.5, LONG]  # the first placement holds and is confirmed; no time
    assert verdict.chosen is not None


def test_when_nothing_holds_lower_targets_say_which_one_does() -> None:
    def rule(c: Candidate, t: Target, seconds: float) -> dict[str, float]:
        return {"ring_full": 30, "ring_peak": 60} if t.fps > 48 else {"cpu": 1.4}

    verdict = search(rule)[0].run()
    assert verdict.chosen is None
    assert verdict.fallback is not None and verdict.fallback.target == Target(48.0, FULL_HD.region)
    text = nothing_holds(FULL_HD, closest(verdict.trials, FULL_HD), verdict.fallback, verdict.fallbacks_tried)
    assert "nothing holds 1920x1080 at 60 fps" in text and "encode-bound" in text
    near = closest(verdict.trials, FULL_HD)
    assert near is not None and "needs about 1.3 of the 2 CPUs at 60 fps" in diagnose(near, 2.0, 1.3)
    assert "1920x1080 at 48 fps holds" in text and "framepipe tune --fps 48" in text
    assert text.endswith("no profile written (a profile must not drop frames)")


def test_when_full_size_does_not_hold_a_scaled_video_is_tried_before_lower_targets() -> None:
    def rule(c: Candidate, t: Target, seconds: float) -> dict[str, float]:
        if c.output_height == 0:
            return {"ring_full": 30, "ring_peak": 60}  # the encoder cannot keep up at full size
        return {"cpu": 0.6 if c.output_height == 540 else 0.8}

    verdict = search(rule)[0].run()
    scaled = [(t.candidate.output_height, t.candidate.encode_nice, t.seconds) for t in verdict.trials
              if t.candidate.output_height]
    assert scaled == [(720, 10, 2.5), (720, 10, LONG)]  # the largest first, confirmed at once: 540 not needed
    assert verdict.chosen is not None and verdict.chosen.candidate.output_height == 720
    assert verdict.chosen.candidate.settings()["encode"]["output_height"] == 720
    assert "scaled to 720p" in verdict.chosen.candidate.label()
    assert verdict.fallbacks_tried == [] and all(t.target == FULL_HD for t in verdict.trials)
    assert output_heights(1080) == [720, 540] and output_heights(720) == [540, 360] and output_heights(300) == []

    def raised(c: Candidate, t: Target, seconds: float) -> dict[str, float]:
        if c.output_height == 0:
            return {"ring_full": 3} if c.encode_nice < 0 else {"ring_full": 30, "ring_peak": 60}
        if c.encode_nice < 0:
            return {"lost": 1}  # above other programs it delays the X server, and the grabs
        return {"ring_full": 2} if c.encode_nice > 0 else {"cpu": 0.8}

    verdict = search(raised, raise_priority=True)[0].run()
    tried = [(t.candidate.output_height, t.candidate.encode_nice) for t in verdict.trials if t.candidate.output_height]
    assert tried == [(720, 10), (720, 0), (720, 0)]  # the closest was at -5: scaled, niced first, then at 0
    assert verdict.chosen is not None and verdict.chosen.candidate.encode_nice == 0
    assert "output_height" not in DEFAULTS.settings()["encode"]


def test_full_size_that_needs_the_busy_programs_cpu_gives_way_to_a_scaled_video() -> None:
    def rule(c: Candidate, t: Target, seconds: float) -> dict[str, float]:
        if c.output_height:
            return {"cpu": 0.7}
        return {"cpu": 1.04} if c.encode_nice == 0 else {"ring_full": 30, "ring_peak": 60}

    verdict = search(rule, busy=(0,), free=(1,), encode_cores=1.0)[0].run()
    assert verdict.chosen is not None and verdict.chosen.candidate.output_height == 720
    assert verdict.note is not None and "1.04 cores used, 1 CPU(s) free" in verdict.note
    quiet = search(rule)[0].run()  # nothing busy: 1.04 of 2 CPUs is room enough, full size stays
    assert quiet.chosen is not None and quiet.chosen.candidate.output_height == 0 and quiet.note is None


def test_a_capture_bound_target_is_named_so() -> None:
    late = trial(late=12, lost=5)
    text = nothing_holds(FULL_HD, late, None, fallback_targets(FULL_HD, (1920, 1080)))
    assert "capture-bound: grabs ran late (12 ticks" in text
    assert "nor does 1920x1080 at 48 fps, 1280x720 at 60 fps, 1920x1080 at 30 fps" in text
    assert "capture-bound: one grab takes 20.0 ms" in nothing_holds(FULL_HD, trial(), None, [], grab_ms=20.0)
    assert fallback_targets(FULL_HD, (1920, 1080))[1].region == (320, 180, 1280, 720)


# --- the command ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "needle"),
    [(("--seconds-per-trial", "0"), "expected a number of seconds above 0"),
     (("--seconds-per-trial", "100"), "--seconds-per-trial must be from 0.5 to 60"),
     (("--fps", "500"), "screen.fps = 500.0 is out of range"),
     (("--candidates", "all"), "--candidates 'all' is unknown; choose one of: full, quick"),
     (("--region", "0,0,320,200"), "--region must hold the middle of the screen"),
     (("--region", "1,2"), "--region takes X,Y,WIDTH,HEIGHT")],
)
def test_bad_tune_input_is_one_line_and_status_2(virtual_screen: VirtualScreen, flags: tuple[str, ...],
                                                 needle: str) -> None:
    result = run_framepipe("tune", *flags, display=virtual_screen.display)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in result.stderr, result.stderr


def test_tune_writes_a_profile_that_record_then_uses(virtual_screen: VirtualScreen, tmp_path: Path,
                                                     own_config_dir: Path) -> None:
    target = ("--fps", "30", "--region", "640,360,640,360")  # small: holds even on a busy test machine
    tuned = run_framepipe("tune", "--candidates", "quick", "--seconds-per-trial", "1", *target,
                          display=virtual_screen.display, timeout=240)
    assert tuned.returncode == 0, tuned.stdout + tuned.stderr
    assert "tune:  1" in tuned.stdout and "holds" in tuned.stdout and "confirm" in tuned.stdout
    written = list((own_config_dir / "framepipe").glob("profile-*.toml"))
    assert len(written) == 1 and f"wrote {written[0]}" in tuned.stdout
    prof = profile.read(written[0])
    assert prof.figures["lost"] == 0 and prof.figures["dropped"] == 0 and prof.tuned["fps"] == 30.0

    rec = run_framepipe("record", str(tmp_path / "o.mkv"), "--duration", "1", "--no-audio", *target,
                        display=virtual_screen.display)
    assert rec.returncode == 0, rec.stderr
    assert rec.stderr.splitlines()[0].startswith(f"framepipe: using tuned profile {written[0]} (tuned ")

    shown = run_framepipe("tune", "--show", display=virtual_screen.display)
    assert shown.returncode == 0 and shown.stdout.startswith(f"# {written[0]}") and "[encode]" in shown.stdout


def test_the_tuned_ring_holds_three_times_the_measured_peak() -> None:
    target = Target(60.0, (0, 0, 1920, 1080))
    quiet = Trial(Candidate(ring_seconds=0.2), target, 2.5, 2, ring_peak=1, ring_slots=12)
    busy = Trial(Candidate(ring_seconds=0.2), target, 2.5, 2, ring_peak=6, ring_slots=12)
    assert ring_for(quiet).ring_seconds == ring_for(busy).ring_seconds == ScreenConfig.ring_seconds  # the default
    heavy = Trial(Candidate(ring_seconds=1.0), target, 2.5, 2, ring_peak=25, ring_slots=60)
    assert ring_for(heavy).ring_seconds == 1.25  # 75 frames, rounded up to 0.05 s
    assert ring_for(Trial(Candidate(), target, 2.5, 2, ring_peak=59, ring_slots=60)).ring_seconds == 2.0  # at most
