import keras
import keras_hub
import numpy as np
import pytest
from keras import ops

from keras_mirasol.layers import TransformerStack
from keras_mirasol.layers.transformer_stack import _attend
from keras_mirasol.layers.transformer_stack import exact_gelu
from keras_mirasol.layers.transformer_stack import pre_norm_block
from keras_mirasol.layers.transformer_stack import project_keys_values
from tests.conftest import assert_config_round_trip
from tests.conftest import gradient
from tests.conftest import to_numpy
from tests.hub_test_case import TestCase
from tests.hub_test_case import random_tensor


class TransformerStackTest(TestCase):
    def test_layer_basics(self):
        self.run_layer_test(
            cls=TransformerStack,
            init_kwargs={
                "num_layers": 2,
                "num_heads": 2,
                "intermediate_dim": 32,
            },
            input_data=random_tensor((2, 5, 16), "normal"),
            expected_output_shape=(2, 5, 16),
            # Per block: 2 norms (4), q/k/v/output (8), MLP (4); final norm.
            expected_num_trainable_weights=2 * 16 + 2,
        )


def test_variable_paths_name_the_blocks():
    layer = TransformerStack(2, num_heads=2, intermediate_dim=32, name="t")
    clone = assert_config_round_trip(layer)
    clone.build((None, 5, 16))
    names = [w.path for w in clone.weights]
    assert any("t/transformer_layer_1/self_attention" in n for n in names)
    assert any("t/final_norm" in n for n in names)


def test_attention_mask_hides_masked_keys():
    layer = TransformerStack(1, num_heads=2, intermediate_dim=32)
    x = np.random.normal(size=(1, 4, 16)).astype("float32")
    mask = np.ones((1, 4, 4), bool)
    mask[:, :2, 3] = False  # queries 0 and 1 may not see key 3
    y = x.copy()
    y[:, 3] = np.random.normal(size=(1, 16))
    a = to_numpy(layer(x, attention_mask=mask))
    b = to_numpy(layer(y, attention_mask=mask))
    np.testing.assert_allclose(a[:, :2], b[:, :2], atol=1e-5)
    assert not np.allclose(a[:, 2], b[:, 2], atol=1e-4)


def test_heads_must_divide_width():
    layer = TransformerStack(1, num_heads=3, intermediate_dim=8, name="odd")
    try:
        layer.build((None, 4, 16))
    except ValueError as e:
        assert "num_heads=3" in str(e) and "odd" in str(e)
    else:
        raise AssertionError("expected a ValueError")


def test_keep_last_equals_the_full_stack_sliced():
    # The last block computed for the kept queries alone gives exactly the
    # full stack's outputs there, with and without a mask, and in training
    # (dropout 0): a Combiner relies on it to skip discarded tokens.
    keras.utils.set_random_seed(0)
    layer = TransformerStack(2, num_heads=2, intermediate_dim=32)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 7, 16)).astype("float32")
    full = to_numpy(layer(x))
    kept = layer(x, keep_last=3)
    assert tuple(kept.shape) == (3, 3, 16)
    np.testing.assert_allclose(to_numpy(kept), full[:, -3:], atol=1e-5)
    mask = rng.uniform(size=(3, 7, 7)) < 0.7
    mask[:, np.arange(7), np.arange(7)] = True
    full = to_numpy(layer(x, attention_mask=mask))
    kept = to_numpy(layer(x, attention_mask=mask, keep_last=2))
    np.testing.assert_allclose(kept, full[:, -2:], atol=1e-5)
    # The other positions still matter as keys and values.
    y = x.copy()
    y[:, 0] = rng.normal(size=(3, 16))
    change = to_numpy(layer(y, keep_last=2)) - to_numpy(layer(x, keep_last=2))
    assert np.abs(change).max() > 1e-3
    one = TransformerStack(1, num_heads=4, intermediate_dim=32)
    np.testing.assert_allclose(
        to_numpy(one(x, keep_last=1, training=True)),
        to_numpy(one(x))[:, -1:],
        atol=1e-5,
    )


def _blocks_in_turn(layer, x, attention_mask=None):
    """The stack as keras-hub's blocks called in turn, then the norm."""
    for block in layer.blocks:
        x = block(x, attention_mask=attention_mask)
    return layer.final_norm(x)


@pytest.mark.parametrize("dtype", ["float32", "mixed_bfloat16"])
@pytest.mark.parametrize("masked", [False, True])
def test_token_rows_equal_the_keras_hub_blocks(dtype, masked):
    # `pre_norm_block` multiplies the blocks' kernels as matrices on token
    # rows: outputs and input gradients (through every weight, with a
    # random readout) equal the keras-hub blocks' own calls.
    keras.utils.set_random_seed(1)
    layer = TransformerStack(2, num_heads=4, intermediate_dim=48, dtype=dtype)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 9, 32)).astype("float32")
    mask = None
    if masked:
        mask = rng.uniform(size=(2, 9, 9)) < 0.6
        mask[:, np.arange(9), np.arange(9)] = True
    readout = rng.normal(size=(2, 9, 32)).astype("float32")
    layer.build(x.shape)
    for weight in layer.weights:  # biases and norms too, not their zeros
        weight.assign(rng.normal(size=weight.shape, scale=0.3))
    tol = 2e-5 if dtype == "float32" else 6e-2

    def ours(v):
        y = layer(v, attention_mask=mask)
        return ops.multiply(ops.cast(y, "float32"), readout)

    def reference(v):
        y = _blocks_in_turn(layer, v, mask)
        return ops.multiply(ops.cast(y, "float32"), readout)

    dtype_out = keras.backend.standardize_dtype(layer(x).dtype)
    assert dtype_out == layer.compute_dtype
    np.testing.assert_allclose(
        to_numpy(ours(x)), to_numpy(reference(x)), atol=tol
    )
    expected = gradient(reference, x)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(
        gradient(ours, x) / scale, expected / scale, atol=tol
    )


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_exact_gelu_equals_keras_gelu(dtype):
    # Values and gradients equal Keras' exact GELU's, in the tails too
    # (where the approximation of erf is clipped), and the dtype stays.
    rng = np.random.default_rng(0)
    x = np.concatenate(
        [np.linspace(-12.0, 12.0, 4801), 3.0 * rng.normal(size=4000)]
    ).astype("float32")
    # Rounded to `dtype` first, so that both see the same inputs.
    x = to_numpy(ops.cast(ops.cast(x, dtype), "float32"))
    ours = exact_gelu(ops.cast(x, dtype))
    assert keras.backend.standardize_dtype(ours.dtype) == dtype
    expected = keras.activations.gelu(x)
    tol = 2e-6 if dtype == "float32" else 1e-2
    np.testing.assert_allclose(
        to_numpy(ops.cast(ours, "float32")),
        to_numpy(expected),
        atol=tol,
        rtol=tol,
    )
    slope = gradient(lambda v: exact_gelu(ops.cast(v, dtype)), x)
    expected_slope = gradient(keras.activations.gelu, x)
    np.testing.assert_allclose(slope, expected_slope, atol=tol, rtol=tol)
    # A wrong slope would fail: it is neither flat nor the identity's.
    assert np.ptp(expected_slope) > 1.0


def test_quantized_blocks_run_through_their_layers():
    # An int8 kernel is not a float matrix: quantized blocks run through
    # their own layers, and the stack stays close to its float outputs.
    keras.utils.set_random_seed(2)
    layer = TransformerStack(2, num_heads=2, intermediate_dim=32)
    x = np.random.default_rng(2).normal(size=(2, 6, 16)).astype("float32")
    model = keras.Sequential([keras.Input((6, 16)), layer])
    before = to_numpy(model(x))
    model.quantize("int8")
    assert layer.blocks[0]._self_attention_layer._query_dense.quantization_mode
    after = to_numpy(model(x))
    np.testing.assert_allclose(after, before, atol=0.1)
    np.testing.assert_allclose(
        to_numpy(layer(x, keep_last=2)), after[:, -2:], atol=1e-5
    )


@pytest.mark.parametrize("remat_scope", [False, True])
def test_norms_keep_a_remat_scope(remat_scope, monkeypatch):
    # The blocks' layer norms run their `call` alone (no Keras layer call
    # per decoded token), except where a `keras.RematScope` gave them a
    # remat mode, which only the layer call applies: those norms are
    # still recomputed, and both ways give the keras-hub blocks' outputs.
    keras.utils.set_random_seed(3)
    x = np.random.default_rng(3).normal(size=(2, 5, 16)).astype("float32")
    if remat_scope:
        with keras.RematScope(mode="full"):
            layer = TransformerStack(2, num_heads=2, intermediate_dim=32)
            layer.build(x.shape)
    else:
        layer = TransformerStack(2, num_heads=2, intermediate_dim=32)
        layer.build(x.shape)
    remat_calls = []
    norm_type = type(layer.blocks[0]._feedforward_layer_norm)
    rematerialized_call = norm_type.rematerialized_call

    def counted(self, *args, **kwargs):
        remat_calls.append(self.name)
        return rematerialized_call(self, *args, **kwargs)

    monkeypatch.setattr(norm_type, "rematerialized_call", counted)
    ours = to_numpy(layer(x))
    norms_in_blocks = [
        name for name in remat_calls if name.endswith("_layer_norm")
    ]
    # Two blocks, each with a self-attention and a feed-forward norm.
    assert len(norms_in_blocks) == (4 if remat_scope else 0)
    np.testing.assert_allclose(
        ours, to_numpy(_blocks_in_turn(layer, x)), atol=2e-5
    )


@pytest.mark.parametrize("dtype", ["float32", "mixed_bfloat16"])
@pytest.mark.parametrize("cross", [False, True])
def test_token_rows_equal_keras_hub_decoder_blocks(dtype, cross):
    # A `TransformerDecoder` (the AV and text decoders' block) on token
    # rows: its self-attention under a causal-and-padding mask, and its
    # cross-attention to a sequence of another length and width, give the
    # block's own outputs and gradients, for the decoder input and for the
    # attended sequence.
    keras.utils.set_random_seed(3)
    block = keras_hub.layers.TransformerDecoder(
        intermediate_dim=40,
        num_heads=4,
        normalize_first=True,
        dtype=dtype,
    )
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 7, 32)).astype("float32")
    latents = rng.normal(size=(2, 5, 24)).astype("float32")
    padding = np.ones((2, 7), "int32")
    padding[1, 5:] = 0
    causal = np.tril(np.ones((7, 7), bool))
    mask = causal[None] & padding[:, None, :].astype(bool)
    cross_mask = rng.uniform(size=(2, 7, 5)) < 0.7
    cross_mask[..., 0] = True
    block.build(x.shape, latents.shape if cross else None)
    for weight in block.weights:
        weight.assign(rng.normal(size=weight.shape, scale=0.3))
    readout = rng.normal(size=(2, 7, 32)).astype("float32")
    extra = {"cross_attention_mask": cross_mask} if cross else {}
    own = {"encoder_attention_mask": cross_mask} if cross else {}

    def ours(v, seq):
        y = pre_norm_block(
            block,
            v,
            attention_mask=mask,
            encoder_sequence=seq if cross else None,
            **extra,
        )
        return ops.multiply(ops.cast(y, "float32"), readout)

    def reference(v, seq):
        y = block(
            v,
            seq if cross else None,
            decoder_padding_mask=padding,
            **own,
        )
        return ops.multiply(ops.cast(y, "float32"), readout)

    tol = 2e-5 if dtype == "float32" else 6e-2
    np.testing.assert_allclose(
        to_numpy(ours(x, latents)), to_numpy(reference(x, latents)), atol=tol
    )
    for wrt in [0, 1] if cross else [0]:
        args = [x, latents]

        def along(v, fn, wrt=wrt):
            return fn(*[v if i == wrt else a for i, a in enumerate(args)])

        expected = gradient(lambda v: along(v, reference), args[wrt])
        scale = np.abs(expected).max()
        assert scale > 0
        got = gradient(lambda v: along(v, ours), args[wrt])
        np.testing.assert_allclose(got / scale, expected / scale, atol=tol)


def test_a_decoder_block_needs_its_encoder_sequence():
    block = keras_hub.layers.TransformerDecoder(
        intermediate_dim=8, num_heads=2, normalize_first=True
    )
    block.build((1, 3, 4), (1, 2, 4))
    with pytest.raises(ValueError, match="built with cross-attention"):
        pre_norm_block(block, np.ones((1, 3, 4), "float32"))


@pytest.mark.parametrize("kind", ["plain", "gated", "int8"])
def test_attend_equals_the_attention_layers_call(kind):
    # What the blocks' attentions compute on token rows, for a plain
    # attention, one with a gate, and one with int8 kernels (applied by
    # its own layers), equals `MultiHeadAttention`'s own call.
    keras.utils.set_random_seed(6)
    attention = keras.layers.MultiHeadAttention(
        num_heads=2, key_dim=8, use_gate=kind == "gated"
    )
    rng = np.random.default_rng(6)
    query = rng.normal(size=(2, 5, 16)).astype("float32")
    value = rng.normal(size=(2, 7, 16)).astype("float32")
    mask = rng.uniform(size=(2, 5, 7)) < 0.7
    mask[..., 0] = True
    attention(query, value)
    if kind == "int8":  # as `Model.quantize` does, sublayer by sublayer
        for dense in (
            attention._query_dense,
            attention._key_dense,
            attention._value_dense,
            attention._output_dense,
        ):
            dense.quantize("int8")
    expected = to_numpy(attention(query, value, attention_mask=mask))
    got = _attend(
        attention,
        query,
        project_keys_values(attention, value),
        mask,
        training=None,
    )
    np.testing.assert_allclose(
        to_numpy(got), expected.reshape(-1, 16), atol=1e-5
    )
