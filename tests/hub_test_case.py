"""keras-hub's own test base class, imported in this one place.

keras-hub does not export its `TestCase` (it lives in `keras_hub.src`),
but its `run_layer_test`, `run_backbone_test`, `run_task_test`,
`run_model_saving_test` and `run_preset_test` are the checks every
keras-hub layer and model passes: serialization, symbolic and eager
calls, a compiled training step, mixed precision, `.keras` saving. The
module needs `grain` (in the `test` extra).
"""

import keras
import numpy as np
from keras_hub.src.tests.test_case import TestCase  # noqa: F401


def random_tensor(shape, distribution="normal", seed=0):
    """A float32 backend tensor of seeded random values.

    keras-hub's checks derive shapes from tensors, not numpy arrays
    (`compute_output_spec` skips numpy inputs).
    """
    rng = np.random.default_rng(seed)
    return keras.ops.convert_to_tensor(
        getattr(rng, distribution)(size=shape).astype("float32")
    )
