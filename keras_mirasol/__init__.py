"""keras_mirasol: Mirasol3B multimodal autoregressive models for Keras 3.

Subpackages load on first use (`keras_mirasol.models`, `.layers`, `.data`),
so worker processes that only decode media do not import Keras.
"""

import importlib

__version__ = "0.1.0"

__all__ = ["__version__", "data", "layers", "models"]


def __getattr__(name):
    if name in ("data", "layers", "models"):
        return importlib.import_module(f"keras_mirasol.{name}")
    raise AttributeError(f"module 'keras_mirasol' has no attribute {name!r}")
