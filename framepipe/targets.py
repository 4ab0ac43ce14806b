"""The stage classes a recording runs, by import path (CLI and planner, supervisor process).

Light on purpose: the CLI starts these stages' processes (``pipeline.hosts``) before it imports the
planner and the recorder, so they load their libraries while it does.
"""

from __future__ import annotations

from pipeline.config import PipelineConfig

SCREEN = "stages.video.screen:ScreenCapture"
TIMESTAMP = "stages.video.timestamp:Timestamper"
ENCODE = "stages.video.encode:Encoder"
AUDIO = "stages.audio.capture:AudioCapture"
CAMERA = "stages.video.camera:CameraCapture"


def likely_stages(config: PipelineConfig) -> list[str]:
    """The stage classes ``plan`` will want, known before it runs; the slowest to be ready first (the
    encoder imports numpy and PyAV, the screen opens the display and grabs into every slot)."""
    return [ENCODE, SCREEN, *([AUDIO] if config.audio.sources else []),
            *([CAMERA] if config.camera.source else []), TIMESTAMP]  # fmt: skip
