import numpy as np
import pytest

from keras_mirasol.models import VideoEncoder
from tests.conftest import UNCHANGED
from tests.conftest import assert_config_round_trip
from tests.conftest import jit
from tests.conftest import to_numpy


def make_encoder(**overrides):
    kwargs = dict(
        num_frames=8,
        num_snippets=4,
        image_size=16,
        tubelet_size=(2, 8, 8),
        hidden_dim=16,
        num_layers=1,
        num_heads=2,
        intermediate_dim=32,
        name="video_encoder",
    )
    kwargs.update(overrides)
    return VideoEncoder(**kwargs)


def test_shape_config_and_weight_names():
    encoder = make_encoder()
    video = np.random.uniform(size=(2, 8, 16, 16, 3)).astype("float32")
    assert tuple(encoder(video).shape) == (2, 4, 4, 16)
    assert_config_round_trip(encoder)
    paths = [w.path for w in encoder.weights]
    assert "video_encoder/tubelet_embedding/projection/kernel" in paths


def test_snippets_are_encoded_independently():
    encoder = make_encoder()
    run = jit(encoder)
    video = np.random.uniform(size=(1, 8, 16, 16, 3)).astype("float32")
    changed = video.copy()
    changed[:, 4:6] = np.random.uniform(size=(1, 2, 16, 16, 3))  # snippet 2
    diff = np.abs(to_numpy(run(video)) - to_numpy(run(changed)))
    per_snippet = diff.max(axis=(0, 2, 3))
    assert per_snippet[2] > 1e-4
    np.testing.assert_allclose(per_snippet[[0, 1, 3]], 0.0, atol=UNCHANGED)


def test_parameters_do_not_grow_with_the_number_of_frames():
    short = make_encoder(num_frames=8, num_snippets=4)
    long = make_encoder(num_frames=32, num_snippets=16)
    short.build((None, 8, 16, 16, 3))
    long.build((None, 32, 16, 16, 3))
    assert short.count_params() == long.count_params()


@pytest.mark.parametrize(
    "shape, words",
    [
        ((2, 16, 16, 3), ["rank 5", "[batch, 8, 16, 16, 3]"]),
        ((2, 8, 16, 16, 1), ["3 (RGB) channels", "grayscale"]),
        ((2, 6, 16, 16, 3), ["num_frames", "num_snippets=4", "6 frames"]),
        ((2, 8, 32, 32, 3), ["image_size", "Resize"]),
    ],
)
def test_bad_video_shapes_name_the_expected_shape(shape, words):
    encoder = make_encoder()
    with pytest.raises(ValueError) as info:
        encoder(np.zeros(shape, "float32"))
    for word in words:
        assert word in str(info.value)


def test_bad_config_names_the_keys():
    with pytest.raises(ValueError, match="num_frames.*num_snippets"):
        make_encoder(num_frames=10, num_snippets=4)
    with pytest.raises(ValueError, match="tubelet_size\\[0\\]"):
        make_encoder(num_frames=12, num_snippets=4)
