import numpy as np
import pytest
from keras import ops

from keras_mirasol.models import NextSnippetLatentLoss
from keras_mirasol.models import TimeAlignedDecoder
from tests.conftest import CHANGED
from tests.conftest import UNCHANGED
from tests.conftest import assert_config_round_trip
from tests.conftest import gradient
from tests.conftest import jit
from tests.conftest import to_keras_hub_caches
from tests.conftest import to_numpy


def make_decoder(hidden_dim=16):
    return TimeAlignedDecoder(
        hidden_dim=hidden_dim,
        num_layers=2,
        num_heads=2,
        intermediate_dim=32,
        name="av_decoder",
    )


def test_shape_and_config():
    decoder = make_decoder()
    out = decoder(np.random.normal(size=(2, 4, 3, 16)).astype("float32"))
    assert tuple(out.shape) == (2, 12, 16)
    assert_config_round_trip(decoder)


@pytest.mark.parametrize("snippet", [0, 2])
def test_block_causal(snippet):
    decoder = make_decoder()
    run = jit(decoder)
    x = np.random.normal(size=(1, 4, 3, 16)).astype("float32")
    y = x.copy()
    y[:, snippet] = np.random.normal(size=(1, 3, 16))
    diff = np.abs(to_numpy(run(x)) - to_numpy(run(y))).max(axis=(0, 2))
    per_snippet = diff.reshape(4, 3).max(axis=1)
    np.testing.assert_allclose(per_snippet[:snippet], 0.0, atol=UNCHANGED)
    assert np.all(per_snippet[snippet:] > CHANGED)


def test_snippet_order_matters():
    # The snippet position signal tells the model when a snippet happened.
    decoder = make_decoder()
    x = np.random.normal(size=(1, 2, 3, 16)).astype("float32")
    swapped = x[:, ::-1]
    a = to_numpy(decoder(x)).reshape(2, 3, 16)
    b = to_numpy(decoder(swapped)).reshape(2, 3, 16)
    assert not np.allclose(a[1], b[0], atol=1e-4)


def test_width_not_divisible_by_six():
    decoder = make_decoder(hidden_dim=14)
    out = decoder(np.random.normal(size=(1, 3, 2, 14)).astype("float32"))
    assert tuple(out.shape) == (1, 6, 14)
    assert np.all(np.isfinite(to_numpy(out)))


@pytest.mark.parametrize("loss_type", ["mse", "cosine"])
def test_latent_loss_target_gets_no_gradient(loss_type):
    loss = NextSnippetLatentLoss(16, loss_type=loss_type, name="latent")
    latents = np.random.normal(size=(2, 12, 16)).astype("float32")
    combined = np.random.normal(size=(2, 4, 3, 16)).astype("float32")
    values = to_numpy(loss(latents, combined))
    assert values.shape == (2,) and np.all(values > 0)
    target_grad = gradient(lambda c: loss(latents, c), combined)
    np.testing.assert_array_equal(target_grad, 0.0)
    prediction_grad = gradient(lambda h: loss(h, combined), latents)
    assert np.abs(prediction_grad).max() > 0
    # Snippet t predicts snippet t + 1: the last snippet's latents have no
    # target, so they get no gradient.
    np.testing.assert_array_equal(prediction_grad[:, -3:], 0.0)
    assert_config_round_trip(loss)


def test_latent_loss_is_per_clip_and_zero_for_one_snippet():
    loss = NextSnippetLatentLoss(8)
    latents = np.random.normal(size=(3, 4, 8)).astype("float32")
    combined = np.random.normal(size=(3, 2, 2, 8)).astype("float32")
    other = combined.copy()
    other[1] += 1.0
    a, b = to_numpy(loss(latents, combined)), to_numpy(loss(latents, other))
    assert a[0] == pytest.approx(b[0]) and a[2] == pytest.approx(b[2])
    assert a[1] != pytest.approx(b[1])
    single = to_numpy(loss(latents[:, :2], combined[:, :1]))
    np.testing.assert_array_equal(single, 0.0)


def test_unknown_loss_type():
    with pytest.raises(ValueError, match="latent_loss_type"):
        NextSnippetLatentLoss(8, loss_type="l1")


def test_cached_snippets_equal_keras_hub_blocks_cached_calls():
    # A stream's step writes the new snippets' keys and values into the
    # stacked cache itself: the latents and the cache equal keras-hub's
    # own cached block calls, chunk after chunk, under a mask that hides
    # some cache slots.
    decoder = make_decoder()
    rng = np.random.default_rng(5)
    tokens = rng.normal(size=(2, 4, 3, 16)).astype("float32")
    decoder(tokens)
    # Ours one heads-first pair per block, keras-hub's stacked slots first.
    ours = decoder.init_cache(2, 12, "float32")
    assert [[tuple(c.shape) for c in pair] for pair in ours] == 2 * [
        2 * [(2, 2, 12, 8)]
    ]
    reference = np.zeros((2, 2, 2, 12, 2, 8), "float32")
    for start, count in ((0, 1), (1, 2), (3, 1)):
        new = tokens[:, start : start + count]
        rows = np.arange(start * 3, (start + count) * 3)
        mask = np.arange(12)[None, :] <= (rows[:, None] // 3) * 3 + 2
        mask = np.broadcast_to(mask, (2, count * 3, 12)).copy()
        mask[0, :, 0] = False  # clip 0 no longer sees the first slot
        latents, ours = decoder.call_with_cache(
            new, ours, start * 3, start, mask
        )
        x = decoder.embed(new, first_snippet=start)
        caches = []
        for i, block in enumerate(decoder.blocks):
            x, block_cache = block(
                x,
                decoder_attention_mask=mask,
                self_attention_cache=reference[:, i],
                self_attention_cache_update_index=start * 3,
                use_causal_mask=False,
            )
            caches.append(block_cache)
        reference = ops.stack(caches, axis=1)
        np.testing.assert_allclose(
            to_numpy(latents), to_numpy(decoder.final_norm(x)), atol=1e-5
        )
        np.testing.assert_allclose(
            to_numpy(to_keras_hub_caches(ours)),
            to_numpy(reference),
            atol=1e-5,
        )
