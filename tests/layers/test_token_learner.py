import numpy as np

from keras_mirasol.layers import TokenLearner
from tests.conftest import assert_config_round_trip
from tests.conftest import to_numpy


def test_shape_and_config():
    layer = TokenLearner(num_tokens=3, bottleneck_dim=8, name="learner")
    out = layer(np.random.normal(size=(2, 7, 16)).astype("float32"))
    assert tuple(out.shape) == (2, 3, 16)
    assert_config_round_trip(layer)


def test_output_is_a_convex_combination_of_the_inputs():
    # Identical input tokens must come out unchanged, whatever the weights.
    layer = TokenLearner(num_tokens=4)
    token = np.random.normal(size=(1, 1, 8)).astype("float32")
    out = to_numpy(layer(np.repeat(token, 5, axis=1)))
    np.testing.assert_allclose(out, np.repeat(token, 4, axis=1), atol=1e-5)


def test_invariant_to_the_order_of_input_tokens():
    layer = TokenLearner(num_tokens=2)
    x = np.random.normal(size=(2, 6, 8)).astype("float32")
    perm = np.random.default_rng(0).permutation(6)
    np.testing.assert_allclose(
        to_numpy(layer(x)), to_numpy(layer(x[:, perm])), atol=1e-5
    )
