"""Tubelet (spatio-temporal patch) embedding for video snippets."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_mirasol")
class TubeletEmbedding(keras.layers.Layer):
    """Cut a clip into non-overlapping tubelets and embed each one.

    A Conv3D with kernel = stride = `tubelet_size` (ViViT / TubeViT
    tubelet embedding), flattened to a token sequence.

    Args:
        hidden_dim: int. Width `D` of each token.
        tubelet_size: tuple `(t, p, p)`. Frames and pixels per tubelet.

    Call arguments:
        inputs: float `[B, F, H, W, C]`, with `F % t == 0` and
            `H % p == W % p == 0`.

    Returns:
        float `[B, (F / t) * (H / p) * (W / p), D]`.
    """

    def __init__(self, hidden_dim, tubelet_size, **kwargs):
        super().__init__(**kwargs)
        self.hidden_dim = hidden_dim
        self.tubelet_size = tuple(tubelet_size)
        self.projection = keras.layers.Conv3D(
            hidden_dim,
            kernel_size=self.tubelet_size,
            strides=self.tubelet_size,
            padding="valid",
            dtype=self.dtype_policy,
            name="projection",
        )

    def build(self, inputs_shape):
        self.projection.build(inputs_shape)
        self.built = True

    def num_tokens(self, inputs_shape):
        frames, height, width = inputs_shape[1:4]
        t, p_h, p_w = self.tubelet_size
        return (frames // t) * (height // p_h) * (width // p_w)

    def call(self, inputs):
        x = self.projection(inputs)
        return ops.reshape(
            x, (-1, self.num_tokens(inputs.shape), self.hidden_dim)
        )

    def compute_output_shape(self, inputs_shape):
        return (inputs_shape[0], self.num_tokens(inputs_shape), self.hidden_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            {"hidden_dim": self.hidden_dim, "tubelet_size": self.tubelet_size}
        )
        return config
