"""The camera in a corner (fp-encode): its newest picture pasted into each converted screen picture.

The camera ring's slots hold I420 pictures already the box's size (``stages.video.camera``), so a
paste is three small plane copies into the YUV frame the encoder just converted, in place: no extra
full-frame copy. The newest picture is held (its slot not given back) and pasted into every frame
until a newer one comes, so a camera slower than the screen repeats its picture. A circle is a
precomputed mask: the inside copied, the edge pixels blended by their coverage. A picture older than
``stale_ns`` against the screen frame is not pasted (the corner shows the screen): a camera that stalls
shows its last picture, then nothing, until it is back. Counted: frames with the camera, without.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline import messages as msg
from pipeline.ring import Ring
from stages.video.picture import i420_frame

EDGE_SAMPLES = 4  # a circle's edge coverage is measured on this many sub-pixel samples a side


def circle_alpha(width: int, height: int) -> np.ndarray:
    """Coverage (0..256) of the ellipse inscribed in ``width`` x ``height``, averaged on sub-pixel samples."""
    n = EDGE_SAMPLES
    ys = (np.arange(height * n) + 0.5) / (height * n) * 2 - 1
    xs = (np.arange(width * n) + 0.5) / (width * n) * 2 - 1
    inside = (xs[None, :] ** 2 + ys[:, None] ** 2) <= 1.0
    cover = inside.reshape(height, n, width, n).mean(axis=(1, 3))
    return np.round(cover * 256).astype(np.uint16)


class Mask:
    """One plane's circle: where to copy, and the edge pixels with their weights."""

    def __init__(self, width: int, height: int) -> None:
        alpha = circle_alpha(width, height)
        self.inside = alpha == 256
        self.edge = np.nonzero((alpha > 0) & (alpha < 256))
        self.weight = alpha[self.edge]
        self.rest = 256 - self.weight

    def paste(self, dst: np.ndarray, src: np.ndarray) -> None:
        np.copyto(dst, src, where=self.inside)
        e = self.edge
        dst[e] = (src[e] * self.weight + dst[e] * self.rest) >> 8


class Overlay:
    """The camera ring's newest picture, and its paste into the encoder's converted frames."""

    def __init__(self, ring: Ring, box: dict[str, Any], stale_ns: int) -> None:
        self.ring = ring
        self.x, self.y, self.width, self.height = box["x"], box["y"], box["width"], box["height"]
        self.stale_ns = stale_ns
        w, h = self.width, self.height
        self.planes = [ring.planes(i, w, h) for i in range(ring.slots)]
        self.masks = (Mask(w, h), Mask(w // 2, h // 2)) if box.get("shape") == "circle" else None
        self.held: int | None = None  # the slot of the newest picture (not given back yet)
        self.held_ns = 0
        self.counts = {"camera_pictures": 0, "camera_shown": 0, "camera_not_shown": 0}

    def take(self, frame: msg.Frame) -> None:
        """A newer picture: the one held so far goes back to the camera (slots go back oldest first)."""
        if self.held is not None:
            self.ring.release()
        self.held, self.held_ns = frame.slot, frame.capture_ns
        self.counts["camera_pictures"] += 1

    def paste(self, frame: Any, capture_ns: int) -> bool:
        """Paste the held picture into ``frame`` (yuv420p, in place) unless it is stale at ``capture_ns``."""
        if self.held is None or capture_ns - self.held_ns > self.stale_ns:
            self.counts["camera_not_shown"] += 1
            return False
        for i, src in enumerate(self.planes[self.held]):
            s = 0 if i == 0 else 1
            plane = frame.planes[i]
            rows = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)
            dst = rows[self.y >> s : (self.y >> s) + src.shape[0], self.x >> s : (self.x >> s) + src.shape[1]]
            if self.masks is None:
                dst[...] = src
            else:
                self.masks[min(i, 1)].paste(dst, src)
        self.counts["camera_shown"] += 1
        return True

    def picture(self) -> np.ndarray | None:
        """The held picture's slot as one (height * 3/2, width) I420 array (its own track), or None."""
        if self.held is None:
            return None
        return self.ring.raw(self.held).reshape(self.height * 3 // 2, self.width)

    def close(self) -> None:
        """Give the held slot back and drop every view (before the ring is closed)."""
        if self.held is not None:
            self.ring.release()
            self.held = None
        self.planes = []


class CameraTrack:
    """The camera as its own video track (``overlay = "none"``): each picture encoded as it comes, at its
    running time in ms (the camera's own rate), from a copy (a small one), its slot given back at once."""

    def __init__(self, ring: Ring, stream: Any, box: dict[str, Any]) -> None:
        self.ring, self.stream = ring, stream
        w, h = self.width, self.height = box["width"], box["height"]
        self.planes = [ring.planes(i, w, h) for i in range(ring.slots)]
        self.last_pts = -1
        self.counts = {"camera_pictures": 0, "camera_encoded": 0}

    def encode(self, picture: msg.Frame, shift_ns: int | None) -> list[Any]:
        """The packets of one picture (none while paused: ``shift_ns`` None); its slot goes back."""
        self.counts["camera_pictures"] += 1
        if shift_ns is None:
            self.ring.release()
            return []
        frame = i420_frame(self.planes[picture.slot])
        self.ring.release()
        self.last_pts = frame.pts = max(self.last_pts + 1, (picture.capture_ns - shift_ns) // 1_000_000)
        self.counts["camera_encoded"] += 1
        return list(self.stream.encode(frame))

    def flush(self) -> list[Any]:
        return list(self.stream.encode(None))

    def close(self) -> None:
        self.planes = []
