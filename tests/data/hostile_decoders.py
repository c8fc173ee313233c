"""A decoder that misbehaves on purpose, for the tests of `convert`.

`read_clip_or_misbehave` is passed as `convert(..., _read_clip=...)`. It
runs in the spawned worker processes, so it lives in a module they can
import. It decodes every file with `read_clip`, except files whose name
starts with one of these words, whatever their content:

    raises  raises a UnicodeDecodeError (as PyAV did on a damaged tag)
    crash   reads address 0 (a real segfault, as a bug in FFmpeg would)
    killed  sends itself SIGKILL (as the OOM killer would)
    exit    calls `os._exit(3)`
    hang    writes its pid to `<file>.pid`, ignores SIGTERM and sleeps; it
            gives up with an error after `HANG_SECONDS`, so that a
            `convert` that fails to kill it ends, late, instead of hanging
            the test run
"""

import ctypes
import os
import signal
import time

from keras_mirasol.data.media import read_clip

HANG_SECONDS = 60


def read_clip_or_misbehave(path, fps, image_size, sample_rate):
    """`read_clip`, or the misbehaviour the file's name asks for."""
    name = os.path.basename(path)
    if name.startswith("raises"):
        raise UnicodeDecodeError("utf-8", b"\xcf", 0, 1, "invalid byte")
    if name.startswith("crash"):
        ctypes.string_at(0)
    elif name.startswith("killed"):
        os.kill(os.getpid(), signal.SIGKILL)
    elif name.startswith("exit"):
        os._exit(3)
    elif name.startswith("hang"):
        with open(f"{path}.pid", "w") as f:
            f.write(str(os.getpid()))
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(HANG_SECONDS)
        raise RuntimeError(f"{path}: the worker was not killed in time")
    return read_clip(path, fps, image_size, sample_rate)
