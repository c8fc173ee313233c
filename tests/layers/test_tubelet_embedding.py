import keras
import numpy as np
import pytest
from keras import ops

from keras_mirasol.layers import TubeletEmbedding
from tests.conftest import CHANGED
from tests.conftest import gradient
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


@pytest.mark.parametrize("dtype", ["float32", "mixed_bfloat16"])
def test_gradients_equal_a_strided_conv3ds(dtype):
    # The tubelets are multiplied as rows of one 2-D product: outputs and
    # the gradients for the input and for the kernel (through a random
    # readout) equal a Conv3D's with the same kernel and bias.
    rng = np.random.default_rng(4)
    layer = TubeletEmbedding(6, (2, 4, 4), dtype=dtype)
    conv = keras.layers.Conv3D(6, (2, 4, 4), strides=(2, 4, 4), dtype=dtype)
    x = rng.uniform(size=(2, 4, 8, 12, 3)).astype("float32")
    layer.build(x.shape)
    conv.build(x.shape)
    kernel = rng.normal(size=(2, 4, 4, 3, 6), scale=0.3).astype("float32")
    bias = rng.normal(size=(6,)).astype("float32")
    layer.set_weights([kernel, bias])
    conv.set_weights([kernel, bias])
    readout = rng.normal(size=(2, 12, 6)).astype("float32")
    tol = 2e-5 if dtype == "float32" else 6e-2

    def read(y):
        return ops.multiply(
            ops.cast(ops.reshape(y, (2, 12, 6)), "float32"), readout
        )

    def with_kernel(call, variable):
        def fn(value):
            with keras.StatelessScope(state_mapping=[(variable, value)]):
                return read(call(x))

        return fn

    assert (
        keras.backend.standardize_dtype(layer(x).dtype) == layer.compute_dtype
    )
    # bfloat16 keeps about three significant digits whatever the size of
    # a value: outputs and gradients are compared relative to their
    # largest entry (the CPU's kernels round differently from one machine
    # to another).
    expected = to_numpy(read(conv(x)))
    scale = np.abs(expected).max()
    np.testing.assert_allclose(
        to_numpy(read(layer(x))) / scale, expected / scale, atol=tol
    )
    for ours, reference, value in (
        (lambda v: read(layer(v)), lambda v: read(conv(v)), x),
        (
            with_kernel(layer, layer.projection.kernel),
            with_kernel(conv, conv.kernel),
            kernel,
        ),
    ):
        expected = gradient(reference, value)
        scale = np.abs(expected).max()
        assert scale > 0  # the gradient reaches `value`
        np.testing.assert_allclose(
            gradient(ours, value) / scale, expected / scale, atol=tol
        )


def test_a_quantized_kernel_runs_through_its_layer():
    # An int8 kernel is not a float matrix: the projection's own call
    # applies it, and the tokens stay close to the float ones.
    keras.utils.set_random_seed(5)
    layer = TubeletEmbedding(16, (2, 4, 4))
    x = np.random.default_rng(5).uniform(size=(2, 4, 8, 8, 3))
    x = x.astype("float32")
    model = keras.Sequential([keras.Input(x.shape[1:]), layer])
    before = to_numpy(model(x))
    model.quantize("int8")
    assert layer.projection.quantization_mode == "int8"
    after = to_numpy(model(x))
    assert after.shape == before.shape
    np.testing.assert_allclose(after, before, atol=0.05)
    assert np.abs(after - before).max() > 0
