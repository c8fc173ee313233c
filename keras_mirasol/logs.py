"""Quiet native logs for the command line, the demo and the guides.

TensorFlow and XLA write C++ log lines to stderr that say nothing a user
can act on (a failed CUDA probe on a CPU host, CPU feature notes, graph
optimizer remarks). `quiet_native_logs()` sets the environment variables
that silence them; it must run before TensorFlow or JAX is imported, and
values already in the environment win, so `TF_CPP_MIN_LOG_LEVEL=0
keras-mirasol ...` shows everything again. Errors still reach the user as
Python exceptions.
"""

import glob
import logging
import os

# Device files of NVIDIA and AMD GPUs and of TPUs.
_ACCELERATOR_DEVICES = ("/dev/nvidia[0-9]*", "/dev/kfd", "/dev/accel*")


def has_accelerator():
    """Whether this host has a GPU or TPU device file.

    Returns:
        bool.
    """
    return any(glob.glob(pattern) for pattern in _ACCELERATOR_DEVICES)


def quiet_native_logs(environ=None):
    """Silence TensorFlow and XLA C++ logs; JAX on CPU without accelerator.

    Sets, unless already set: `TF_CPP_MIN_LOG_LEVEL=3` (TensorFlow and
    XLA C++ INFO, WARNING and ERROR lines) and, on a host with no GPU or
    TPU, `JAX_PLATFORMS=cpu` (JAX does not probe for one). On
    `os.environ`, it also sets the Python `absl` logger to ERROR unless
    its level was set (`logging.getLogger("absl").setLevel(...)` after
    this call brings its warnings back). Call it before TensorFlow or JAX
    is imported.

    Args:
        environ: mapping to update. Defaults to `None`, which means
            `os.environ` (and the `absl` logger).

    Returns:
        The mapping.
    """
    if environ is None:
        environ = os.environ
        # Python-side absl warnings (tf.data and grain tuning notes).
        absl = logging.getLogger("absl")
        if absl.level == logging.NOTSET:
            absl.setLevel(logging.ERROR)
    environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if not has_accelerator():
        environ.setdefault("JAX_PLATFORMS", "cpu")
    return environ
