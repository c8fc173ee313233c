import keras
import numpy as np

from keras_mirasol.layers import TubeletEmbedding
from tests.conftest import CHANGED
from tests.conftest import to_numpy
from tests.hub_test_case import TestCase
from tests.hub_test_case import random_tensor


class TubeletEmbeddingTest(TestCase):
    def test_layer_basics(self):
        # Serialization, build, symbolic and eager calls, a compiled
        # training step and mixed precision (keras-hub's layer checks).
        self.run_layer_test(
            cls=TubeletEmbedding,
            init_kwargs={"hidden_dim": 12, "tubelet_size": (2, 4, 4)},
            input_data=random_tensor((3, 4, 8, 12, 3), "uniform"),
            expected_output_shape=(3, 2 * 2 * 3, 12),
            expected_num_trainable_weights=2,
        )


def test_each_token_sees_only_its_own_tubelet():
    layer = TubeletEmbedding(8, (2, 4, 4))
    x = np.random.uniform(size=(1, 4, 8, 8, 3)).astype("float32")
    y = x.copy()
    # Frame 3, rows 4-7, cols 0-3: second time step, third spatial patch.
    y[0, 3, 5, 2] += 1.0
    changed = np.any(
        np.abs(to_numpy(layer(x)) - to_numpy(layer(y))) > CHANGED, axis=-1
    )[0]
    assert np.flatnonzero(changed).tolist() == [1 * 4 + 2]


def test_equals_a_strided_conv3d_with_the_same_kernel():
    layer = TubeletEmbedding(6, (2, 4, 4))
    x = np.random.default_rng(0).uniform(size=(2, 4, 8, 12, 3))
    x = x.astype("float32")
    got = to_numpy(layer(x))
    kernel, bias = layer.get_weights()
    # The kernel keeps the Conv3D layout [t, p, p, C, D].
    assert kernel.shape == (2, 4, 4, 3, 6) and bias.shape == (6,)
    conv = keras.layers.Conv3D(6, (2, 4, 4), strides=(2, 4, 4))
    conv.build(x.shape)
    bias = np.random.default_rng(1).normal(size=bias.shape)
    layer.set_weights([kernel, bias.astype("float32")])
    conv.set_weights([kernel, bias.astype("float32")])
    expected = to_numpy(conv(x)).reshape(2, -1, 6)
    np.testing.assert_allclose(to_numpy(layer(x)), expected, atol=1e-5)
    assert got.shape == expected.shape


def test_kernel_starts_as_a_conv3ds_would():
    shape = (2, 4, 8, 8, 3)
    keras.utils.set_random_seed(3)
    layer = TubeletEmbedding(16, (2, 4, 4))
    layer.build(shape)
    keras.utils.set_random_seed(3)
    conv = keras.layers.Conv3D(16, (2, 4, 4), strides=(2, 4, 4))
    conv.build(shape)
    for got, expected in zip(layer.get_weights(), conv.get_weights()):
        np.testing.assert_array_equal(got, expected)
