"""TokenLearner: summarise a token set into a fixed number of tokens."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_mirasol")
class TokenLearner(keras.layers.Layer):
    """Learned soft pooling of `N` input tokens into `num_tokens` tokens.

    Each output token is a softmax-weighted average of the inputs; the
    weights come from a small MLP over every input token (TokenLearner
    v1.1, Ryoo et al. 2021), which is how the Token Turing Machine reads
    from and writes to its memory.

    Args:
        num_tokens: int. Number of output tokens `K`.
        bottleneck_dim: int. Width of the MLP that scores the inputs.
            Defaults to `64`.
        layer_norm_epsilon: float. Defaults to `1e-6`.

    Call arguments:
        inputs: float `[B, N, D]`.

    Returns:
        float `[B, K, D]`.

    Example:
    ```python
    learner = keras_mirasol.layers.TokenLearner(num_tokens=4)
    learner(np.ones((2, 10, 16)))  # [2, 4, 16]
    ```
    """

    def __init__(
        self, num_tokens, bottleneck_dim=64, layer_norm_epsilon=1e-6, **kwargs
    ):
        super().__init__(**kwargs)
        self.num_tokens = num_tokens
        self.bottleneck_dim = bottleneck_dim
        self.layer_norm_epsilon = layer_norm_epsilon
        self.norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=self.dtype_policy, name="norm"
        )
        self.score_hidden = keras.layers.Dense(
            bottleneck_dim,
            activation="gelu",
            dtype=self.dtype_policy,
            name="score_hidden",
        )
        self.score_output = keras.layers.Dense(
            num_tokens, dtype=self.dtype_policy, name="score_output"
        )

    def build(self, inputs_shape):
        self.norm.build(inputs_shape)
        self.score_hidden.build(inputs_shape)
        self.score_output.build(
            tuple(inputs_shape[:-1]) + (self.bottleneck_dim,)
        )
        self.built = True

    def call(self, inputs):
        scores = self.score_output(self.score_hidden(self.norm(inputs)))
        # Softmax over the input tokens, in float32 for stability.
        weights = ops.softmax(ops.cast(scores, "float32"), axis=1)
        weights = ops.cast(weights, self.compute_dtype)
        return ops.einsum("bnk,bnd->bkd", weights, inputs)

    def compute_output_shape(self, inputs_shape):
        return (inputs_shape[0], self.num_tokens, inputs_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_tokens": self.num_tokens,
                "bottleneck_dim": self.bottleneck_dim,
                "layer_norm_epsilon": self.layer_norm_epsilon,
            }
        )
        return config
