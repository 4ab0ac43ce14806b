"""Shared-memory housekeeping (supervisor): names, free space, sweeping leaks.

Every segment is named ``fp_<pid>_<ring>``, with the supervisor's pid. At
start the supervisor removes segments whose supervisor no longer runs (a
``kill -9`` of the whole group leaves them behind) and says so.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import psutil

from pipeline.errors import SetupError

PREFIX = "fp_"
SHM_DIR = Path("/dev/shm")
MARGIN = 16 * 1024 * 1024  # leave room for PulseAudio, X and others


def segment_name(ring: str, pid: int | None = None) -> str:
    """The shared-memory name of ``ring`` for the supervisor ``pid``."""
    return f"{PREFIX}{pid or os.getpid()}_{ring}"


def sweep_stale() -> list[str]:
    """Unlink segments left by supervisors that are gone; return their names."""
    if not SHM_DIR.is_dir():
        return []
    swept = []
    for path in SHM_DIR.glob(f"{PREFIX}*"):
        pid_text = path.name[len(PREFIX) :].split("_", 1)[0]
        if pid_text.isdigit() and psutil.pid_exists(int(pid_text)) and int(pid_text) != os.getpid():
            continue
        try:
            path.unlink()
            swept.append(path.name)
        except OSError:
            pass
    return swept


def check_free(needed: int) -> None:
    """Fail clearly if /dev/shm cannot hold ``needed`` bytes (else SIGBUS on first write)."""
    if not SHM_DIR.is_dir():
        return
    free = shutil.disk_usage(SHM_DIR).free
    if free < needed + MARGIN:
        raise SetupError(
            f"/dev/shm has {free / 2**20:.0f} MiB free but the rings need {needed / 2**20:.0f} MiB: "
            "lower ring_seconds, record a smaller region, or enlarge /dev/shm "
            "(docker: --shm-size=1g)"
        )
