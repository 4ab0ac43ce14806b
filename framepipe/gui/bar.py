"""The bar's window (Tk's thread): three faces, one at a time, and the keys that drive them.

- before: microphone, "sound of the computer", what to record (whole screen and its monitor, drag an
  area, pick a window), the folder, Record;
- while recording: a red dot, the time recorded, frames dropped (amber once any was), Pause/Resume, Stop;
- after: where it was saved, Play, Show in folder, New recording.

Keys: R records, P pauses and resumes, S stops, Esc cancels a selection. On Record the bar shrinks to
its recording face and moves to the bottom-right corner of the recorded monitor, on top (it is in a
whole-screen recording there, small, like QuickTime's menu-bar item); for an area or a window it is
withdrawn while the recorder's overlay is up. A tick every ``TICK_MS`` renders the controller's latest
snapshot, so a stop from ``framepipe ctl`` shows here too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import tkinter as tk
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from tkinter import filedialog, ttk
from typing import Any

from framepipe.gui import settings as saved
from framepipe.gui.recording import Choice, Controller, Phase, Snapshot
from framepipe.plan import recording_name

TICK_MS = 100
CORNER_MARGIN = (16, 48)  # pixels from the right and bottom edges (a panel often sits at the bottom)
RED, GREY, AMBER = "#e0342c", "#9a9a9a", "#f0a020"
WIDGETS_ENV = "FRAMEPIPE_GUI_WIDGETS"  # a file the bar writes its face and buttons' places to (tests, screenshots)
TARGET_LABELS = {"screen": "Whole screen", "area": "Drag an area", "window": "Pick a window"}


def clock(seconds: float) -> str:
    """Seconds as M:SS (H:MM:SS past an hour)."""
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def microphones(audio: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, source) for the menu: the default input first, the other inputs, then none."""
    inputs = audio.get("inputs") or []
    default = [d for d in inputs if d.get("default")]
    items = [(f"Default ({default[0]['name']})" if default else "Default", "default")] if inputs else []
    items += [(str(d["name"]), str(d["name"])) for d in inputs if not d.get("default")]
    return [*items, ("None", saved.NO_MICROPHONE)]


def short_path(path: Path) -> str:
    home = str(Path.home())
    text = str(path)
    return "~" + text[len(home):] if text == home or text.startswith(home + os.sep) else text


class Bar:
    """The window and its faces; ``run()`` is Tk's main loop."""

    def __init__(self, root: tk.Tk, controller: Controller | None = None) -> None:
        self.root = root
        self.controller = controller or Controller()
        self.settings = saved.load()
        self.monitors = self._monitors()
        self.mics: list[tuple[str, str]] = [("Looking for microphones...", self.settings.microphone)]
        self._found_mics: list[list[tuple[str, str]]] = []  # the worker thread appends the menu once
        self.mics_found = False
        self.rendered: tuple[Any, ...] = ()
        self.cancelled = False
        self.closing = False
        self.home_place: str | None = None  # where the bar was before it moved to the corner
        self.widgets: dict[str, tk.Widget] = {}
        self.last_doc: dict[str, Any] = {}
        root.title("framepipe")
        root.resizable(False, False)
        root.protocol("WM_DELETE_WINDOW", self.close)
        style = ttk.Style(root)
        if "clam" in style.theme_names():
            style.theme_use("clam")
        style.configure("Record.TButton", foreground="white", background=RED, font=("DejaVu Sans", 11, "bold"))
        style.map("Record.TButton", background=[("active", "#c02820")])
        style.configure("Time.TLabel", font=("DejaVu Sans Mono", 14, "bold"))
        style.configure("Drops.TLabel", foreground="#555555", padding=(6, 2))
        style.configure("Dropped.TLabel", foreground="#222222", background=AMBER, padding=(6, 2))
        style.configure("Hint.TLabel", foreground="#777777", font=("DejaVu Sans", 8))
        style.configure("Error.TLabel", foreground="#b00020")
        style.configure("Title.TLabel", font=("DejaVu Sans", 11, "bold"))
        self.faces = {"setup": self._setup_face(), "live": self._live_face(), "saved": self._saved_face()}
        self.face = ""
        keys: dict[str, Callable[[], None]] = {"r": self.record, "p": self.pause, "s": self.stop}
        for key, action in keys.items():
            for name in (key, key.upper()):
                root.bind_all(f"<KeyPress-{name}>", self._key(action))
        root.bind_all("<Escape>", lambda _e: self.cancel())
        self.show("setup")
        threading.Thread(target=self._find_mics, args=(self._found_mics,), name="fp-gui-devices", daemon=True).start()
        if self.controller.attach():  # a recording is running (this bar's predecessor started it)
            self.rendered = ()

    # --- the faces ---------------------------------------------------------------------------------

    def _setup_face(self) -> ttk.Frame:
        face = ttk.Frame(self.root, padding=12)
        face.columnconfigure(1, weight=1)
        ttk.Label(face, text="Microphone").grid(row=0, column=0, sticky="w", pady=3, padx=(0, 10))
        self.mic_var = tk.StringVar(value=self.mics[0][0])
        self.mic_menu = ttk.Combobox(face, textvariable=self.mic_var, state="readonly", width=30,
                                     values=[label for label, _ in self.mics])  # fmt: skip
        self.mic_menu.grid(row=0, column=1, columnspan=2, sticky="ew", pady=3)
        self.system_var = tk.BooleanVar(value=self.settings.system_audio)
        self._name("system", ttk.Checkbutton(face, text="Sound of the computer", variable=self.system_var)).grid(
            row=1, column=1, columnspan=2, sticky="w", pady=(0, 6))
        ttk.Label(face, text="Record").grid(row=2, column=0, sticky="nw", pady=3)
        self.target_var = tk.StringVar(value=self.settings.target)
        for row, (target, label) in enumerate(TARGET_LABELS.items(), start=2):
            self._name(target, ttk.Radiobutton(face, text=label, value=target, variable=self.target_var)).grid(
                row=row, column=1, sticky="w", pady=1)
        self.monitor_var = tk.StringVar()
        if len(self.monitors) > 2:  # [0] is all of them
            names = [self._monitor_label(i) for i in range(len(self.monitors))]
            self.monitor_var.set(self._monitor_label(min(self.settings.monitor, len(self.monitors) - 1)))
            ttk.Combobox(face, textvariable=self.monitor_var, values=names, state="readonly", width=18).grid(
                row=2, column=2, sticky="e")
        ttk.Label(face, text="Save in").grid(row=5, column=0, sticky="w", pady=(8, 3))
        self.folder_var = tk.StringVar(value=short_path(self.settings.save_folder()))
        ttk.Label(face, textvariable=self.folder_var, width=24).grid(row=5, column=1, sticky="w", pady=(8, 3))
        self._name("folder", ttk.Button(face, text="Change...", command=self.choose_folder)).grid(
            row=5, column=2, sticky="e", pady=(8, 3))
        self._name("record", ttk.Button(face, text="\u25cf  Record", style="Record.TButton",
                                        command=self.record)).grid(row=6, column=0, columnspan=3, sticky="ew",
                                                                   pady=(10, 2))  # fmt: skip
        ttk.Label(face, text="R record  \u00b7  P pause  \u00b7  S stop  \u00b7  Esc cancel a selection",
                  style="Hint.TLabel").grid(row=7, column=0, columnspan=3)  # fmt: skip
        self.setup_error = ttk.Label(face, style="Error.TLabel", wraplength=400)
        self.setup_error.grid(row=8, column=0, columnspan=3, sticky="w", pady=(6, 0))
        self.setup_error.grid_remove()  # shown with a message only
        return face

    def _live_face(self) -> ttk.Frame:
        face = ttk.Frame(self.root, padding=(10, 8))
        self.dot = tk.Canvas(face, width=18, height=18, highlightthickness=0, bg=ttk.Style().lookup("TFrame",
                             "background"))  # fmt: skip
        self.dot_item = self.dot.create_oval(2, 2, 16, 16, fill=RED, outline="")
        self.dot.grid(row=0, column=0, padx=(0, 6))
        self.time_label = ttk.Label(face, text="0:00", style="Time.TLabel", width=7)
        self.time_label.grid(row=0, column=1)
        self.drops_label = ttk.Label(face, text="0 dropped", style="Drops.TLabel", width=11, anchor="center")
        self.drops_label.grid(row=0, column=2, padx=6)
        self.pause_button = self._name("pause", ttk.Button(face, text="Pause", width=7, command=self.pause))
        self.pause_button.grid(row=0, column=3, padx=2)
        self._name("stop", ttk.Button(face, text="\u25a0 Stop", width=7, command=self.stop)).grid(row=0, column=4,
                                                                                                   padx=2)
        self.live_note = ttk.Label(face, style="Hint.TLabel")
        self.live_note.grid(row=1, column=0, columnspan=5, sticky="w")
        return face

    def _saved_face(self) -> ttk.Frame:
        face = ttk.Frame(self.root, padding=12)
        ttk.Label(face, text="Saved", style="Title.TLabel").grid(row=0, column=0, columnspan=3, sticky="w")
        self.saved_path = ttk.Label(face, wraplength=360)
        self.saved_path.grid(row=1, column=0, columnspan=3, sticky="w", pady=(2, 6))
        self._name("play", ttk.Button(face, text="\u25b6 Play", command=self.play)).grid(row=2, column=0, padx=(0, 4))
        self._name("show", ttk.Button(face, text="Show in folder", command=self.show_folder)).grid(row=2, column=1,
                                                                                                   padx=4)
        self._name("new", ttk.Button(face, text="New recording", command=lambda: self.show("setup"))).grid(
            row=2, column=2, padx=(4, 0))
        self.saved_note = ttk.Label(face, style="Error.TLabel", wraplength=360)
        self.saved_note.grid(row=3, column=0, columnspan=3, sticky="w", pady=(6, 0))
        self.saved_note.grid_remove()
        return face

    @staticmethod
    def _key(action: Callable[[], None]) -> Callable[[tk.Event[Any]], str]:
        def handler(_event: tk.Event[Any]) -> str:
            action()
            return "break"

        return handler

    def _name(self, name: str, widget: Any) -> Any:
        self.widgets[name] = widget
        return widget

    def _monitor_label(self, index: int) -> str:
        m = self.monitors[index]
        return "All monitors" if index == 0 else f"Monitor {index}: {m['width']}x{m['height']}"

    def _monitors(self) -> list[dict[str, int]]:
        from framepipe.devices import list_monitors
        from pipeline.errors import SetupError

        try:
            return list_monitors()
        except SetupError:
            width, height = self.root.winfo_screenwidth(), self.root.winfo_screenheight()
            return [{"index": 0, "left": 0, "top": 0, "width": width, "height": height}] * 2

    @staticmethod
    def _find_mics(found: list[list[tuple[str, str]]]) -> None:
        """The audio inputs (the devices module lists them in a short-lived audio process): worker thread. It
        holds no reference to the bar: Tk's variables must be freed in Tk's thread."""
        from framepipe.devices import list_audio

        found.append(microphones(list_audio()))

    # --- actions (keys and buttons) ------------------------------------------------------------------

    def choice(self) -> Choice:
        """What the menus say, as a recording to start (and remembered)."""
        source = dict(self.mics).get(self.mic_var.get(), saved.NO_MICROPHONE)
        monitor = self.settings.monitor
        if len(self.monitors) > 2:
            labels = [self._monitor_label(i) for i in range(len(self.monitors))]
            monitor = labels.index(self.monitor_var.get()) if self.monitor_var.get() in labels else 1
        self.settings = replace(self.settings, microphone=source, system_audio=bool(self.system_var.get()),
                                target=self.target_var.get(), monitor=monitor)  # fmt: skip
        saved.save(self.settings)
        sources = tuple(s for s in (source if source != saved.NO_MICROPHONE else "",
                                    "system" if self.settings.system_audio else "") if s)  # fmt: skip
        folder = self.settings.save_folder()
        folder.mkdir(parents=True, exist_ok=True)
        return Choice(recording_name(folder), self.settings.target, monitor, sources)

    def record(self) -> None:
        if self.face not in ("setup", "saved") or self.controller.busy:
            return
        try:
            choice = self.choice()
        except OSError as exc:
            self._say(self.setup_error, f"Cannot use that folder ({exc.strerror}): choose another.")
            self.show("setup")
            return
        self.cancelled = False
        self.controller.start(choice)
        self.tick(reschedule=False)

    def pause(self) -> None:
        self.controller.toggle_pause()

    def stop(self) -> None:
        self.controller.stop()

    def cancel(self) -> None:
        if self.controller.latest().phase is Phase.STARTING:
            self.cancelled = True
            self.controller.cancel()

    def close(self) -> None:
        """The window closed: a recording in progress is stopped and saved first, then the bar ends."""
        if not self.controller.busy:
            self.root.destroy()
            return
        self.closing = True
        if self.controller.latest().phase is Phase.STARTING:
            self.controller.cancel()
        else:
            self.controller.stop()

    def choose_folder(self) -> None:
        chosen = filedialog.askdirectory(parent=self.root, title="Save recordings in",
                                         initialdir=str(self.settings.save_folder()), mustexist=True)  # fmt: skip
        if chosen:
            self.settings = replace(self.settings, folder=chosen)
            saved.save(self.settings)
            self.folder_var.set(short_path(Path(chosen)))

    def play(self) -> None:
        self._open(self.controller.latest().path)

    def show_folder(self) -> None:
        self._open(str(Path(self.controller.latest().path).parent))

    def _open(self, target: str) -> None:
        """The desktop's own program for ``target`` (xdg-open), in a session of its own."""
        if shutil.which("xdg-open") is None:
            self._say(self.saved_note, f"No xdg-open here: open {target} yourself.")
            return
        subprocess.Popen(["xdg-open", target], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip

    # --- rendering ---------------------------------------------------------------------------------

    def show(self, face: str) -> None:
        if face == self.face:
            return
        for name, frame in self.faces.items():
            if name != face:
                frame.pack_forget()
        self.faces[face].pack(fill="both", expand=True)
        self.face = face
        if face == "setup":
            self.root.focus_set()

    def tick(self, reschedule: bool = True) -> None:
        if self._found_mics and not self.mics_found:
            self._set_mics(self._found_mics[0])
        snap = self.controller.latest()
        key = (snap.phase, int(snap.recorded_s), snap.dropped, snap.path, snap.message)
        if key != self.rendered:
            self.rendered = key
            self.render(snap)
        self._write_widgets(snap)
        if self.closing and not self.controller.busy:
            self.root.destroy()
            return
        if reschedule:
            self.root.after(TICK_MS, self.tick)

    def _set_mics(self, mics: list[tuple[str, str]]) -> None:
        self.mics, self.mics_found = mics, True
        self.mic_menu.configure(values=[label for label, _ in mics])
        wanted = next((label for label, source in mics if source == self.settings.microphone), mics[0][0])
        self.mic_var.set(wanted)

    def render(self, snap: Snapshot) -> None:
        phase = snap.phase
        if phase is Phase.IDLE:
            self.show("setup")
        elif phase is Phase.FAILED:
            self._say(self.setup_error, "" if self.cancelled else snap.message.removeprefix("framepipe: "))
            self._go_home()
            self.show("setup")
        elif phase is Phase.SAVED:
            self.saved_path.configure(text=short_path(Path(snap.path)))
            self._say(self.saved_note, snap.message)
            self._go_home()
            self.show("saved")
        elif phase is Phase.STARTING and snap.target in ("area", "window") and self.controller.busy:
            if self.root.state() != "withdrawn":
                self.root.withdraw()  # the recorder's overlay is up: keep out of the way
        else:
            self._live(snap)
        self.root.update_idletasks()

    def _live(self, snap: Snapshot) -> None:
        phase = snap.phase
        self._say(self.setup_error, "")
        self.show("live")
        if self.root.state() == "withdrawn":
            self.root.deiconify()
        if self.home_place is None:
            self._to_corner()
        recording = phase is Phase.RECORDING
        self.dot.itemconfigure(self.dot_item, fill=RED if recording else GREY)
        words = {Phase.STARTING: "starting", Phase.PAUSED: "paused", Phase.STOPPING: "saving"}
        self.time_label.configure(text=clock(snap.recorded_s) if phase in (Phase.RECORDING, Phase.PAUSED)
                                  else "...")  # fmt: skip
        self.drops_label.configure(text=f"{snap.dropped} dropped",
                                   style="Dropped.TLabel" if snap.dropped else "Drops.TLabel")  # fmt: skip
        self.pause_button.configure(text="Resume" if phase is Phase.PAUSED else "Pause",
                                    state="normal" if phase in (Phase.RECORDING, Phase.PAUSED) else "disabled")
        name = Path(snap.path).name if snap.path else ""
        self.live_note.configure(text=f"{words.get(phase, 'recording')}: {name}" if name else words.get(phase, ""))

    @staticmethod
    def _say(label: ttk.Label, text: str) -> None:
        """A message label shows only with a message."""
        label.configure(text=text)
        if text:
            label.grid()
        else:
            label.grid_remove()

    def _to_corner(self) -> None:
        """Move to the bottom-right corner of the recorded monitor (remembering where the bar was)."""
        self.root.update_idletasks()
        self.home_place = f"+{self.root.winfo_x()}+{self.root.winfo_y()}"
        index = self.settings.monitor if self.settings.monitor < len(self.monitors) else 0
        m = self.monitors[index]
        w, h = self.root.winfo_reqwidth(), self.root.winfo_reqheight()
        x, y = m["left"] + m["width"] - w - CORNER_MARGIN[0], m["top"] + m["height"] - h - CORNER_MARGIN[1]
        self.root.geometry(f"+{x}+{y}")
        self.root.attributes("-topmost", True)

    def _go_home(self) -> None:
        if self.root.state() == "withdrawn":
            self.root.deiconify()
        if self.home_place is not None:
            self.root.attributes("-topmost", False)
            self.root.geometry(self.home_place)
            self.home_place = None

    def _write_widgets(self, snap: Snapshot) -> None:
        """Tests and screenshots: the face shown and where each named button is on the screen (root coordinates)."""
        target = os.environ.get(WIDGETS_ENV)
        if not target:
            return
        places = {name: [w.winfo_rootx(), w.winfo_rooty(), w.winfo_width(), w.winfo_height()]
                  for name, w in self.widgets.items() if w.winfo_ismapped()}  # fmt: skip
        doc = {"face": self.face, "phase": snap.phase.value, "pid": snap.pid, "path": snap.path,
               "message": snap.message, "microphone": self.mic_var.get(), "mics_found": self.mics_found,
               "window": [self.root.winfo_rootx(), self.root.winfo_rooty(), self.root.winfo_width(),
                          self.root.winfo_height()], "widgets": places}  # fmt: skip
        if doc == self.last_doc:
            return
        self.last_doc = doc
        tmp = f"{target}.tmp"
        Path(tmp).write_text(json.dumps(doc), encoding="utf-8")
        os.replace(tmp, target)

    def run(self) -> None:
        self.root.after(TICK_MS, self.tick)
        self.root.mainloop()
