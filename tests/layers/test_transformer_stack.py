import numpy as np

from keras_mirasol.layers import TransformerStack
from tests.conftest import assert_config_round_trip
from tests.conftest import to_numpy


def test_shape_and_config():
    layer = TransformerStack(2, num_heads=2, intermediate_dim=32, name="t")
    out = layer(np.random.normal(size=(2, 5, 16)).astype("float32"))
    assert tuple(out.shape) == (2, 5, 16)
    clone = assert_config_round_trip(layer)
    clone.build((None, 5, 16))
    names = [w.path for w in clone.weights]
    assert any("transformer_layer_1/self_attention" in n for n in names)


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
