"""The bench for real, kept short: the transport micro-benchmark on small frames, and `framepipe bench --quick`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from framepipe.bench.micro import MicroConfig, run_micro


def test_micro_benchmark_moves_every_frame_intact() -> None:
    result = run_micro(MicroConfig(width=64, height=32, slots=4, seconds=0.05, rounds=1))
    for name in ("memcpy", "ring", "queue"):
        (transfer,) = result["rounds"][name]
        assert transfer["frames"] > 0 and transfer["bad"] == 0, (name, transfer)
    assert "ring / memcpy" in result["summary"] and result["descriptor_bytes"] < 64


@pytest.mark.skipif(shutil.which("Xvfb") is None or shutil.which("ffmpeg") is None,
                    reason="needs Xvfb and ffmpeg")
def test_quick_bench_writes_json_table_and_plot(tmp_path: Path) -> None:
    out = tmp_path / "bench-out"
    done = subprocess.run(
        [sys.executable, "-m", "framepipe", "bench", "--quick", "--seconds", "3", "--out", str(out)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads((out / "bench.json").read_text())
    (run,) = doc["runs"]
    assert run["scenario"]["name"] == "1080p60" and run["scenario"]["duration_s"] == 3
    assert set(run["recorders"]) == {"framepipe", "ffmpeg", "naive"}
    for result in run["recorders"].values():
        assert result["frames"]["expected"] == 180 and result["frames"]["written"] > 0, result
        assert result["usage"]["cpu_s"] > 0 and result["usage"]["peak_rss_mb"] > 0
    assert doc["machine"]["versions"]["av"] and doc["loadavg_start"]
    assert "| 1080p60 | framepipe |" in done.stdout and "| 1080p60 | ffmpeg |" in done.stdout
    assert (out / "bench.md").read_text().count("| 1080p60 |") == 3
    assert Path(run["plot"]).read_bytes()[:4] == b"\x89PNG"
    own = run["recorders"]["framepipe"]["self_reported"]
    assert own["ring_slots"] == 60  # it can hold 1 s at 60 fps ...
    assert 0 < own["ring_mb"] < 30 * 8.3  # ... and the memory counts the slots it took, well under 60 of 8.3 MB
