import numpy as np

from keras_mirasol.layers import TokenLearner
from tests.conftest import to_numpy
from tests.hub_test_case import TestCase
from tests.hub_test_case import random_tensor


class TokenLearnerTest(TestCase):
    def test_layer_basics(self):
        self.run_layer_test(
            cls=TokenLearner,
            init_kwargs={"num_tokens": 3, "bottleneck_dim": 8},
            input_data=random_tensor((2, 7, 16), "normal"),
            expected_output_shape=(2, 3, 16),
            # norm (gamma, beta), two dense layers (kernel, bias).
            expected_num_trainable_weights=6,
        )


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
