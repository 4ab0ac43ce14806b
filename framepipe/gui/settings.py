"""What the bar remembers between runs: the folder, the microphone, system audio and what to record.

One JSON file, ``$XDG_CONFIG_HOME/framepipe/gui.json`` (else ``~/.config/framepipe``, beside the tuned
profiles), read and written by the bar's process. A missing or unreadable file means the defaults: the
bar must always open.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from framepipe.plan import videos_folder
from framepipe.tune.profile import folder as config_folder

TARGETS = ("screen", "area", "window")  # whole screen (a monitor), drag an area, pick a window
NO_MICROPHONE = "none"


@dataclass(frozen=True)
class Settings:
    """The bar's choices; each field has the default a first run shows."""

    folder: str = ""  # where recordings go; "" = the videos folder (XDG, else ~/Videos)
    microphone: str = "default"  # an audio source name for `record --audio`, or "none"
    system_audio: bool = True  # record what the computer plays (a call's far side is only there)
    target: str = "screen"  # one of TARGETS
    monitor: int = 1  # mss numbering: 0 all monitors, 1 the first

    def save_folder(self) -> Path:
        return Path(self.folder) if self.folder else videos_folder()


def path() -> Path:
    return config_folder() / "gui.json"


def load() -> Settings:
    """The saved settings; each value of the wrong type (or the whole file unreadable) falls back to the default."""
    try:
        data = json.loads(path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return Settings()
    if not isinstance(data, dict):
        return Settings()
    default = Settings()
    kept: dict[str, Any] = {}
    for f in fields(Settings):
        value, want = data.get(f.name), type(getattr(default, f.name))
        if type(value) is want:  # bool is not an int here
            kept[f.name] = value
    settings = replace(default, **kept)
    if settings.target not in TARGETS:
        settings = replace(settings, target=default.target)
    return settings


def save(settings: Settings) -> None:
    """Write the settings (a new file renamed over the old one); a failure is not worth stopping for."""
    target = path()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=target.parent, prefix=".gui.",
                                         delete=False) as tmp:  # fmt: skip
            json.dump(asdict(settings), tmp, indent=2)
        os.replace(tmp.name, target)
    except OSError:
        pass
