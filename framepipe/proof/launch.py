"""Start a helper program (test screen, tone player) and wait until it has written its info file.

Used by tests, the demo and the benchmarks (their own process); the helper runs
as ``python -m MODULE`` with this checkout on its path.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path


def start_module(
    module: str,
    args: Sequence[str],
    info: Path,
    *,
    env: Mapping[str, str] | None = None,
    timeout_s: float,
    error: Callable[[str], Exception],
    keep_line: Callable[[str], bool] = lambda line: True,
) -> subprocess.Popen[bytes]:
    """Run ``python -m module args``; return once ``info`` exists, or raise ``error(why)`` with its last words."""
    info.unlink(missing_ok=True)
    root = str(Path(__file__).resolve().parents[2])
    full_env = dict(os.environ, **(env or {}))
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, full_env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", module, *args]
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, env=full_env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + timeout_s
        while not info.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                log.seek(0)
                lines = [ln for ln in log.read().decode(errors="replace").splitlines() if keep_line(ln)]
                raise error(f"{module} did not start (exit {proc.returncode}): {lines[-1] if lines else 'no output'}")
            time.sleep(0.01)
    return proc
