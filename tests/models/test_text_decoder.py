import re

import keras
import numpy as np
import pytest
from keras import ops

from keras_mirasol.models import TextDecoder
from tests.conftest import CHANGED
from tests.conftest import UNCHANGED
from tests.conftest import assert_config_round_trip
from tests.conftest import from_keras_hub_caches
from tests.conftest import jit
from tests.conftest import to_keras_hub_caches
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


def _keras_hub_blocks_call(decoder, token_ids, cache, index, cross_index):
    """`call_with_cache` as keras-hub's blocks compute it themselves.

    The caches in keras-hub's layout, `[B, layers, 2, slots, heads,
    head_dim]`, in and out; each block's cache is sliced out, updated by
    the block and the caches stacked again.
    """
    x = decoder.embed(token_ids, start_index=index)
    self_caches, cross_caches = [], []
    for i, block in enumerate(decoder.blocks):
        self_cache = cache["self_attention"][:, i]
        if decoder.has_cross_attention(i):
            x, self_cache, cross_cache = block(
                x,
                encoder_sequence=cache["av_latents"],
                encoder_padding_mask=cache["av_padding_mask"],
                self_attention_cache=self_cache,
                self_attention_cache_update_index=index,
                cross_attention_cache=cache["cross_attention"][
                    :, len(cross_caches)
                ],
                cross_attention_cache_update_index=cross_index,
            )
            cross_caches.append(cross_cache)
        else:
            x, self_cache = block(
                x,
                self_attention_cache=self_cache,
                self_attention_cache_update_index=index,
            )
        self_caches.append(self_cache)
    cache = dict(cache, self_attention=ops.stack(self_caches, axis=1))
    if cross_index is not None:
        cache["cross_attention"] = ops.stack(cross_caches, axis=1)
    return decoder.final_norm(x), cache


_CACHES = ("self_attention", "cross_attention")


def _in_keras_hub_layout(cache):
    """A `call_with_cache` cache dict with its caches as keras-hub's."""
    return dict(cache, **{n: to_keras_hub_caches(cache[n]) for n in _CACHES})


def _keras_hub_cached_call(decoder, token_ids, cache, index, cross_index):
    """`_keras_hub_blocks_call` on caches as `init_cache()` makes them.

    Those are one heads-first pair per block (`KeyValueCaches`): the
    blocks get them in keras-hub's layout, and they come back as pairs.
    """
    hidden, cache = _keras_hub_blocks_call(
        decoder, token_ids, _in_keras_hub_layout(cache), index, cross_index
    )
    return hidden, dict(
        cache, **{n: from_keras_hub_caches(cache[n]) for n in _CACHES}
    )


def test_cached_calls_equal_keras_hub_blocks_cached_calls():
    # `call_with_cache` writes the new keys and values into the stacked
    # caches itself and runs the blocks on token rows: its hidden states
    # and both caches equal keras-hub's own cached block calls, for the
    # prompt pass that fills the cross-attention cache and for each token
    # after it, with latents masked out and a block without
    # cross-attention.
    decoder = make_decoder(cross_attention_every=2, num_layers=3)
    ids, latents = inputs(seed=4)
    decoder(ids, latents)
    av_padding_mask = np.ones((2, 6), bool)
    av_padding_mask[1, 4:] = False
    caches = []
    for _ in range(2):
        cache = decoder.init_cache(2, 10, 6, "float32")
        cache.update(av_latents=latents, av_padding_mask=av_padding_mask)
        caches.append(cache)
    ours, reference = caches
    # One heads-first pair per block: `[B, heads, slots, head_dim]`.
    head_dim = decoder.hidden_dim // decoder.num_heads
    for name, blocks, slots in (
        ("self_attention", 3, 10),
        ("cross_attention", 2, 6),
    ):
        assert len(ours[name]) == blocks
        for pair in ours[name]:
            assert [tuple(c.shape) for c in pair] == 2 * [
                (2, decoder.num_heads, slots, head_dim)
            ]
    calls = [(ids[:, :4], 0, 0)] + [
        (ids[:, j : j + 1], j, None) for j in (4, 5)
    ]
    for token_ids, index, cross_index in calls:
        hidden, ours = decoder.call_with_cache(
            token_ids, ours, index, cross_index
        )
        expected, reference = _keras_hub_cached_call(
            decoder, token_ids, reference, index, cross_index
        )
        np.testing.assert_allclose(
            to_numpy(hidden), to_numpy(expected), atol=1e-5
        )
        for name in ("self_attention", "cross_attention"):
            np.testing.assert_allclose(
                to_numpy(to_keras_hub_caches(ours[name])),
                to_numpy(to_keras_hub_caches(reference[name])),
                atol=1e-5,
            )

    # Latents masked out are not read: changing them changes no hidden
    # state, while changing a latent that is read does.
    def prompt_pass(av_latents):
        cache = decoder.init_cache(2, 10, 6, "float32")
        cache.update(av_latents=av_latents, av_padding_mask=av_padding_mask)
        return to_numpy(decoder.call_with_cache(ids[:, :4], cache, 0, 0)[0])

    masked, read = latents.copy(), latents.copy()
    masked[1, 4:] += 5.0
    read[1, 3] += 5.0
    np.testing.assert_allclose(
        prompt_pass(masked), prompt_pass(latents), atol=1e-6
    )
    assert np.abs(prompt_pass(read) - prompt_pass(latents))[1].max() > 1e-3


@pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="XLA's compiled program, via JAX"
)
def test_a_cached_step_copies_no_block_s_whole_cache():
    # One heads-first array per block's keys and values: the attention's
    # products read each as it lies. In keras-hub's layout, stacked over
    # the blocks, XLA copies (transposes, slices out) every block's whole
    # key and value caches for each new token (the check finds those
    # copies there, so it can find them in ours).
    import jax

    decoder = make_decoder(cross_attention_every=2, num_layers=3)
    ids, latents = inputs(seed=4)
    decoder(ids, latents)
    cache = decoder.init_cache(2, 10, 6, "float32")
    cache.update(av_latents=latents, av_padding_mask=None)
    keras_hub_cache = _in_keras_hub_layout(cache)
    head_dim = decoder.hidden_dim // decoder.num_heads
    one_cache = (2, decoder.num_heads, 10, head_dim)

    def whole_cache_copies(step, cache):
        # The caches donated, as a decoding loop carries them: updated in
        # place, not copied first.
        text = (
            jax.jit(step, donate_argnums=0)
            .lower(cache, ids[:, 4:5], np.int32(4))
            .compile()
            .as_text()
        )
        copies = []
        for line in text.splitlines():
            match = re.match(r"\s+(?:ROOT )?%(\S+) = f32\[([\d,]*)\]", line)
            if match and re.match(r"(transpose|copy|slice)", match.group(1)):
                dims = sorted(int(d) for d in match.group(2).split(","))
                if dims == sorted(one_cache):
                    copies.append(match.group(1))
        return copies

    def ours(cache, token_ids, index):
        return decoder.call_with_cache(token_ids, cache, index)

    def keras_hub_blocks(cache, token_ids, index):
        return _keras_hub_blocks_call(decoder, token_ids, cache, index, None)

    assert whole_cache_copies(ours, cache) == []
    assert len(whole_cache_copies(keras_hub_blocks, keras_hub_cache)) >= 3
