"""keras_mirasol: Mirasol3B multimodal autoregressive models for Keras 3."""

from keras_mirasol import layers
from keras_mirasol import models

__version__ = "0.1.0"

__all__ = ["__version__", "layers", "models"]
