"""``framepipe demo``: a short recording of moving test content, judged by what the file shows.

Without a display (or with ``--virtual``) it starts its own Xvfb screen.
The test screen paints a frame number on every frame; after recording, the
file is decoded and every frame's number is read back, so the summary says
how many screen states the file holds and how many were lost.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from framepipe.proof import judge
from framepipe.proof.testscreen import start_testscreen
from framepipe.proof.xvfb import VirtualScreen
from framepipe.record import RecordJob, record
from pipeline.config import PipelineConfig, with_output


@contextlib.contextmanager
def display(virtual: bool, width: int = 1920, height: int = 1080) -> Iterator[str]:
    """The display to record: the current one, or a new Xvfb screen."""
    if os.environ.get("DISPLAY") and not virtual:
        yield os.environ["DISPLAY"]
        return
    with VirtualScreen(width, height) as screen:
        previous = os.environ.get("DISPLAY")
        os.environ["DISPLAY"] = screen.display
        try:
            yield screen.display
        finally:
            if previous is None:
                os.environ.pop("DISPLAY", None)
            else:
                os.environ["DISPLAY"] = previous


def demo(output: str, config: PipelineConfig, duration_s: float, virtual: bool) -> int:
    """Record ``duration_s`` of the test screen to ``output`` (replacing it) and print what the file shows."""
    with display(virtual) as name, tempfile.TemporaryDirectory(prefix="framepipe-demo-") as tmp:
        info_path = Path(tmp) / "testscreen.json"
        stats_path = Path(tmp) / "stats.json"
        painter = start_testscreen(name, config.screen.fps, info_path=info_path)
        try:
            job = RecordJob(with_output(config, output), duration_s, overwrite=True, stats_json=str(stats_path))
            status = record(job)
        finally:
            painter.terminate()
            painter.wait(10)
        info = json.loads(info_path.read_text())
        stats = json.loads(stats_path.read_text())
        origin = (config.screen.region[0], config.screen.region[1]) if config.screen.region else (0, 0)
        frames = judge.read_codes(output, info["code_rect"], origin)
        report = judge.judge(frames, 1 / config.screen.fps)
        print(f"framepipe demo: {output} on {name}: {report.summary()}")
        print(f"framepipe demo: pipeline counted {stats['frames']['dropped']} dropped; play it with: ffplay {output}")
        return status

