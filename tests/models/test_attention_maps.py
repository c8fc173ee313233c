import numpy as np
import pytest

from keras_mirasol.models import MirasolBackbone
from keras_mirasol.models import snippet_attention
from keras_mirasol.models import unchunked_config
from keras_mirasol.models.attention_maps import answer_attention
from keras_mirasol.models.attention_maps import cross_attention_layers
from keras_mirasol.models.attention_maps import latent_attention
from tests.conftest import default_vocabulary_lm
from tests.conftest import random_inputs
from tests.conftest import small_config
from tests.conftest import to_numpy


def by_snippet(weights, snippets):
    """`[B, L, T * m]` latent weights summed per snippet."""
    batch, length, latents = weights.shape
    return weights.reshape(batch, length, snippets, -1).sum(-1)


@pytest.mark.parametrize("combiner_type", ["transformer", "ttm"])
def test_each_position_spreads_one_unit_of_attention_over_the_snippets(
    combiner_type,
):
    config = small_config(combiner_type=combiner_type)
    backbone = MirasolBackbone(**config)
    inputs = random_inputs(config, batch_size=2, length=6)
    weights = to_numpy(snippet_attention(backbone, inputs))
    assert weights.shape == (2, 6, config["num_snippets"])
    assert (weights >= 0).all()
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
    # The map is of these inputs: the per-latent weights summed per
    # snippet, on the latents the backbone computes.
    _, av_latents = backbone.encode_media(inputs["video"], inputs["audio"])
    latents = to_numpy(
        latent_attention(
            backbone.text_decoder,
            inputs["token_ids"],
            av_latents,
            inputs["padding_mask"],
        )
    )
    np.testing.assert_allclose(
        weights, by_snippet(latents, config["num_snippets"]), atol=1e-6
    )


def test_moving_a_snippets_latents_moves_its_column():
    """Cross-attention has no positions on its keys: reordering the
    snippets' latents reorders the map's columns the same way, and only
    if each column is one snippet's `m` latents."""
    config = small_config()
    backbone = MirasolBackbone(**config)
    inputs = random_inputs(config, batch_size=1, length=5, seed=1)
    _, av_latents = backbone.encode_media(inputs["video"], inputs["audio"])
    latents = to_numpy(av_latents)
    snippets, m = config["num_snippets"], config["combiner_tokens"]
    order = [2, 0, 3, 1]
    moved = latents.reshape(1, snippets, m, -1)[:, order].reshape(latents.shape)
    args = (backbone.text_decoder, inputs["token_ids"])
    before = by_snippet(to_numpy(latent_attention(*args, latents)), snippets)
    after = by_snippet(to_numpy(latent_attention(*args, moved)), snippets)
    np.testing.assert_allclose(after, before[..., order], atol=1e-5)
    # Not a map that ignores the latents: the columns differ.
    assert np.abs(before - before[..., order]).max() > 1e-3


def test_recording_changes_neither_outputs_nor_layers():
    config = small_config()
    backbone = MirasolBackbone(**config)
    inputs = random_inputs(config, batch_size=1, length=5)
    _, av_latents = backbone.encode_media(inputs["video"], inputs["audio"])
    decoder = backbone.text_decoder
    expected = to_numpy(
        decoder(inputs["token_ids"], av_latents, inputs["padding_mask"])
    )
    layers = cross_attention_layers(decoder)
    assert len(layers) == config["text_num_layers"]
    latent_attention(decoder, inputs["token_ids"], av_latents)
    for layer in layers:
        assert "_compute_attention" not in vars(layer)
    np.testing.assert_allclose(
        to_numpy(
            decoder(inputs["token_ids"], av_latents, inputs["padding_mask"])
        ),
        expected,
        atol=1e-5,
    )


def test_the_unchunked_baseline_is_refused():
    config = unchunked_config(small_config())
    backbone = MirasolBackbone(**config)
    inputs = random_inputs(config, batch_size=1, length=4)
    with pytest.raises(ValueError, match="m per snippet"):
        snippet_attention(backbone, inputs)


def test_answer_rows_are_the_positions_that_predict_the_answer():
    lm, config = default_vocabulary_lm()
    inputs = random_inputs(config, batch_size=2)
    inputs = {
        "video": inputs["video"],
        "audio": inputs["audio"],
        "prompts": ["what colour is shown first?", "when does it play?"],
    }
    answers = ["red", "at the start"]
    maps = answer_attention(lm, inputs, answers)
    tokenizer = lm.preprocessor.tokenizer
    end = tokenizer.id_to_token(tokenizer.end_token_id)
    for answer, (tokens, weights) in zip(answers, maps):
        ids = [tokenizer.token_to_id(t) for t in tokens]
        # The answer's tokens, then the end token: nothing of the prompt.
        assert tokens[-1] == end
        assert tokenizer.detokenize(ids[:-1]).strip() == answer
        assert weights.shape == (len(tokens), config["num_snippets"])
        np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="one answer per prompt"):
        answer_attention(lm, inputs, answers[:1])
