"""keras_mirasol: Mirasol3B multimodal autoregressive models for Keras 3.

Subpackages and modules load on first use (`keras_mirasol.models`,
`.layers`, `.data`, `.distribution`, `.export`), so worker processes that
only decode media do not import Keras.
"""

import importlib

__version__ = "0.1.0"

_LAZY = ("data", "distribution", "export", "layers", "models")
__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return importlib.import_module(f"keras_mirasol.{name}")
    raise AttributeError(f"module 'keras_mirasol' has no attribute {name!r}")
