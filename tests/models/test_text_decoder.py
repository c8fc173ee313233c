import numpy as np
import pytest

from keras_mirasol.models import TextDecoder
from tests.conftest import CHANGED
from tests.conftest import UNCHANGED
from tests.conftest import assert_config_round_trip
from tests.conftest import jit
from tests.conftest import to_numpy


def make_decoder(**overrides):
    kwargs = dict(
        vocabulary_size=50,
        max_sequence_length=12,
        hidden_dim=16,
        num_layers=2,
        num_heads=2,
        intermediate_dim=32,
        name="text_decoder",
    )
    kwargs.update(overrides)
    return TextDecoder(**kwargs)


def inputs(seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 50, size=(2, 10)).astype("int32")
    latents = rng.normal(size=(2, 6, 24)).astype("float32")
    return ids, latents


def test_shape_config_and_logits():
    decoder = make_decoder()
    ids, latents = inputs()
    hidden = decoder(ids, latents)
    assert tuple(hidden.shape) == (2, 10, 16)
    logits = decoder.token_embedding(hidden, reverse=True)
    assert tuple(logits.shape) == (2, 10, 50)
    assert_config_round_trip(decoder)


@pytest.mark.parametrize("position", [0, 4, 9])
def test_causal(position):
    decoder = make_decoder()
    run = jit(lambda i, h: decoder(i, h))
    ids, latents = inputs()
    changed = ids.copy()
    changed[:, position] = (changed[:, position] % 49) + 1
    diff = np.abs(to_numpy(run(ids, latents)) - to_numpy(run(changed, latents)))
    per_position = diff.max(axis=(0, 2))
    np.testing.assert_allclose(per_position[:position], 0.0, atol=UNCHANGED)
    assert np.all(per_position[position:] > CHANGED)


def test_reads_the_latents():
    decoder = make_decoder()
    ids, latents = inputs()
    a = to_numpy(decoder(ids, latents))
    b = to_numpy(decoder(ids, latents[:, ::-1] * 2.0))
    assert not np.allclose(a, b, atol=1e-4)


def test_padding_mask_hides_padded_tokens():
    decoder = make_decoder()
    ids, latents = inputs()
    mask = np.ones_like(ids)
    mask[:, 3] = 0
    changed = ids.copy()
    changed[:, 3] = (changed[:, 3] % 49) + 1
    a = to_numpy(decoder(ids, latents, mask))
    b = to_numpy(decoder(changed, latents, mask))
    np.testing.assert_allclose(a[:, 4:], b[:, 4:], atol=1e-5)


def test_untied_embeddings_and_sparse_cross_attention():
    tied = make_decoder()
    untied = make_decoder(tie_word_embeddings=False, cross_attention_every=2)
    ids, latents = inputs()
    tied(ids, latents)
    untied(ids, latents)
    extra = untied.token_embedding.count_params() - (
        tied.token_embedding.count_params()
    )
    assert extra == 50 * 16
    cross = [
        w.path for w in untied.weights if "cross_attention/query" in w.path
    ]
    assert len(cross) == 2  # kernel and bias of block 0 only
    assert all("transformer_layer_0" in p for p in cross)
