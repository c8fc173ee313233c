"""Tubelet (spatio-temporal patch) embedding for video snippets."""

import keras
from keras import ops

from keras_mirasol.layers.transformer_stack import has_float_kernel
from keras_mirasol.layers.transformer_stack import rows_matmul


@keras.saving.register_keras_serializable(package="keras_mirasol")
class TubeletEmbedding(keras.layers.Layer):
    """Cut a clip into non-overlapping tubelets and embed each one.

    The ViViT / TubeViT tubelet embedding: equal to a Conv3D with kernel =
    stride = `tubelet_size`, with the Conv3D's kernel shape `[t, p, p, C, D]`
    and initialisation, but computed as a reshape into tubelets and one
    `EinsumDense` contraction. A strided Conv3D's gradient is very slow on a
    CPU without XLA (TensorFlow's default there); a matmul is fast on every
    backend and device. The contraction runs as one 2-D product of the
    tubelets as rows, `[B * n, t * p * p * C]`, and the kernel reshaped to
    `[t * p * p * C, D]` (the `EinsumDense`'s own call when its kernel is
    quantized): with the 5-D einsum, XLA's CPU compiler transposed the
    tokens' gradient before the kernel's and fused the layer norms'
    backward of every block above into that copy.

    Args:
        hidden_dim: int. Width `D` of each token.
        tubelet_size: tuple `(t, p, p)`. Frames and pixels per tubelet.

    Call arguments:
        inputs: float `[B, F, H, W, C]`, with `F % t == 0` and
            `H % p == W % p == 0`.

    Returns:
        float `[B, (F / t) * (H / p) * (W / p), D]`, tokens in
        (time, row, column) order.
    """

    def __init__(self, hidden_dim, tubelet_size, **kwargs):
        super().__init__(**kwargs)
        self.hidden_dim = hidden_dim
        self.tubelet_size = tuple(tubelet_size)
        self.projection = keras.layers.EinsumDense(
            "bntpqc,tpqcd->bnd",
            output_shape=(None, hidden_dim),
            bias_axes="d",
            # Glorot with a Conv3D's fans (in: t*p*p*C, out: t*p*p*D), so
            # the kernel starts as Keras initialises the Conv3D it equals.
            kernel_initializer=keras.initializers.GlorotUniform(
                input_axes=(0, 1, 2, 3), output_axes=(0, 1, 2, 4)
            ),
            dtype=self.dtype_policy,
            name="projection",
        )

    def build(self, inputs_shape):
        t, p_h, p_w = self.tubelet_size
        channels = inputs_shape[-1]
        self.projection.build((None, None, t, p_h, p_w, channels))
        self.built = True

    def num_tokens(self, inputs_shape):
        """Tokens of a clip: `(F / t) * (H / p) * (W / p)`.

        Args:
            inputs_shape: tuple `(B, F, H, W, C)`.

        Returns:
            int.
        """
        frames, height, width = inputs_shape[1:4]
        t, p_h, p_w = self.tubelet_size
        return (frames // t) * (height // p_h) * (width // p_w)

    def call(self, inputs):
        frames, height, width, channels = inputs.shape[1:]
        t, p_h, p_w = self.tubelet_size
        x = ops.reshape(
            inputs,
            (
                -1,
                frames // t,
                t,
                height // p_h,
                p_h,
                width // p_w,
                p_w,
                channels,
            ),
        )
        # [B, F/t, H/p, W/p, t, p, p, C]: one tubelet per token position.
        x = ops.transpose(x, (0, 1, 3, 5, 2, 4, 6, 7))
        num_tokens = self.num_tokens(inputs.shape)
        if not has_float_kernel(self.projection):
            x = ops.reshape(x, (-1, num_tokens, t, p_h, p_w, channels))
            return self.projection(x)
        rows = ops.reshape(x, (-1, t * p_h * p_w * channels))
        y = rows_matmul(self.projection, rows, self.hidden_dim)
        return ops.reshape(y, (-1, num_tokens, self.hidden_dim))

    def compute_output_shape(self, inputs_shape):
        return (inputs_shape[0], self.num_tokens(inputs_shape), self.hidden_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            {"hidden_dim": self.hidden_dim, "tubelet_size": self.tubelet_size}
        )
        return config
