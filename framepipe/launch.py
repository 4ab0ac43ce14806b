"""The ``framepipe`` command's entry point (process framepipe): a recording's encoder process starts first.

The encoder's process imports numpy and PyAV, 0.25 s of CPU and the longest step of a start. Forked before
the command imports anything else (``pipeline.hosts``), it loads them on the other core while the CLI
parses, plans and makes the rings; ``framepipe.cli`` starts the other stages' hosts once it knows them.
Every other command goes straight to the CLI.
"""

from __future__ import annotations

import sys


def records(argv: list[str]) -> bool:
    """Whether ``argv`` starts a recording: ``record``, not a dry run or its help."""
    return bool(argv) and argv[0] == "record" and not {"--dry-run", "-h", "--help"} & set(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not records(argv):
        from framepipe.cli import main as cli

        return cli(argv)
    from framepipe.targets import ENCODE
    from pipeline.hosts import StageHosts

    with StageHosts([ENCODE]) as hosts:
        from framepipe.cli import main as cli

        return cli(argv, hosts)
