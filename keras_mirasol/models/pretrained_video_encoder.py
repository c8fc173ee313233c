"""A pretrained keras-hub video model as Mirasol's per-snippet encoder."""

import keras
import keras_hub
from keras import ops

from keras_mirasol.layers.transformer_stack import encode_snippets
from keras_mirasol.models.pretrained_text_decoder import deserialize_backbone


@keras.saving.register_keras_serializable(package="keras_mirasol")
class PretrainedVideoEncoder(keras.layers.Layer):
    """A keras-hub `VideoPrismBackbone` run on each snippet of a clip.

    The clip's `N` frames are cut into snippets of `backbone.num_frames`
    frames, folded into the batch (snippet-major), and each snippet goes
    through the pretrained video model on its own, as Mirasol's own
    `VideoEncoder` does: the features of a snippet do not depend on the
    other snippets. The model's patch features `[f, P, D]` of a snippet
    become its `f * P'` tokens, `P' = P / spatial_pool**2` after an
    optional average pooling over the patch grid (VideoPrism's base model
    gives 16 x 256 tokens per 16-frame snippet at 288 x 288; a
    `spatial_pool` of 4 makes that 16 x 16, which the Combiner reads much
    faster). The Combiner projects the tokens to its own width.

    Frames are given to the video model as they come, floats in `[0, 1]`,
    which is what VideoPrism takes.

    Args:
        backbone: a video-only `keras_hub.models.VideoPrismBackbone`
            (`num_text_layers=0`). Freeze it with
            `encoder.backbone.trainable = False`.
        num_snippets: int. Snippets `T` per clip.
        spatial_pool: int. Average-pool the patch grid by this factor in
            each direction; divides the grid's side. Defaults to `1` (no
            pooling).
        remat: bool. Run the video model one snippet at a time in a loop
            and recompute its activations in the backward pass
            (`keras.remat`), so training memory holds one snippet's
            activations. `MirasolBackbone(remat=...)` sets it. Defaults
            to `False`.

    Call arguments:
        video: float `[B, N, H, W, 3]` in `[0, 1]`, `N` a multiple of
            `backbone.num_frames`, `(H, W)` the backbone's `image_shape`.
        training: bool or None.

    Returns:
        float `[B, N / f, tokens_per_snippet, hidden_dim]`.

    Example:
    ```python
    import keras_hub

    # A tiny random VideoPrism; the real one comes from
    # keras_hub.models.VideoPrismBackbone.from_preset(
    #     "videoprism_public_v1_base") (16 frames of 288 x 288).
    prism = keras_hub.models.VideoPrismBackbone(
        num_frames=2, patch_size=8, hidden_dim=16, intermediate_dim=32,
        num_heads=2, num_spatial_layers=1, num_temporal_layers=1,
        num_auxiliary_layers=0, image_shape=(32, 32, 3),
    )
    encoder = keras_mirasol.models.PretrainedVideoEncoder(
        prism, num_snippets=4, spatial_pool=2
    )
    video = np.random.uniform(size=(1, 8, 32, 32, 3))  # 4 snippets of 2
    encoder(video).shape  # (1, 4, 8, 16)
    ```
    """

    def __init__(
        self, backbone, num_snippets, spatial_pool=1, remat=False, **kwargs
    ):
        super().__init__(**kwargs)
        if isinstance(backbone, dict):
            backbone = deserialize_backbone(backbone)
        if not isinstance(backbone, keras_hub.models.VideoPrismBackbone):
            raise ValueError(
                "`video_encoder` must be a keras_hub.models."
                f"VideoPrismBackbone, got a {type(backbone).__name__}. "
                "Load one with keras_hub.models.VideoPrismBackbone."
                'from_preset("videoprism_public_v1_base"), or build '
                "Mirasol's own video encoder (no `video_encoder`)."
            )
        if backbone.num_text_layers:
            raise ValueError(
                "The video encoder must be a video-only VideoPrism "
                f"(num_text_layers=0); this one has {backbone.num_text_layers}"
                " text layers. Load the video-only preset, e.g. "
                '"videoprism_public_v1_base".'
            )
        height, width = self.image_size_of(backbone)
        grid = (height // backbone.patch_size, width // backbone.patch_size)
        if spatial_pool < 1 or grid[0] % spatial_pool or grid[1] % spatial_pool:
            raise ValueError(
                f"`spatial_pool` must be >= 1 and divide the video model's "
                f"patch grid {grid[0]} x {grid[1]}, got {spatial_pool}."
            )
        self.backbone = backbone
        self.num_snippets = num_snippets
        self.spatial_pool = spatial_pool
        self.remat = remat
        self.frames_per_snippet = backbone.num_frames
        self.num_frames = num_snippets * backbone.num_frames
        self.image_size = (height, width)
        self.grid = grid
        self.hidden_dim = backbone.hidden_dim
        self.tokens_per_snippet = (
            backbone.num_frames
            * (grid[0] // spatial_pool)
            * (grid[1] // spatial_pool)
        )

    @staticmethod
    def image_size_of(backbone):
        """`(H, W)` of a channels-last VideoPrism backbone's frames.

        Args:
            backbone: `keras_hub.models.VideoPrismBackbone`.

        Returns:
            tuple of two ints.
        """
        height, width, channels = tuple(backbone.image_shape)
        if channels != 3:
            raise ValueError(
                "The video encoder must take channels-last RGB frames, "
                f"image_shape (H, W, 3); got {tuple(backbone.image_shape)}. "
                'Build it with keras.config.set_image_data_format("'
                'channels_last").'
            )
        return height, width

    def build(self, video_shape):
        self.built = True

    def call(self, video, training=None):
        height, width = self.image_size
        frames = self.frames_per_snippet
        num_snippets = video.shape[1] // frames
        x = ops.reshape(video, (-1, frames, height, width, 3))

        def encode(snippets):
            return self.backbone(snippets, training=training)

        # [B * T, f * P, D] patch features of each snippet.
        x = encode_snippets(encode, x, num_snippets, remat=self.remat)
        if self.spatial_pool > 1:
            rows, cols = self.grid
            x = ops.reshape(x, (-1, rows, cols, self.hidden_dim))
            x = ops.average_pool(
                x, self.spatial_pool, strides=self.spatial_pool
            )
        return ops.reshape(
            x, (-1, num_snippets, self.tokens_per_snippet, self.hidden_dim)
        )

    def compute_output_shape(self, video_shape):
        return (
            video_shape[0],
            video_shape[1] // self.frames_per_snippet,
            self.tokens_per_snippet,
            self.hidden_dim,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "backbone": keras.layers.serialize(self.backbone),
                "num_snippets": self.num_snippets,
                "spatial_pool": self.spatial_pool,
                "remat": self.remat,
            }
        )
        return config
