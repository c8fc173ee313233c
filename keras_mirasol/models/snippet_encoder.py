"""What the video and the audio encoder share: one transformer per snippet."""

import keras
import keras_hub
from keras import ops

from keras_mirasol.layers.transformer_stack import TransformerStack
from keras_mirasol.layers.transformer_stack import map_snippets


class SnippetEncoder(keras.layers.Layer):
    """Base of the per-snippet encoders.

    A subclass turns its input into tokens with the snippets folded into
    the batch, `[B * T, n, D]` (snippet-major), and calls
    `encode_snippets`: a learned position embedding over the `n` tokens of
    a snippet, a `TransformerStack` within each snippet, and the snippets
    unfolded again to `[B, T, n, D]`. Every snippet goes through the same
    weights, so parameters depend on the snippet, not on the clip length.
    The two sublayers are named `position_embedding` and `transformer` in
    every encoder.

    Args:
        num_snippets: int. Snippets `T` per clip.
        hidden_dim: int. Token width `D`.
        num_layers: int. Transformer blocks.
        num_heads: int. Attention heads.
        intermediate_dim: int. MLP width.
        dropout: float. Defaults to `0.0`.
        layer_norm_epsilon: float. Defaults to `1e-6`.
        remat: bool. Recompute the transformer blocks' activations in the
            backward pass, one snippet at a time (`TransformerStack`,
            `map_snippets`). Defaults to `False`.
    """

    def __init__(
        self,
        num_snippets,
        hidden_dim,
        num_layers,
        num_heads,
        intermediate_dim,
        dropout=0.0,
        layer_norm_epsilon=1e-6,
        remat=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.remat = remat
        self.num_snippets = num_snippets
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.dropout = dropout
        self.layer_norm_epsilon = layer_norm_epsilon

    def make_token_layers(self, tokens_per_snippet):
        """Create the position embedding and the transformer.

        Args:
            tokens_per_snippet: int. Tokens `n` of one snippet.
        """
        self.tokens_per_snippet = tokens_per_snippet
        self.position_embedding = keras_hub.layers.PositionEmbedding(
            sequence_length=tokens_per_snippet,
            dtype=self.dtype_policy,
            name="position_embedding",
        )
        self.transformer = TransformerStack(
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            intermediate_dim=self.intermediate_dim,
            dropout=self.dropout,
            layer_norm_epsilon=self.layer_norm_epsilon,
            remat=self.remat,
            dtype=self.dtype_policy,
            name="transformer",
        )

    def build_token_layers(self):
        token_shape = (None, self.tokens_per_snippet, self.hidden_dim)
        self.position_embedding.build(token_shape)
        self.transformer.build(token_shape)

    def encode_snippets(self, tokens, num_snippets, training=None):
        """Position embedding and transformer, then unfold the snippets.

        Args:
            tokens: float `[B * T, n, D]`, snippet-major.
            num_snippets: int. Snippets `T` in `tokens`: `num_snippets`
                for a whole clip, fewer when a stream encodes the snippets
                as they arrive.
            training: bool or None. Defaults to `None`.

        Returns:
            float `[B, T, n, D]`.
        """
        x = tokens + self.position_embedding(tokens)
        if self.remat and num_snippets > 1:
            x = map_snippets(
                lambda snippet: self.transformer(snippet, training=training),
                x,
                num_snippets,
            )
        else:
            x = self.transformer(x, training=training)
        return ops.reshape(
            x, (-1, num_snippets, self.tokens_per_snippet, self.hidden_dim)
        )

    def compute_output_shape(self, inputs_shape):
        return (
            inputs_shape[0],
            self.num_snippets,
            self.tokens_per_snippet,
            self.hidden_dim,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_snippets": self.num_snippets,
                "hidden_dim": self.hidden_dim,
                "num_layers": self.num_layers,
                "num_heads": self.num_heads,
                "intermediate_dim": self.intermediate_dim,
                "dropout": self.dropout,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "remat": self.remat,
            }
        )
        return config
