"""Variable shapes of a model, built without allocating any weight.

The layout check (`layouts.check_layouts`) and the parameter count
(`parameter_count.count_parameters`) both need every variable's shape of
a configuration that may not fit in memory (a 3B preset on a laptop);
this module builds one shape-only. It is the one place that uses Keras
internals (`keras.src.backend.common.global_state`), because Keras has no
public API for what a shape-only build must leave untouched.
"""

import contextlib
import random

import keras
import numpy as np


@contextlib.contextmanager
def shape_only():
    """Create variables without values and without a distribution.

    Variables made in a `keras.StatelessScope` are registered for later
    initialisation; this keeps them out of that registry, so nothing is
    ever allocated for them. It also restores the Python and NumPy random
    states (unseeded initialisers and dropout layers draw their seeds from
    Python's `random` when they are created) and Keras' layer name
    counters, so a shape-only build before the real one changes neither
    the real model's initial weights nor its layer names.
    """
    # Keras has no public API for the registry of variables awaiting
    # initialisation or for the layer name counters; this is the one
    # place that reaches into `keras.src` for them.
    from keras.src.backend.common import global_state

    registry = "uninitialized_variables"
    pending = list(global_state.get_global_attribute(registry) or [])
    uids = global_state.get_global_attribute("object_name_uids")
    uids = None if uids is None else uids.copy()
    python_state = random.getstate()
    numpy_state = np.random.get_state()
    outer = keras.distribution.distribution()
    keras.distribution.set_distribution(None)
    try:
        with keras.StatelessScope(initialize_variables=False):
            yield
    finally:
        keras.distribution.set_distribution(outer)
        global_state.set_global_attribute(registry, pending)
        global_state.set_global_attribute("object_name_uids", uids)
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def shape_only_weights(build):
    """`{path: shape}` of the weights `build()` creates, allocating none.

    Args:
        build: function of no arguments that builds a layer or model,
            e.g. `lambda: MirasolBackbone(**config)`.
    """
    with shape_only():
        model = build()
        return {v.path: tuple(v.shape) for v in model.weights}
