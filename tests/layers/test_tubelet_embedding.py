import numpy as np

from keras_mirasol.layers import TubeletEmbedding
from tests.conftest import CHANGED
from tests.conftest import assert_config_round_trip
from tests.conftest import to_numpy


def test_shape_and_config():
    layer = TubeletEmbedding(12, (2, 4, 4), name="tubelets")
    out = layer(np.zeros((3, 4, 8, 12, 3), "float32"))
    assert tuple(out.shape) == (3, 2 * 2 * 3, 12)
    assert_config_round_trip(layer)


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
