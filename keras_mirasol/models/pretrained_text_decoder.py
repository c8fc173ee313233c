"""A pretrained keras-hub language model as Mirasol's text decoder."""

import keras
from keras import ops

from keras_mirasol.layers.gated_cross_attention import GatedCrossAttention
from keras_mirasol.layers.transformer_stack import remat_call
from keras_mirasol.models.text_decoder import empty_caches
from keras_mirasol.models.text_decoder import share_latents
from keras_mirasol.models.text_decoder import updated_caches


def deserialize_backbone(config):
    """A keras-hub backbone from its serialized config, frozen if it was.

    keras-hub's `Backbone.from_config` passes the saved `trainable` to the
    Functional constructor, which sets it on every layer: a frozen part
    would come back trainable, and a `True` would make trainable what the
    model keeps fixed (Whisper's sinusoidal positions). The flag is
    applied here instead, only when it freezes.

    Args:
        config: dict from `keras.layers.serialize(backbone)`.

    Returns:
        the keras-hub backbone.
    """
    inner = dict(config.get("config", {}))
    trainable = inner.pop("trainable", True)
    backbone = keras.layers.deserialize(dict(config, config=inner))
    if not trainable:
        backbone.trainable = False
    return backbone


class _Gemma3Blocks:
    """How Mirasol runs a `Gemma3Backbone`'s embedding and blocks."""

    def embed(self, backbone, token_ids):
        x = backbone.token_embedding(token_ids)
        return x * ops.cast(ops.sqrt(backbone.hidden_dim), x.dtype)

    def head_dim(self, backbone):
        return backbone.head_dim

    def block(self, block, x, padding_mask, training):
        return block(x, padding_mask=padding_mask)

    def block_with_cache(self, block, x, cache, index):
        x, (key, value) = block(
            x, cache=(cache[:, 0], cache[:, 1]), cache_update_index=index
        )
        return x, ops.stack((key, value), axis=1)


class _LlamaBlocks:
    """How Mirasol runs a Llama-style backbone (Qwen3, Llama, Mistral)."""

    def embed(self, backbone, token_ids):
        return backbone.token_embedding(token_ids)

    def head_dim(self, backbone):
        head_dim = getattr(backbone, "head_dim", None)
        return head_dim or backbone.hidden_dim // backbone.num_query_heads

    def block(self, block, x, padding_mask, training):
        return block(x, decoder_padding_mask=padding_mask, training=training)

    def block_with_cache(self, block, x, cache, index):
        return block(
            x,
            self_attention_cache=cache,
            self_attention_cache_update_index=index,
        )


def _families():
    families = {"Gemma3Backbone": _Gemma3Blocks()}
    for name in (
        "Qwen3Backbone",
        "QwenBackbone",
        "LlamaBackbone",
        "Llama3Backbone",
        "MistralBackbone",
    ):
        families[name] = _LlamaBlocks()
    return families


SUPPORTED_TEXT_BACKBONES = tuple(_families())


def _family(backbone):
    for cls in type(backbone).__mro__:
        family = _families().get(cls.__name__)
        if family is not None:
            return family
    raise ValueError(
        f"A {type(backbone).__name__} cannot be Mirasol's text decoder: "
        f"the supported keras-hub backbones are "
        f"{', '.join(SUPPORTED_TEXT_BACKBONES)}. Pass one of those (e.g. "
        'keras_hub.models.Gemma3Backbone.from_preset("gemma3_instruct_270m"))'
        ", or build Mirasol's own text decoder (no `text_decoder`)."
    )


@keras.saving.register_keras_serializable(package="keras_mirasol")
class PretrainedTextDecoder(keras.layers.Layer):
    """A keras-hub decoder-only language model reading the A/V latents.

    The language model's own embedding, blocks, final norm and (tied)
    output projection, with a `GatedCrossAttention` block inserted before
    every `cross_attention_every`-th block (the Flamingo recipe). The
    gates start at `0`, so at initialisation the logits are exactly the
    language model's own; the media's influence grows as the gates are
    trained. Supported: `Gemma3Backbone` and the Llama-style backbones
    (`Qwen3Backbone`, `LlamaBackbone`, `Llama3Backbone`,
    `MistralBackbone`), with their key/value caches for `generate()`.

    Args:
        backbone: a text-only keras-hub backbone of a supported class
            (its weights are used as they are; freeze them with
            `decoder.backbone.trainable = False`).
        cross_attention_every: int. Insert a cross-attention block before
            every k-th block, starting with the first. Defaults to `1`.
        num_heads: int or None. Heads of the cross-attention. Defaults to
            `None`: the language model's query heads.
        intermediate_dim: int or None. MLP width of the inserted blocks.
            Defaults to `None`: the language model's `hidden_dim * 4`.
        dropout: float. Dropout in the inserted blocks. Defaults to `0.0`.
        layer_norm_epsilon: float. Defaults to `1e-6`.
        remat: bool. Recompute each block's activations (the language
            model's and the inserted ones) in the backward pass
            (`keras.remat`). `MirasolBackbone(remat=...)` sets it.
            Defaults to `False`.

    Call arguments:
        token_ids: int `[B * k, L]`.
        av_latents: float `[B, S, D_av]` (see `share_latents`).
        padding_mask: optional int/bool `[B * k, L]`, 1 for real tokens.
        training: bool or None.

    Returns:
        float `[B * k, L, hidden_dim]` hidden states after the final norm;
        `token_embedding(hidden, reverse=True)` gives the logits.

    Example:
    ```python
    import keras_hub

    # A tiny random Gemma3; a real one comes from
    # keras_hub.models.Gemma3Backbone.from_preset("gemma3_instruct_270m").
    text = keras_hub.models.Gemma3Backbone(
        vocabulary_size=100, image_size=16, num_layers=2,
        num_query_heads=2, num_key_value_heads=1, hidden_dim=32,
        intermediate_dim=64, head_dim=16,
    )
    decoder = keras_mirasol.models.PretrainedTextDecoder(text)
    hidden = decoder(np.ones((1, 8), "int32"), np.ones((1, 12, 24)))
    hidden.shape  # (1, 8, 32)
    decoder.token_embedding(hidden, reverse=True).shape  # (1, 8, 100)
    ```
    """

    def __init__(
        self,
        backbone,
        cross_attention_every=1,
        num_heads=None,
        intermediate_dim=None,
        dropout=0.0,
        layer_norm_epsilon=1e-6,
        remat=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(backbone, dict):
            backbone = deserialize_backbone(backbone)
        self._blocks = _family(backbone)
        if getattr(backbone, "vision_encoder", None) is not None:
            raise ValueError(
                "The text decoder must be a text-only backbone; this "
                f"{type(backbone).__name__} has a vision encoder. Load the "
                'text-only preset (e.g. "gemma3_instruct_270m") or build it '
                "with `vision_encoder=None`."
            )
        if cross_attention_every < 1:
            raise ValueError(
                "`cross_attention_every` must be >= 1 (1 = every block), "
                f"got {cross_attention_every}."
            )
        self.backbone = backbone
        self.cross_attention_every = cross_attention_every
        self.num_heads = num_heads or backbone.num_query_heads
        self.intermediate_dim = intermediate_dim or 4 * backbone.hidden_dim
        self.dropout = dropout
        self.layer_norm_epsilon = layer_norm_epsilon
        self.remat = remat
        self.hidden_dim = backbone.hidden_dim
        self.vocabulary_size = backbone.vocabulary_size
        self.num_layers = backbone.num_layers
        self.token_embedding = backbone.token_embedding
        self.blocks = backbone.transformer_layers
        self.final_norm = backbone.layer_norm
        self.cross_attention_blocks = [
            GatedCrossAttention(
                num_heads=self.num_heads,
                key_dim=self.hidden_dim // self.num_heads,
                intermediate_dim=self.intermediate_dim,
                dropout=dropout,
                layer_norm_epsilon=layer_norm_epsilon,
                dtype=self.dtype_policy,
                name=f"gated_cross_attention_{i}",
            )
            for i in range(self.num_layers)
            if self.has_cross_attention(i)
        ]

    def has_cross_attention(self, index):
        """Whether a cross-attention block runs before block `index`.

        Args:
            index: int. Block index, from 0.

        Returns:
            bool: `index % cross_attention_every == 0`.
        """
        return index % self.cross_attention_every == 0

    def build(self, token_ids_shape, av_latents_shape, padding_mask_shape=None):
        hidden_shape = (None, None, self.hidden_dim)
        for block in self.cross_attention_blocks:
            block.build(hidden_shape, av_latents_shape)
        self.built = True

    def _run(self, x, av_latents, run_block, cross_attention):
        """The blocks, each preceded by its cross-attention block."""
        crossed = 0
        for i, block in enumerate(self.blocks):
            if self.has_cross_attention(i):
                x = cross_attention(
                    self.cross_attention_blocks[crossed], x, crossed
                )
                crossed += 1
            x = run_block(i, block, x)
        return self.final_norm(x)

    def call(self, token_ids, av_latents, padding_mask=None, training=None):
        av_latents = share_latents(av_latents, token_ids)
        x = self._blocks.embed(self.backbone, token_ids)

        def run_block(i, block, x):
            return remat_call(
                lambda x: self._blocks.block(block, x, padding_mask, training),
                x,
                remat=self.remat,
            )

        def cross_attention(cross, x, j):
            # The latents are an input of the recomputed call, not a
            # closure, so that the gradient reaches them (`remat_call`).
            return remat_call(
                lambda x, latents: cross(x, latents, training=training),
                x,
                av_latents,
                remat=self.remat,
            )

        return self._run(x, av_latents, run_block, cross_attention)

    def init_cache(self, batch_size, max_length, num_latents, dtype):
        """Empty key/value caches for `call_with_cache`.

        Args:
            batch_size: int or int tensor.
            max_length: int or int tensor. Token positions.
            num_latents: int or int tensor. Latents `S` per clip.
            dtype: str. The cache dtype (the model's compute dtype).

        Returns:
            dict: `self_attention` `[B, L_t, 2, max_length, kv_heads,
            head_dim]` and `cross_attention` `[B, L_x, 2, S, num_heads,
            hidden_dim // num_heads]`.
        """
        return empty_caches(
            batch_size,
            max_length,
            num_latents,
            (
                self.num_layers,
                self.backbone.num_key_value_heads,
                self._blocks.head_dim(self.backbone),
            ),
            (
                len(self.cross_attention_blocks),
                self.num_heads,
                self.hidden_dim // self.num_heads,
            ),
            dtype,
        )

    def call_with_cache(
        self,
        token_ids,
        cache,
        cache_update_index,
        cross_attention_cache_update_index=None,
    ):
        """Decode `token_ids` at `cache_update_index` with the caches.

        Args:
            token_ids: int `[B, l]`.
            cache: dict from `init_cache()`, plus `av_latents` and
                optionally `av_padding_mask` `[B, S]`.
            cache_update_index: int or int tensor. Position of
                `token_ids[:, 0]`.
            cross_attention_cache_update_index: `0` to compute the
                latents' keys/values into the cache; `None` to reuse them.
                Defaults to `None`.

        Returns:
            `(hidden_states [B, l, hidden_dim], cache)`.
        """
        self_caches = []
        cross_caches = []

        def run_block(i, block, x):
            x, layer_cache = self._blocks.block_with_cache(
                block, x, cache["self_attention"][:, i, ...], cache_update_index
            )
            self_caches.append(layer_cache)
            return x

        def cross_attention(cross, x, j):
            x, layer_cache = cross(
                x,
                cache["av_latents"],
                latents_padding_mask=cache.get("av_padding_mask"),
                cache=cache["cross_attention"][:, j, ...],
                cache_update_index=cross_attention_cache_update_index,
            )
            cross_caches.append(layer_cache)
            return x

        x = self._blocks.embed(self.backbone, token_ids)
        hidden_states = self._run(
            x, cache["av_latents"], run_block, cross_attention
        )
        cache = updated_caches(
            cache, self_caches, cross_caches, cross_attention_cache_update_index
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
                "backbone": keras.layers.serialize(self.backbone),
                "cross_attention_every": self.cross_attention_every,
                "num_heads": self.num_heads,
                "intermediate_dim": self.intermediate_dim,
                "dropout": self.dropout,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "remat": self.remat,
            }
        )
        return config
