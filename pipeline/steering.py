"""The supervisor's side of the control plane (main process): requests and signals in, answers out.

Requests come on the recording's socket (``pipeline.control``); SIGUSR2 toggles pause and SIGUSR1
saves the replay buffer, as in GPU Screen Recorder. A pause or resume is fixed on the frame grid a
tick ahead, sent to every stage (the encoder applies it) and kept here for the status. Every request
is answered; a stop is answered once the stages are done and the files closed.
"""

from __future__ import annotations

import math
import signal
from collections.abc import Callable
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from pipeline import messages as msg
from pipeline.clock import NS_PER_S, now_ns
from pipeline.control import Client, ControlError, Reply, Request, Server
from pipeline.pause import PauseSchedule

if TYPE_CHECKING:
    from pipeline.supervisor import Supervisor

STEER_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)
MAX_MARKERS = 10_000


class RecordingState(StrEnum):
    """A recording as its clients see it."""

    STARTING = "starting"  # stages opening their devices
    RECORDING = "recording"
    PAUSED = "paused"
    STOPPING = "stopping"  # draining: the files are being closed
    DONE = "done"


class Steering:
    """Answers control requests and steering signals for one supervisor."""

    def __init__(self, sup: Supervisor, status_of: Callable[[Supervisor], dict[str, Any]], period_ns: float,
                 listen: bool = True, replay: bool = False) -> None:  # fmt: skip
        self.sup = sup
        self.status_of = status_of
        self.period_ns = period_ns  # one frame: pauses begin and end on the grid
        self.state = RecordingState.STARTING
        self.pauses = PauseSchedule()
        self.markers: list[dict[str, Any]] = []
        self.stop_requested = False
        self.signals: list[int] = []
        self.server = Server() if listen else None
        self.clients: list[Client] = []
        self.waiting: list[Client] = []  # stop requests, answered at the end
        self.replay = replay  # the recording has a replay buffer
        self.requests = 0
        self.saving: dict[int, Client | None] = {}  # save-replay requests the encoder has not answered yet

    # --- the supervisor's loop calls these ---------------------------------------------------------

    def waitables(self) -> list[Any]:
        return [*([self.server] if self.server is not None else []), *self.clients]

    def ready(self, ready: list[Any]) -> None:
        """Accept new clients; answer every complete request."""
        if self.server is not None and self.server in ready:
            while (client := self.server.accept()) is not None:
                self.clients.append(client)
        for client in [c for c in self.clients if c in ready]:
            try:
                request = client.read()
            except EOFError:
                self.clients.remove(client)
                client.close()
                continue
            if request is None:
                continue
            self.clients.remove(client)
            if isinstance(request, Reply):
                client.reply(request)
            elif request.verb == "stop":
                self.waiting.append(client)
                self.stop()
            elif request.verb == "save-replay":
                self.save_replay(request.args.get("seconds"), client)
            else:
                client.reply(self.answer(request))

    def on_signal(self, signum: int) -> None:
        self.signals.append(signum)

    def tick(self) -> None:
        """Act on the steering signals that came (outside the signal handler)."""
        while self.signals:
            signum = self.signals.pop(0)
            if signum == signal.SIGUSR1:
                self.save_replay(None, None)
                continue
            reply = self.toggle()
            self.sup.on_message("framepipe: pause toggle: " + (self.state.value if reply.ok else reply.error))

    def started(self) -> None:
        self.state = RecordingState.RECORDING

    def stopping(self) -> None:
        if self.state is not RecordingState.DONE:
            self.state = RecordingState.STOPPING

    def finish(self, outputs: list[str], ok: bool, error: str = "") -> None:
        """The stages are done: answer the stop requests, close the socket."""
        self.state = RecordingState.DONE
        for client in self.waiting:
            client.reply(Reply(True, {"outputs": outputs, "state": self.state.value, "clean": ok, "error": error}))
        for client in [*self.clients, *(c for c in self.saving.values() if c is not None)]:
            client.reply(Reply(False, error="the recording has ended"))
        self.saving = {}
        self.waiting, self.clients = [], []
        if self.server is not None:
            self.server.close()
            self.server = None

    # --- the vocabulary ----------------------------------------------------------------------------

    def answer(self, request: Request) -> Reply:
        try:
            if request.verb == "status":
                return Reply(True, self.status())
            actions = {"pause": self.pause, "resume": self.resume, "toggle-pause": self.toggle}
            if request.verb in actions:
                return actions[request.verb]()
            if request.verb == "marker":
                return self.marker(str(request.args["text"]))
        except ControlError as exc:
            return Reply(False, error=str(exc))
        return Reply(False, error=f"unknown request {request.verb}")

    def status(self) -> dict[str, Any]:
        now = self.running_ns()
        elapsed = max(0, now)
        paused = self.pauses.paused_ns(now) if now > 0 else 0
        return {
            **self.status_of(self.sup),
            "state": self.state.value,
            "elapsed_s": round(elapsed / NS_PER_S, 3),
            "recorded_s": round((elapsed - paused) / NS_PER_S, 3),
            "paused_s": round(paused / NS_PER_S, 3),
            "pauses": len(self.pauses.spans),
            "pause_spans_s": [[start / NS_PER_S, None if end is None else end / NS_PER_S]
                              for start, end in self.pauses.spans],  # running times, for the judges
            "markers": self.markers,
        }

    def running_ns(self) -> int:
        base = self.sup.outcome.base_time
        return now_ns() - base if base else 0

    def _next_tick(self) -> int:
        """The running time of the frame tick after the next one: every stage hears of it before its frame."""
        k = math.floor(self.running_ns() / self.period_ns) + 1
        return round(k * self.period_ns)

    def _live(self) -> None:
        if self.state is RecordingState.STARTING:
            raise ControlError("the recording has not started yet: try again in a moment")
        if self.state in (RecordingState.STOPPING, RecordingState.DONE):
            raise ControlError("the recording is stopping")

    def pause(self) -> Reply:
        self._live()
        if self.state is RecordingState.PAUSED:
            return Reply(True, {"state": self.state.value, "changed": False})
        at = self._next_tick()
        self.pauses.pause(at)
        self.sup.broadcast(msg.Pause(at))
        self.state = RecordingState.PAUSED
        return Reply(True, {"state": self.state.value, "changed": True, "at_s": at / NS_PER_S})

    def resume(self) -> Reply:
        self._live()
        if self.state is not RecordingState.PAUSED:
            return Reply(True, {"state": self.state.value, "changed": False})
        at = max(self._next_tick(), self.pauses.spans[-1][0])
        self.pauses.resume(at)
        self.sup.broadcast(msg.Resume(at))
        self.state = RecordingState.RECORDING
        return Reply(True, {"state": self.state.value, "changed": True, "at_s": at / NS_PER_S})

    def toggle(self) -> Reply:
        return self.resume() if self.state is RecordingState.PAUSED else self.pause()

    def stop(self) -> None:
        self.stop_requested = True
        self.stopping()

    def marker(self, text: str) -> Reply:
        self._live()
        if len(self.markers) >= MAX_MARKERS:
            raise ControlError(f"this recording has {MAX_MARKERS} markers already")
        now = self.running_ns()
        at = max(0, now - self.pauses.paused_ns(now))  # where it is in the file
        self.markers.append({"t_s": round(at / NS_PER_S, 3), "text": text})
        return Reply(True, {"t_s": round(at / NS_PER_S, 3), "text": text})

    def save_replay(self, seconds: float | None, client: Client | None) -> None:
        """Ask the encoder's replay buffer for a file; the answer (to the client, or a line) comes with Saved."""
        if not self.replay:
            self._saved_reply(client, Reply(False, error="this recording has no replay buffer: start it with "
                                                         "--replay SECONDS"))  # fmt: skip
            return
        try:
            self._live()
        except ControlError as exc:
            self._saved_reply(client, Reply(False, error=str(exc)))
            return
        self.requests += 1
        self.saving[self.requests] = client
        self.sup.broadcast(msg.SaveReplay(self.requests, float(seconds or 0.0)))

    def saved(self, message: msg.Saved) -> None:
        """The encoder wrote (or could not write) a replay: answer whoever asked."""
        client = self.saving.pop(message.request, None)
        if message.error:
            reply = Reply(False, error=f"cannot save the replay: {message.error}")
        else:
            reply = Reply(True, {"path": message.path, "seconds": round(message.seconds, 3)})
        self._saved_reply(client, reply)

    def _saved_reply(self, client: Client | None, reply: Reply) -> None:
        if client is not None:
            client.reply(reply)
        else:  # a signal asked: say it on the terminal
            self.sup.on_message("framepipe: " + (f"saved the replay to {reply.result['path']}" if reply.ok
                                                 else reply.error))  # fmt: skip
