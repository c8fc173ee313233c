"""Contextual autoregressive model: a text decoder reading the A/V latents."""

import keras
import keras_hub
from keras import ops

from keras_mirasol.layers.transformer_stack import KeyValueCaches
from keras_mirasol.layers.transformer_stack import empty_key_value_caches
from keras_mirasol.layers.transformer_stack import pre_norm_block
from keras_mirasol.layers.transformer_stack import pre_norm_blocks
from keras_mirasol.layers.transformer_stack import project_keys_values
from keras_mirasol.layers.transformer_stack import swap_slots_and_heads


def share_latents(av_latents, token_ids):
    """Repeat each clip's latents for its `k` consecutive text rows.

    Training on several questions about the same clip encodes the clip
    once: the media side runs on `B` clips and the text side on `B * k`
    rows, row `i * k + j` being question `j` about clip `i`.

    Args:
        av_latents: float `[B, S, D]`.
        token_ids: int `[B * k, L]`.

    Returns:
        float `[B * k, S, D]` (`av_latents` itself when `k == 1`).
    """
    # Ints, or symbolic dims in a shape-polymorphic JAX export: compared
    # now. Tensors in a TensorFlow graph traced with an unknown batch: k
    # at run time. None for symbolic Keras tensors: nothing to do.
    clips, rows = ops.shape(av_latents)[0], ops.shape(token_ids)[0]
    if clips is None or rows is None:
        return av_latents
    static = not (ops.is_tensor(clips) or ops.is_tensor(rows))
    if static and clips == rows:
        return av_latents
    return ops.repeat(av_latents, rows // clips, axis=0)


def empty_caches(
    batch_size, max_length, num_latents, self_attention, cross_attention, dtype
):
    """Zero key/value caches in keras-hub's layout, stacked over blocks.

    What a pretrained keras-hub text decoder's blocks take
    (`PretrainedTextDecoder`); Mirasol's own `TextDecoder` keeps one
    heads-first cache per block instead (`KeyValueCaches`).

    Args:
        batch_size: int or int tensor.
        max_length: int or int tensor. Token positions.
        num_latents: int or int tensor. Latents `S` per clip.
        self_attention: `(layers, heads, head_dim)` of the self-attention.
        cross_attention: `(layers, heads, head_dim)` of the
            cross-attention.
        dtype: str. The cache dtype.

    Returns:
        dict: `self_attention` `[B, layers, 2, max_length, heads,
        head_dim]` and `cross_attention` `[B, layers, 2, S, heads,
        head_dim]`.
    """
    return {
        "self_attention": ops.zeros(
            (batch_size, self_attention[0], 2, max_length, *self_attention[1:]),
            dtype=dtype,
        ),
        "cross_attention": ops.zeros(
            (
                batch_size,
                cross_attention[0],
                2,
                num_latents,
                *cross_attention[1:],
            ),
            dtype=dtype,
        ),
    }


def cached_causal_mask(batch_size, length, cache_length, index):
    """The causal mask of `length` new tokens over a cache's slots.

    The mask keras-hub's decoder blocks compute for a cached call: the
    token at position `index + t` sees cache slots `<= index + t`.

    Args:
        batch_size: int or int tensor.
        length: int or int tensor. New tokens `l`.
        cache_length: int or int tensor. Cache slots `S`.
        index: int or int tensor. Position of the first new token.

    Returns:
        bool `[B, l, S]`.
    """
    positions = ops.arange(length, dtype="int32") + ops.cast(index, "int32")
    slots = ops.arange(cache_length, dtype="int32")
    mask = ops.expand_dims(positions, 1) >= ops.expand_dims(slots, 0)
    return ops.broadcast_to(mask, (batch_size, length, cache_length))


def updated_caches(cache, self_caches, cross_caches, cross_update_index):
    """`cache` with the per-block caches of one `call_with_cache` stacked.

    Args:
        cache: dict. The caches the call started from.
        self_caches: list of the blocks' self-attention caches.
        cross_caches: list of the blocks' cross-attention caches.
        cross_update_index: the call's
            `cross_attention_cache_update_index`; `None` keeps the
            cross-attention caches as they were.

    Returns:
        dict.
    """
    cache = dict(cache, self_attention=ops.stack(self_caches, axis=1))
    if cross_update_index is not None:
        cache["cross_attention"] = ops.stack(cross_caches, axis=1)
    return cache


@keras.saving.register_keras_serializable(package="keras_mirasol")
class TextDecoder(keras.layers.Layer):
    """Decoder-only language model with cross-attention to `av_latents`.

    Each block is a pre-norm `keras_hub.layers.TransformerDecoder`:
    causal self-attention, cross-attention to the time-aligned latents
    (every `cross_attention_every`-th block, starting with the first),
    then an MLP. Those blocks accept self-attention and cross-attention
    caches, which `generate()` uses. `call` and `call_with_cache` run
    them on token rows (`pre_norm_block`), the latter writing each new
    token's keys and values into its block's caches in place
    (`KeyValueCaches`). Logits come from
    `token_embedding(hidden, reverse=True)`, tied to the input embedding
    or separate (`tie_word_embeddings`).

    Args:
        vocabulary_size: int. Token vocabulary size.
        max_sequence_length: int. Longest token sequence.
        hidden_dim: int. Width `D_t`.
        num_layers: int. Blocks `L_t`.
        num_heads: int. Attention heads.
        intermediate_dim: int. MLP width.
        cross_attention_every: int. Cross-attend in every k-th block.
            Defaults to `1`.
        tie_word_embeddings: bool. Share the input embedding with the
            output projection. Defaults to `True`.
        dropout: float. Defaults to `0.0`.
        layer_norm_epsilon: float. Defaults to `1e-6`.

    Call arguments:
        token_ids: int `[B * k, L]`, `L <= max_sequence_length`.
        av_latents: float `[B, S, D_av]`. With `k > 1` questions per clip,
            rows `i * k ... i * k + k - 1` of `token_ids` all read clip
            `i`'s latents (see `share_latents`).
        padding_mask: optional int/bool `[B, L]`, 1 for real tokens.
        training: bool or None.

    Returns:
        float `[B, L, D_t]` hidden states (after the final norm).

    Example:
    ```python
    decoder = keras_mirasol.models.TextDecoder(
        vocabulary_size=100, max_sequence_length=16, hidden_dim=32,
        num_layers=2, num_heads=2, intermediate_dim=64,
    )
    hidden = decoder(np.ones((2, 8), "int32"), np.ones((2, 12, 48)))
    logits = decoder.token_embedding(hidden, reverse=True)  # [2, 8, 100]
    ```
    """

    def __init__(
        self,
        vocabulary_size,
        max_sequence_length,
        hidden_dim,
        num_layers,
        num_heads,
        intermediate_dim,
        cross_attention_every=1,
        tie_word_embeddings=True,
        dropout=0.0,
        layer_norm_epsilon=1e-6,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if cross_attention_every < 1:
            raise ValueError(
                "`cross_attention_every` must be >= 1 (1 = every block), "
                f"got {cross_attention_every}."
            )
        self.vocabulary_size = vocabulary_size
        self.max_sequence_length = max_sequence_length
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.cross_attention_every = cross_attention_every
        self.tie_word_embeddings = tie_word_embeddings
        self.dropout = dropout
        self.layer_norm_epsilon = layer_norm_epsilon
        self.token_embedding = keras_hub.layers.ReversibleEmbedding(
            input_dim=vocabulary_size,
            output_dim=hidden_dim,
            tie_weights=tie_word_embeddings,
            # Token and position embeddings start at the same scale, so the
            # question's words are not drowned by the positions.
            embeddings_initializer=keras.initializers.RandomNormal(
                stddev=hidden_dim**-0.5
            ),
            dtype=self.dtype_policy,
            name="token_embedding",
        )
        self.position_embedding = keras_hub.layers.PositionEmbedding(
            sequence_length=max_sequence_length,
            initializer=keras.initializers.RandomNormal(
                stddev=hidden_dim**-0.5
            ),
            dtype=self.dtype_policy,
            name="position_embedding",
        )
        self.blocks = pre_norm_blocks(
            keras_hub.layers.TransformerDecoder,
            num_layers,
            num_heads,
            intermediate_dim,
            dropout,
            layer_norm_epsilon,
            self.dtype_policy,
        )
        self.final_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon,
            dtype=self.dtype_policy,
            name="final_norm",
        )

    def has_cross_attention(self, index):
        """Whether block `index` cross-attends to the latents.

        Args:
            index: int. Block index, from 0.

        Returns:
            bool: `index % cross_attention_every == 0`.
        """
        return index % self.cross_attention_every == 0

    def build(self, token_ids_shape, av_latents_shape, padding_mask_shape=None):
        self.token_embedding.build(token_ids_shape)
        sequence_shape = (None, self.max_sequence_length, self.hidden_dim)
        self.position_embedding.build(sequence_shape)
        for i, block in enumerate(self.blocks):
            block.build(
                sequence_shape,
                av_latents_shape if self.has_cross_attention(i) else None,
            )
        self.final_norm.build(sequence_shape)
        self.built = True

    def embed(self, token_ids, start_index=0):
        """Token plus position embeddings, `[B, L, D_t]`.

        Args:
            token_ids: int `[B, L]`.
            start_index: int or int tensor. Position of `token_ids[:, 0]`
                (when decoding with a cache). Defaults to `0`.

        Returns:
            float `[B, L, D_t]`.
        """
        x = self.token_embedding(token_ids)
        return x + self.position_embedding(x, start_index=start_index)

    def call(self, token_ids, av_latents, padding_mask=None, training=None):
        av_latents = share_latents(av_latents, token_ids)
        x = self.embed(token_ids)
        # The mask keras-hub's blocks compute for themselves (causal, and
        # padding), once for all of them.
        mask = self.blocks[0]._compute_self_attention_mask(
            decoder_sequence=x,
            decoder_padding_mask=padding_mask,
            decoder_attention_mask=None,
            use_causal_mask=True,
            self_attention_cache=None,
            self_attention_cache_update_index=None,
        )
        for i, block in enumerate(self.blocks):
            x = pre_norm_block(
                block,
                x,
                attention_mask=mask,
                training=training,
                encoder_sequence=(
                    av_latents if self.has_cross_attention(i) else None
                ),
            )
        return self.final_norm(x)

    def init_cache(self, batch_size, max_length, num_latents, dtype):
        """Empty key/value caches for `call_with_cache`.

        Args:
            batch_size: int or int tensor.
            max_length: int or int tensor. Token positions.
            num_latents: int or int tensor. Latents `S` per clip.
            dtype: str. The cache dtype (the model's compute dtype).

        Returns:
            dict: `self_attention`, `L_t` pairs `(key, value)` of `[B,
            heads, max_length, head_dim]`, and `cross_attention`, `L_x`
            pairs of `[B, heads, S, head_dim]`: one heads-first cache per
            block (`KeyValueCaches`).
        """
        head_dim = self.hidden_dim // self.num_heads
        num_cross = sum(
            self.has_cross_attention(i) for i in range(self.num_layers)
        )
        return {
            "self_attention": empty_key_value_caches(
                batch_size,
                self.num_layers,
                self.num_heads,
                max_length,
                head_dim,
                dtype,
            ),
            "cross_attention": empty_key_value_caches(
                batch_size,
                num_cross,
                self.num_heads,
                num_latents,
                head_dim,
                dtype,
            ),
        }

    def cross_attention_keys_values(self, av_latents):
        """The cross-attention keys and values of `av_latents`.

        Args:
            av_latents: float `[B, S, D_av]`.

        Returns:
            `L_x` pairs `(key, value)`, float `[B, heads, S, head_dim]`
            each: the `cross_attention` caches of `init_cache()` filled.
        """
        per_block = []
        for i, block in enumerate(self.blocks):
            if self.has_cross_attention(i):
                latents = ops.cast(av_latents, block.compute_dtype)
                per_block.append(
                    tuple(
                        swap_slots_and_heads(cache)
                        for cache in project_keys_values(
                            block._cross_attention_layer, latents
                        )
                    )
                )
        return tuple(per_block)

    def call_with_cache(
        self,
        token_ids,
        cache,
        cache_update_index,
        cross_attention_cache_update_index=None,
    ):
        """Decode `token_ids` at `cache_update_index` with the caches.

        Args:
            token_ids: int `[B, l]`, the tokens at positions
                `[cache_update_index, cache_update_index + l)`.
            cache: dict from `init_cache()`, plus `av_latents` and
                optionally `av_padding_mask` `[B, S]` (latents the text
                may read).
            cache_update_index: int or int tensor. Position of
                `token_ids[:, 0]`.
            cross_attention_cache_update_index: `0` to compute the
                cross-attention keys/values of `av_latents` into the cache
                (once per clip); `None` to reuse them. Defaults to `None`.

        Returns:
            `(hidden_states [B, l, D_t], cache)`.
        """
        x = self.embed(token_ids, start_index=cache_update_index)
        self_attention = KeyValueCaches(
            cache["self_attention"], cache_update_index
        )
        mask = cached_causal_mask(
            ops.shape(x)[0],
            ops.shape(x)[1],
            ops.shape(cache["self_attention"][0][0])[2],
            cache_update_index,
        )
        cross_mask = cache.get("av_padding_mask")
        if cross_mask is not None:
            cross_mask = ops.expand_dims(cross_mask, axis=1)
        cross_attention = cache["cross_attention"]
        if cross_attention_cache_update_index is not None:
            # The clip's keys and values, once per clip (`build_cache`).
            dtype = cross_attention[0][0].dtype
            cross_attention = tuple(
                tuple(ops.cast(cache, dtype) for cache in pair)
                for pair in self.cross_attention_keys_values(
                    cache["av_latents"]
                )
            )
        num_cross = 0
        for i, block in enumerate(self.blocks):
            encoder_keys_values = None
            if self.has_cross_attention(i):
                encoder_keys_values = tuple(
                    swap_slots_and_heads(cache)
                    for cache in cross_attention[num_cross]
                )
                num_cross += 1
            x = pre_norm_block(
                block,
                x,
                attention_mask=mask,
                cross_attention_mask=cross_mask,
                keys_values=self_attention.writer(
                    i, block._self_attention_layer
                ),
                encoder_keys_values=encoder_keys_values,
            )
        hidden_states = self.final_norm(x)
        cache = dict(
            cache,
            self_attention=self_attention.caches,
            cross_attention=cross_attention,
        )
        return hidden_states, cache

    def compute_output_shape(
        self, token_ids_shape, av_latents_shape, padding_mask_shape=None
    ):
        return tuple(token_ids_shape) + (self.hidden_dim,)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocabulary_size": self.vocabulary_size,
                "max_sequence_length": self.max_sequence_length,
                "hidden_dim": self.hidden_dim,
                "num_layers": self.num_layers,
                "num_heads": self.num_heads,
                "intermediate_dim": self.intermediate_dim,
                "cross_attention_every": self.cross_attention_every,
                "tie_word_embeddings": self.tie_word_embeddings,
                "dropout": self.dropout,
                "layer_norm_epsilon": self.layer_norm_epsilon,
            }
        )
        return config
