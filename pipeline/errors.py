"""The one base error: every mistake a person can fix is a FramepipeError.

The CLI prints ``framepipe: <message>`` on one line and exits with status 2 (1 for ``Cancelled``);
no traceback reaches people for these.
"""

from __future__ import annotations


class FramepipeError(Exception):
    """A problem people can fix; the message says what to do."""


class ConfigError(FramepipeError, ValueError):
    """A bad flag or config value (names the key and what is allowed)."""


class SetupError(FramepipeError, RuntimeError):
    """The machine is not ready: no display, no space in /dev/shm, unwritable output."""


class StageError(FramepipeError, RuntimeError):
    """A stage process failed while recording."""


class Cancelled(FramepipeError):
    """People cancelled a choice made with the mouse (Esc): nothing was started or written."""
