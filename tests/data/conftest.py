"""Fixtures of damaged video files among good ones (`convert`'s tests)."""

import shutil

import av
import numpy as np
import pytest

from keras_mirasol.data import read_clip
from keras_mirasol.data import write_clip
from tests.data.damaged_media import DAMAGED
from tests.data.damaged_media import DAMAGED_RATE
from tests.data.damaged_media import DAMAGED_SETTINGS
from tests.data.damaged_media import TAG_DAMAGED
from tests.data.damaged_media import flip_bytes
from tests.data.damaged_media import write_annotations
from tests.data.damaged_media import write_with_title


@pytest.fixture(scope="module")
def damaged(tmp_path_factory):
    """6 good clips (32x32, 8 frames at 8 fps, 1 s of 16 kHz audio) and
    damaged files between them; annotations name them all, in that order,
    and a file that is not there."""
    root = tmp_path_factory.mktemp("damaged")
    videos = root / "videos"
    videos.mkdir()
    good = [f"good{i}.mp4" for i in range(6)]
    for index, name in enumerate(good):
        t = np.arange(DAMAGED_RATE) / DAMAGED_RATE
        audio = 0.4 * np.sin(2 * np.pi * (300 + 100 * index) * t)
        frames = np.broadcast_to(
            (20 * np.arange(8) + 5 * index)[:, None, None, None],
            (8, 32, 32, 3),
        )
        write_clip(videos / name, frames, 8, audio, DAMAGED_RATE)
    data = (videos / "good0.mp4").read_bytes()
    rng = np.random.default_rng(0)
    (videos / "empty.mp4").write_bytes(b"")
    (videos / "random.mp4").write_bytes(rng.bytes(3000))
    (videos / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (videos / "flipped.mp4").write_bytes(
        flip_bytes(data, 0, len(data), rng, 200)
    )
    # A title tag of the container (moov/udta/meta/ilst) and a stream's
    # handler name (moov/trak/mdia/hdlr), made invalid UTF-8.
    write_with_title(videos / "good0.mp4", root / "titled.mp4", "a title")
    titled = (root / "titled.mp4").read_bytes()
    udta = titled.index(b"udta", titled.index(b"moov"))
    title = titled.index(b"a title", titled.index(b"ilst", udta))
    (videos / "metadata.mp4").write_bytes(
        flip_bytes(titled, title, title + 7, rng, 7)
    )
    handler = data.index(b"VideoHandler", data.index(b"hdlr"))
    (videos / "handler.mp4").write_bytes(
        data[:handler] + b"Video\xcfandler" + data[handler + 12 :]
    )
    expected = read_clip(videos / "good0.mp4", **DAMAGED_SETTINGS)
    for name in TAG_DAMAGED:
        # PyAV's strict UTF-8 tags raise (what crashed `convert`) ...
        with pytest.raises(UnicodeDecodeError):
            av.open(str(videos / name)).close()
        # ... but the media are intact, and `read_clip` keeps them.
        clip = read_clip(videos / name, **DAMAGED_SETTINGS)
        np.testing.assert_array_equal(clip["video"], expected["video"])
        np.testing.assert_array_equal(clip["audio"], expected["audio"])
    order = [good[0], *DAMAGED[:3], good[1], good[2], TAG_DAMAGED[0]]
    order += [DAMAGED[3], TAG_DAMAGED[1], good[3], good[4], DAMAGED[4]]
    order += [good[5]]
    write_annotations(root, order)
    return root


@pytest.fixture()
def hostile(damaged, tmp_path):
    """The good clips of `damaged`, and copies of one that the decoder
    of `tests.data.hostile_decoders` misbehaves on."""
    videos = tmp_path / "videos"
    shutil.copytree(damaged / "videos", videos)
    for name in (
        "raises.mp4",
        "crash.mp4",
        "killed.mp4",
        "exit.mp4",
        "hang.mp4",
    ):
        shutil.copy(videos / "good0.mp4", videos / name)
    return tmp_path
