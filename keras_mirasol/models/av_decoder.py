"""Time-aligned autoregressive model over the snippets' combined tokens."""

import keras
import keras_hub
from keras import ops

from keras_mirasol.layers.block_causal_mask import block_causal_mask
from keras_mirasol.layers.block_causal_mask import snippet_ids
from keras_mirasol.layers.transformer_stack import KeyValueCaches
from keras_mirasol.layers.transformer_stack import empty_key_value_caches
from keras_mirasol.layers.transformer_stack import pre_norm_block
from keras_mirasol.layers.transformer_stack import pre_norm_blocks
from keras_mirasol.layers.transformer_stack import remat_block


@keras.saving.register_keras_serializable(package="keras_mirasol")
class TimeAlignedDecoder(keras.layers.Layer):
    """Block-causal transformer over `T * m` audio-video tokens.

    A token of snippet `t` attends to every token of snippets `<= t`, so
    the output for snippet `t` never depends on later snippets: the model
    runs on a live stream as it arrives. Each token gets a sinusoidal
    signal of its snippet index (no parameters, so more snippets need no
    more weights) plus a learned embedding of its slot within the snippet.
    Blocks are `keras_hub.layers.TransformerDecoder` without
    cross-attention (keras-hub's key/value cache layout); both calls run
    them on token rows (`pre_norm_block`).

    Args:
        hidden_dim: int. Token width `D`.
        num_layers: int. Blocks `L_av`.
        num_heads: int. Attention heads.
        intermediate_dim: int. MLP width.
        dropout: float. Defaults to `0.0`.
        layer_norm_epsilon: float. Defaults to `1e-6`.
        max_wavelength: int. Of the snippet position signal.
            Defaults to `10000`.
        remat: bool. Recompute each block's activations in the backward
            pass instead of keeping them (`remat_block`). Defaults to
            `False`.

    Call arguments:
        combined_tokens: float `[B, T, m, D]` from a Combiner.
        training: bool or None.

    Returns:
        float `[B, T * m, D]`, the latent space the text decoder reads.

    Example:
    ```python
    decoder = keras_mirasol.models.TimeAlignedDecoder(
        hidden_dim=32, num_layers=2, num_heads=2, intermediate_dim=64,
    )
    decoder(np.ones((2, 4, 3, 32)))  # [2, 12, 32]
    ```
    """

    def __init__(
        self,
        hidden_dim,
        num_layers,
        num_heads,
        intermediate_dim,
        dropout=0.0,
        layer_norm_epsilon=1e-6,
        max_wavelength=10000,
        remat=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.remat = remat
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.dropout = dropout
        self.layer_norm_epsilon = layer_norm_epsilon
        self.max_wavelength = max_wavelength
        self.snippet_position = keras_hub.layers.SinePositionEncoding(
            max_wavelength=max_wavelength,
            dtype=self.dtype_policy,
            name="snippet_position",
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

    def build(self, combined_tokens_shape):
        _, num_snippets, tokens_per_snippet, hidden_dim = combined_tokens_shape
        if hidden_dim != self.hidden_dim:
            raise ValueError(
                f"{self.name}: combined tokens have width {hidden_dim}, "
                f"expected hidden_dim={self.hidden_dim}."
            )
        self.slot_embedding = self.add_weight(
            name="slot_embedding",
            shape=(tokens_per_snippet, hidden_dim),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
        )
        sequence_shape = (None, num_snippets * tokens_per_snippet, hidden_dim)
        for block in self.blocks:
            block.build(sequence_shape)
        self.final_norm.build(sequence_shape)
        self.built = True

    def embed(self, combined_tokens, first_snippet=0):
        """Flatten snippets and add snippet and slot position signals.

        Args:
            combined_tokens: float `[B, T, m, D]`.
            first_snippet: int. Index of the first snippet (when streaming).
                Defaults to `0`.

        Returns:
            float `[B, T * m, D]`.
        """
        _, num_snippets, tokens_per_snippet, _ = combined_tokens.shape
        x = ops.reshape(
            combined_tokens,
            (-1, num_snippets * tokens_per_snippet, self.hidden_dim),
        )
        positions = (
            snippet_ids(num_snippets, tokens_per_snippet) + first_snippet
        )
        x = x + self.snippet_position(
            x, positions=ops.cast(positions, self.compute_dtype)
        )
        slots = ops.cast(self.slot_embedding, self.compute_dtype)
        return x + ops.tile(slots, (num_snippets, 1))

    def call(self, combined_tokens, training=None):
        _, num_snippets, tokens_per_snippet, _ = combined_tokens.shape
        x = self.embed(combined_tokens)
        mask = block_causal_mask(
            num_snippets, tokens_per_snippet, batch_size=ops.shape(x)[0]
        )
        for block in self.blocks:
            x = remat_block(
                block,
                x,
                remat=self.remat,
                attention_mask=mask,
                training=training,
            )
        return self.final_norm(x)

    def init_cache(self, batch_size, slots, dtype):
        """Empty key/value caches for `call_with_cache`.

        Args:
            batch_size: int.
            slots: int. Token slots `S` per block.
            dtype: str. The cache dtype (the model's compute dtype).

        Returns:
            `L_av` pairs `(key, value)`, zeros `[B, heads, S, head_dim]`
            each: one heads-first cache per block (`KeyValueCaches`).
        """
        return empty_key_value_caches(
            batch_size,
            self.num_layers,
            self.num_heads,
            slots,
            self.hidden_dim // self.num_heads,
            dtype,
        )

    def call_with_cache(
        self, combined_tokens, cache, cache_update_index, first_snippet, mask
    ):
        """Run new snippets against the cached keys/values of earlier ones.

        The streaming form of `call`: the new snippets' tokens see each
        other (block-causally) and every cached token that `mask` allows.
        Positions in the cache carry no meaning (the snippet signal is
        added to the tokens before the blocks), so a stream may keep its
        window in a ring buffer.

        Args:
            combined_tokens: float `[B, k, m, D]`, the new snippets.
            cache: `L_av` pairs `(key, value)`, float `[B, heads, S,
                head_dim]` each: keys and values of `S` token slots per
                block (`init_cache()`).
            cache_update_index: int or int tensor. Slot of the first new
                token; the new tokens fill `[index, index + k * m)`.
            first_snippet: int or int tensor. Snippet index of the first
                new snippet since the stream began (the position signal).
            mask: bool `[B, k * m, S]`. Which cache slots each new token
                attends to, its own snippet's slots included.

        Returns:
            `(latents [B, k * m, D], cache)`.
        """
        x = self.embed(combined_tokens, first_snippet=first_snippet)
        cache = KeyValueCaches(cache, cache_update_index)
        for i, block in enumerate(self.blocks):
            x = pre_norm_block(
                block,
                x,
                attention_mask=mask,
                keys_values=cache.writer(i, block._self_attention_layer),
            )
        return self.final_norm(x), cache.caches

    def compute_output_shape(self, combined_tokens_shape):
        batch, num_snippets, tokens_per_snippet, hidden_dim = (
            combined_tokens_shape
        )
        return (batch, num_snippets * tokens_per_snippet, hidden_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "hidden_dim": self.hidden_dim,
                "num_layers": self.num_layers,
                "num_heads": self.num_heads,
                "intermediate_dim": self.intermediate_dim,
                "dropout": self.dropout,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "max_wavelength": self.max_wavelength,
                "remat": self.remat,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_mirasol")
class NextSnippetLatentLoss(keras.layers.Layer):
    """Predict snippet t+1's Combiner features from snippet t's latents.

    The paper's latent-space reconstruction objective. The target is the
    Combiner output under `stop_gradient`, so the loss trains the predictor
    and the time-aligned model, never by moving its own target.

    Args:
        hidden_dim: int. Width `D` of latents and targets.
        loss_type: str. `"mse"` or `"cosine"` (`1 - cosine similarity`).
            Defaults to `"mse"`.
        layer_norm_epsilon: float. Defaults to `1e-6`.

    Call arguments:
        av_latents: float `[B, T * m, D]` from `TimeAlignedDecoder`.
        combined_tokens: float `[B, T, m, D]`, the Combiner output.

    Returns:
        float32 `[B]`: per-clip loss averaged over snippets `1..T-1`
        (zeros when `T == 1`).
    """

    def __init__(
        self, hidden_dim, loss_type="mse", layer_norm_epsilon=1e-6, **kwargs
    ):
        super().__init__(**kwargs)
        if loss_type not in ("mse", "cosine"):
            raise ValueError(
                f"`latent_loss_type` must be 'mse' or 'cosine', got "
                f"{loss_type!r}."
            )
        self.hidden_dim = hidden_dim
        self.loss_type = loss_type
        self.layer_norm_epsilon = layer_norm_epsilon
        self.norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=self.dtype_policy, name="norm"
        )
        self.hidden = keras.layers.Dense(
            hidden_dim,
            activation="gelu",
            dtype=self.dtype_policy,
            name="hidden",
        )
        self.output_projection = keras.layers.Dense(
            hidden_dim, dtype=self.dtype_policy, name="output_projection"
        )

    def build(self, av_latents_shape, combined_tokens_shape):
        self.norm.build(av_latents_shape)
        self.hidden.build(av_latents_shape)
        self.output_projection.build(av_latents_shape)
        self.built = True

    def predict_next(self, av_latents):
        """Predicted Combiner features of the following snippet.

        Args:
            av_latents: float `[B, S, D]`.

        Returns:
            float `[B, S, D]`.
        """
        return self.output_projection(self.hidden(self.norm(av_latents)))

    def call(self, av_latents, combined_tokens):
        _, num_snippets, tokens_per_snippet, _ = combined_tokens.shape
        if num_snippets < 2:
            return ops.zeros_like(av_latents[:, 0, 0], dtype="float32")
        m = tokens_per_snippet
        prediction = ops.cast(self.predict_next(av_latents[:, :-m]), "float32")
        target = ops.reshape(
            combined_tokens, (-1, num_snippets * m, self.hidden_dim)
        )[:, m:]
        target = ops.stop_gradient(ops.cast(target, "float32"))
        if self.loss_type == "mse":
            return ops.mean(ops.square(prediction - target), axis=(1, 2))
        prediction = prediction / ops.maximum(
            ops.norm(prediction, axis=-1, keepdims=True), 1e-6
        )
        target = target / ops.maximum(
            ops.norm(target, axis=-1, keepdims=True), 1e-6
        )
        return 1.0 - ops.mean(ops.sum(prediction * target, axis=-1), axis=1)

    def compute_output_shape(self, av_latents_shape, combined_tokens_shape):
        return (av_latents_shape[0],)

    def compute_output_spec(self, av_latents, combined_tokens):
        return keras.KerasTensor((av_latents.shape[0],), dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "hidden_dim": self.hidden_dim,
                "loss_type": self.loss_type,
                "layer_norm_epsilon": self.layer_norm_epsilon,
            }
        )
        return config
