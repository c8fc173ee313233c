"""Per-snippet video encoder: tubelets, position embedding, transformer."""

import keras
from keras import ops

from keras_mirasol.layers.tubelet_embedding import TubeletEmbedding
from keras_mirasol.models.config_checks import check_divisible
from keras_mirasol.models.input_checks import validate_video_shape
from keras_mirasol.models.snippet_encoder import SnippetEncoder


@keras.saving.register_keras_serializable(package="keras_mirasol")
class VideoEncoder(SnippetEncoder):
    """Encode each video snippet on its own into a set of tokens.

    The clip is cut into `num_snippets` consecutive snippets of
    `num_frames / num_snippets` frames; snippets are folded into the batch
    so every snippet goes through the same weights (a ViT over tubelets,
    `SnippetEncoder`). Parameters depend on the frames per snippet, not on
    the clip length.

    Args:
        num_frames: int. Frames `N` per clip.
        num_snippets: int. Snippets `T` per clip; `N % T == 0`.
        image_size: int or tuple `(H, W)`. Frame size.
        tubelet_size: tuple `(t, p, p)`. Tubelet frames and pixels.
        hidden_dim: int. Token width `D_v`.
        num_layers: int. Transformer blocks `L_v`.
        num_heads: int. Attention heads.
        intermediate_dim: int. MLP width.
        dropout: float. Defaults to `0.0`.
        layer_norm_epsilon: float. Defaults to `1e-6`.

    Call arguments:
        video: float `[B, N, H, W, 3]`, values in `[0, 1]`. After the
            layer is built, any whole number of snippets `[B, k * N / T,
            H, W, 3]` (a stream passes one snippet at a time).

    Returns:
        float `[B, T, n_v, D_v]` with
        `n_v = (N / T / t) * (H / p) * (W / p)` (`[B, k, n_v, D_v]` for
        `k` snippets).

    Example:
    ```python
    encoder = keras_mirasol.models.VideoEncoder(
        num_frames=8, num_snippets=2, image_size=32,
        tubelet_size=(2, 8, 8), hidden_dim=64, num_layers=1,
        num_heads=4, intermediate_dim=128,
    )
    encoder(np.zeros((1, 8, 32, 32, 3)))  # [1, 2, 32, 64]
    ```
    """

    def __init__(
        self,
        num_frames,
        num_snippets,
        image_size,
        tubelet_size,
        hidden_dim,
        num_layers,
        num_heads,
        intermediate_dim,
        dropout=0.0,
        layer_norm_epsilon=1e-6,
        **kwargs,
    ):
        super().__init__(
            num_snippets=num_snippets,
            hidden_dim=hidden_dim,
            num_layers=num_layers,
            num_heads=num_heads,
            intermediate_dim=intermediate_dim,
            dropout=dropout,
            layer_norm_epsilon=layer_norm_epsilon,
            **kwargs,
        )
        if isinstance(image_size, int):
            image_size = (image_size, image_size)
        self.num_frames = num_frames
        self.image_size = tuple(image_size)
        self.tubelet_size = tuple(tubelet_size)

        t, p_h, p_w = self.tubelet_size
        check_divisible(
            "num_frames", num_frames, "num_snippets", num_snippets, self.name
        )
        self.frames_per_snippet = num_frames // num_snippets
        check_divisible(
            "frames per snippet (num_frames / num_snippets)",
            self.frames_per_snippet,
            "tubelet_size[0]",
            t,
            self.name,
        )
        check_divisible(
            "image_size[0]",
            self.image_size[0],
            "tubelet_size[1]",
            p_h,
            self.name,
        )
        check_divisible(
            "image_size[1]",
            self.image_size[1],
            "tubelet_size[2]",
            p_w,
            self.name,
        )
        self.make_token_layers(
            (self.frames_per_snippet // t)
            * (self.image_size[0] // p_h)
            * (self.image_size[1] // p_w)
        )
        self.tubelet_embedding = TubeletEmbedding(
            hidden_dim,
            self.tubelet_size,
            dtype=self.dtype_policy,
            name="tubelet_embedding",
        )

    def build(self, video_shape):
        validate_video_shape(
            video_shape, self.num_frames, self.image_size, self.num_snippets
        )
        snippet_shape = (None, self.frames_per_snippet) + tuple(video_shape[2:])
        self.tubelet_embedding.build(snippet_shape)
        self.build_token_layers()
        self.built = True

    def call(self, video, training=None):
        height, width = self.image_size
        # Fold snippets into the batch: snippet t holds frames
        # [t * N / T, (t + 1) * N / T), contiguous in time.
        x = ops.reshape(video, (-1, self.frames_per_snippet, height, width, 3))
        return self.encode_snippets(
            self.tubelet_embedding(x),
            video.shape[1] // self.frames_per_snippet,
            training=training,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_frames": self.num_frames,
                "image_size": self.image_size,
                "tubelet_size": self.tubelet_size,
            }
        )
        return config
