"""The file's audio tracks (process fp-encode): audio ring blocks in, one encoded stream per track.

The encoder stage adds these encoders (in its "null" container) before its first packet, once the
audio stage has named the tracks (``AudioTracks``). Each ``AudioBlock`` is copied out of its slot
into a PyAV frame (a few KiB), the slot goes back at once, and the frame is encoded at ``pts`` = its
first sample's index on the track's timeline (time base 1/rate), so audio and video share the
pipeline clock's zero; samples inside a pause are cut out and the rest shifted back.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np

from pipeline import messages as msg
from pipeline.pause import PauseSchedule
from pipeline.ring import Ring
from stages.outputs.formats import AUDIO_CODECS, GLOBAL_HEADER

LAYOUTS = {1: "mono", 2: "stereo"}


class AudioEncoder:
    """One stream per track in the encoder's container (fp-encode)."""

    def __init__(
        self, codecs: Any, ring: Ring, tracks: msg.AudioTracks, codec: str, bitrate_kbps: int, pauses: PauseSchedule
    ) -> None:
        encoder, self.format, _ = AUDIO_CODECS[codec]
        self.ring = ring
        self.layout = LAYOUTS[tracks.channels]
        self.rate = tracks.rate
        self.time_base = Fraction(1, tracks.rate)
        self.streams: list[Any] = []
        for name in tracks.names:
            stream: Any = codecs.add_stream(encoder, rate=tracks.rate, layout=self.layout)
            stream.codec_context.format = self.format
            stream.codec_context.flags |= GLOBAL_HEADER
            stream.time_base = self.time_base
            stream.bit_rate = bitrate_kbps * 1000
            stream.metadata["title"] = name  # Matroska's track name
            stream.metadata["handler_name"] = name  # MP4's
            self.streams.append(stream)
        self.views = [ring.pixels(i).view(np.float32)[..., 0] for i in range(ring.slots)]
        self.names = list(tracks.names)
        self.samples = [0] * len(tracks.names)
        self.pauses = pauses
        self.counts = {"blocks": 0, "packets": 0, "bytes": 0, "seq_mismatch": 0, "paused_samples": 0}

    def encode(self, block: msg.AudioBlock) -> list[Any]:
        """Encode one block, without the samples a pause covers (the slot is released at once); the packets."""
        import av

        view = self.views[block.slot][:, : block.frames]
        parts = self.pauses.cut(block.pts, block.frames, self.rate)
        packets = []
        for offset, count, pts in parts:
            data = view[:, offset : offset + count]
            if self.format.endswith("p"):
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=self.format, layout=self.layout)
            else:  # packed: channels interleaved in one row
                frame = av.AudioFrame.from_ndarray(data.T.reshape(1, -1), format=self.format, layout=self.layout)
            frame.sample_rate = self.rate
            frame.pts = pts
            frame.time_base = self.time_base
            packets += self.streams[block.track].encode(frame)
            self.samples[block.track] += count
        if self.ring.header(block.slot).seq != block.seq:  # the writer overran the slot: a bug, never silent
            self.counts["seq_mismatch"] += 1
        self.ring.release()
        self.counts["paused_samples"] += block.frames - sum(count for _, count, _ in parts)
        self.counts["blocks"] += 1
        return self._count(packets)

    def flush(self) -> list[Any]:
        """Every track's remaining packets (end of stream)."""
        return self._count([p for s in self.streams for p in s.encode(None)])

    def _count(self, packets: list[Any]) -> list[Any]:
        self.counts["packets"] += len(packets)
        self.counts["bytes"] += sum(p.size for p in packets)
        return packets

    def stats(self) -> dict[str, Any]:
        return {**self.counts, "samples": dict(zip(self.names, self.samples, strict=True))}

    def close(self) -> None:
        """Drop the slot views, then the ring."""
        self.views = []
        self.streams = []
        self.ring.close()
