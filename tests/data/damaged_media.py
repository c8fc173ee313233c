"""Damaged video files among good ones, for the tests of `convert`.

The bug report behind them: `convert` died on the first exception that
was not a `MediaError` (a UnicodeDecodeError from PyAV reading a corrupt
metadata tag) and wrote nothing. The fixtures that write these files
(`damaged`, `hostile`) are in `tests/data/conftest.py`.
"""

import json

import av
import numpy as np

DAMAGED_RATE = 16000
DAMAGED_SETTINGS = dict(fps=8, image_size=(32, 32), sample_rate=DAMAGED_RATE)
DAMAGED = [
    "empty.mp4",
    "random.mp4",
    "truncated.mp4",
    "flipped.mp4",
    "missing.mp4",
]
# Damaged in their text tags only: the media decode, so they are kept.
TAG_DAMAGED = ["metadata.mp4", "handler.mp4"]


def flip_bytes(data, start, end, rng, count):
    """`data` with `count` bytes in `[start, end)` XORed with random bits."""
    data = bytearray(data)
    for position in rng.choice(np.arange(start, end), count, replace=False):
        data[position] ^= int(rng.integers(1, 256))
    return bytes(data)


def write_with_title(source, path, title):
    """Copy the streams of `source` to `path`, with a title tag."""
    with av.open(str(source)) as src, av.open(str(path), "w") as dst:
        dst.metadata["title"] = title
        streams = {
            s.index: dst.add_stream_from_template(s) for s in src.streams
        }
        for packet in src.demux():
            if packet.dts is not None:
                packet.stream = streams[packet.stream.index]
                dst.mux(packet)


def write_annotations(root, videos):
    annotations = root / "qa.jsonl"
    annotations.write_text(
        "".join(
            json.dumps({"video": v, "question": f"q {v}", "answer": "a"}) + "\n"
            for v in videos
        )
    )
    return annotations
