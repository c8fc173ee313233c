"""Gated cross-attention: a pretrained text model reads the A/V latents."""

import keras
import keras_hub
from keras import ops


@keras.saving.register_keras_serializable(package="keras_mirasol")
class GatedCrossAttention(keras.layers.Layer):
    """Flamingo's gated cross-attention block, inserted into a text model.

    `x + tanh(a) * attention(norm(x), latents)`, then
    `x + tanh(b) * mlp(norm(x))`, with the gates `a`, `b` learned scalars
    that start at `0`: at initialisation the block returns `x` exactly, so
    a pretrained text model with these blocks inserted computes exactly
    what it computed alone, and training opens the gates gradually
    (Alayrac et al. 2022). The cross-attention takes a key/value cache of
    the latents, computed once per clip when generating.

    Args:
        num_heads: int. Attention heads.
        key_dim: int. Width of each head.
        intermediate_dim: int. MLP width.
        dropout: float. Defaults to `0.0`.
        layer_norm_epsilon: float. Defaults to `1e-6`.

    Call arguments:
        x: float `[B, L, D]`, the text model's hidden states.
        latents: float `[B, S, D_av]`.
        latents_padding_mask: optional bool `[B, S]`, the latents `x` may
            read. Defaults to `None` (all of them).
        cache: optional float `[B, 2, S, num_heads, key_dim]`, the latents'
            keys and values.
        cache_update_index: `0` to compute `cache` from `latents`; `None`
            to read it as it is. Only with `cache`.
        training: bool or None.

    Returns:
        float `[B, L, D]`; with `cache`, `(outputs, cache)`.

    Example:
    ```python
    block = keras_mirasol.layers.GatedCrossAttention(
        num_heads=2, key_dim=8, intermediate_dim=32
    )
    x = np.random.normal(size=(2, 5, 16))
    block(x, np.random.normal(size=(2, 12, 24)))  # == x at initialisation
    ```
    """

    def __init__(
        self,
        num_heads,
        key_dim,
        intermediate_dim,
        dropout=0.0,
        layer_norm_epsilon=1e-6,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.intermediate_dim = intermediate_dim
        self.dropout = dropout
        self.layer_norm_epsilon = layer_norm_epsilon
        self.attention_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon,
            dtype=self.dtype_policy,
            name="attention_norm",
        )
        self.attention = keras_hub.layers.CachedMultiHeadAttention(
            num_heads=num_heads,
            key_dim=key_dim,
            dropout=dropout,
            dtype=self.dtype_policy,
            name="cross_attention",
        )
        self.mlp_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon,
            dtype=self.dtype_policy,
            name="mlp_norm",
        )
        self.mlp_up = keras.layers.Dense(
            intermediate_dim,
            activation="gelu",
            dtype=self.dtype_policy,
            name="mlp_up",
        )
        self.output_dropout = keras.layers.Dropout(
            dropout, dtype=self.dtype_policy, name="output_dropout"
        )

    def build(self, x_shape, latents_shape, latents_padding_mask_shape=None):
        hidden_dim = x_shape[-1]
        self.attention_norm.build(x_shape)
        self.attention.build(x_shape, latents_shape)
        self.mlp_norm.build(x_shape)
        self.mlp_up.build(x_shape)
        # The output width is the text model's, known from `x`.
        self.mlp_down = keras.layers.Dense(
            hidden_dim, dtype=self.dtype_policy, name="mlp_down"
        )
        self.mlp_down.build(tuple(x_shape[:-1]) + (self.intermediate_dim,))
        self.attention_gate = self.add_weight(
            shape=(), initializer="zeros", name="attention_gate"
        )
        self.mlp_gate = self.add_weight(
            shape=(), initializer="zeros", name="mlp_gate"
        )
        self.built = True

    def _gate(self, gate, y):
        return ops.tanh(ops.cast(gate, y.dtype)) * y

    def call(
        self,
        x,
        latents,
        latents_padding_mask=None,
        cache=None,
        cache_update_index=None,
        training=None,
    ):
        attention_mask = None
        if latents_padding_mask is not None:
            # [B, S] -> [B, L, S]: every text position reads the same
            # latents.
            attention_mask = ops.broadcast_to(
                ops.expand_dims(ops.cast(latents_padding_mask, "bool"), 1),
                (ops.shape(x)[0], ops.shape(x)[1], ops.shape(latents)[1]),
            )
        h = self.attention_norm(x)
        if cache is not None:
            attended, cache = self.attention(
                h,
                latents,
                attention_mask=attention_mask,
                cache=cache,
                cache_update_index=cache_update_index,
                training=training,
            )
        else:
            attended = self.attention(
                h, latents, attention_mask=attention_mask, training=training
            )
        attended = self.output_dropout(attended, training=training)
        x = x + self._gate(self.attention_gate, attended)
        h = self.mlp_down(self.mlp_up(self.mlp_norm(x)))
        h = self.output_dropout(h, training=training)
        x = x + self._gate(self.mlp_gate, h)
        if cache is not None:
            return x, cache
        return x

    def compute_output_shape(
        self, x_shape, latents_shape, latents_padding_mask_shape=None
    ):
        return tuple(x_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "key_dim": self.key_dim,
                "intermediate_dim": self.intermediate_dim,
                "dropout": self.dropout,
                "layer_norm_epsilon": self.layer_norm_epsilon,
            }
        )
        return config
