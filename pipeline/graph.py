"""The pipeline graph: stages linked by named ports, and the rings they share (supervisor; pure data).

A link is an input port of one stage fed by an output port of another, written ``"stage.port"``:
the encoder's ``video`` input is fed by ``timestamp.placed``. The supervisor makes one pipe per link;
an output port with several links sends each message on all of them. ``Plan.lines`` prints the graph,
one line a stage, for ``framepipe plan`` and ``record --dry-run``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.ring import Geometry, ring_bytes


@dataclass(frozen=True)
class StageSpec:
    """One stage of a plan: what runs, with which settings, fed through which links."""

    name: str
    stage: str  # the stage class as "package.module:Class", imported only in its own process
    config: Any
    inputs: dict[str, str] = field(default_factory=dict)  # input port -> "upstream.port"
    extra: dict[str, Any] = field(default_factory=dict)
    rings: dict[str, str] = field(default_factory=dict)  # extra key -> ring key; gets the segment name
    source: bool = False  # a live source: Stop goes to it, its end of stream flows down
    essential: bool = True  # its end ends the recording (an audio source with no input just ends)
    awaited: bool = True  # the start waits until it is ready (audio joins the running recording instead)
    summary: str = ""  # what it does, for people (one line)

    def links(self) -> list[tuple[str, str, str]]:
        """(upstream stage, its output port, our input port) for every input."""
        return [(*link.split(".", 1), port) for port, link in self.inputs.items()]  # type: ignore[misc]


@dataclass(frozen=True)
class RingSpec:
    """A shared-memory ring the supervisor creates; stages find it in extra[key]."""

    key: str
    geometry: Geometry
    slots: int
    summary: str = ""


@dataclass(frozen=True)
class Plan:
    """Everything a recording runs: its stages, its rings and what the encoder feeds."""

    stages: tuple[StageSpec, ...]
    rings: tuple[RingSpec, ...]
    outputs: tuple[str, ...] = ()  # one line each, for people
    info: dict[str, Any] = field(default_factory=dict)  # what the planner resolved (the capture rectangle)

    def check(self) -> None:
        """Every link names a stage of the plan (a planner bug otherwise)."""
        names = {s.name for s in self.stages}
        for spec in self.stages:
            for upstream, _, port in spec.links():
                if upstream not in names:
                    raise ValueError(f"{spec.name}.{port} is fed by {upstream}, which is not in the plan")

    def lines(self) -> list[str]:
        """The graph for people: one line a stage (its inputs, what it does), then outputs and rings."""
        width = max(len(s.name) for s in self.stages)
        out = []
        for spec in self.stages:
            fed = ", ".join(f"{port} <- {link}" for port, link in spec.inputs.items()) or "live source"
            out.append(f"{spec.name:<{width}}  {spec.stage:<34} {fed}; {spec.summary}".rstrip("; "))
        out += [f"{'output':<{width}}  {line}" for line in self.outputs]
        for ring in self.rings:
            size = ring_bytes(ring.geometry, ring.slots)
            out.append(f"{'ring':<{width}}  {ring.key}: {ring.slots} slots, {size / 2**20:.0f} MiB; {ring.summary}")
        return out
