"""Combiners: compress each snippet's audio and video tokens to m tokens.

Two variants from the paper: `TransformerCombiner` (transformer over the
snippet's tokens, keep the last `m` outputs) and `TTMCombiner` (a Token
Turing Machine whose memory carries information from snippet to snippet).
Both map video tokens `[B, T, n_v, D_v]` (and audio tokens
`[B, T, n_a, D_a]`) to combined tokens `[B, T, m, D]`. A third,
`AllTokensCombiner`, compresses nothing: it is the unchunked baseline's.
"""

import keras
from keras import ops

from keras_mirasol.layers.token_learner import TokenLearner
from keras_mirasol.layers.transformer_stack import TransformerStack
from keras_mirasol.layers.transformer_stack import map_snippets
from keras_mirasol.layers.transformer_stack import scan_snippets


class CombinerBase(keras.layers.Layer):
    """Shared input side of the Combiners: project, tag modality, concat.

    Args:
        num_tokens: int. Output tokens `m` per snippet.
        hidden_dim: int. Width `D` of the combined tokens.
        num_layers: int. Transformer blocks `L_c`.
        num_heads: int. Attention heads.
        intermediate_dim: int. MLP width.
        use_audio: bool. Whether audio tokens are combined with the video
            tokens. Defaults to `True`.
        dropout: float. Defaults to `0.0`.
        layer_norm_epsilon: float. Defaults to `1e-6`.
        remat: bool. Recompute the transformer blocks' activations in the
            backward pass (`TransformerStack`). Defaults to `False`.
    """

    def __init__(
        self,
        num_tokens,
        hidden_dim,
        num_layers,
        num_heads,
        intermediate_dim,
        use_audio=True,
        dropout=0.0,
        layer_norm_epsilon=1e-6,
        remat=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.remat = remat
        self.num_tokens = num_tokens
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.use_audio = use_audio
        self.dropout = dropout
        self.layer_norm_epsilon = layer_norm_epsilon
        self.video_projection = keras.layers.Dense(
            hidden_dim, dtype=self.dtype_policy, name="video_projection"
        )
        self.audio_projection = None
        if use_audio:
            self.audio_projection = keras.layers.Dense(
                hidden_dim, dtype=self.dtype_policy, name="audio_projection"
            )
        self.transformer = TransformerStack(
            num_layers=num_layers,
            num_heads=num_heads,
            intermediate_dim=intermediate_dim,
            dropout=dropout,
            layer_norm_epsilon=layer_norm_epsilon,
            remat=remat,
            dtype=self.dtype_policy,
            name="transformer",
        )

    def build(self, video_tokens_shape, audio_tokens_shape=None):
        if self.use_audio and audio_tokens_shape is None:
            raise ValueError(
                f"{self.name} was built with use_audio=True but got no audio "
                "tokens. Pass `audio_tokens`, or build with use_audio=False."
            )
        self.video_projection.build(video_tokens_shape)
        num_inputs = video_tokens_shape[2]
        if self.use_audio:
            self.audio_projection.build(audio_tokens_shape)
            num_inputs += audio_tokens_shape[2]
        self.num_input_tokens = num_inputs
        num_modalities = 2 if self.use_audio else 1
        self.modality_embedding = self.add_weight(
            name="modality_embedding",
            shape=(num_modalities, self.hidden_dim),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
        )

    def fuse(self, video_tokens, audio_tokens=None):
        """Project both modalities to `D`, add a modality embedding, concat.

        Returns:
            float `[B, T, n_v + n_a, D]`.
        """
        embedding = ops.cast(self.modality_embedding, self.compute_dtype)
        parts = [self.video_projection(video_tokens) + embedding[0]]
        if self.use_audio:
            parts.append(self.audio_projection(audio_tokens) + embedding[1])
        return ops.concatenate(parts, axis=2)

    def compute_output_shape(self, video_tokens_shape, audio_tokens_shape=None):
        return (
            video_tokens_shape[0],
            video_tokens_shape[1],
            self.num_tokens,
            self.hidden_dim,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_tokens": self.num_tokens,
                "hidden_dim": self.hidden_dim,
                "num_layers": self.num_layers,
                "num_heads": self.num_heads,
                "intermediate_dim": self.intermediate_dim,
                "use_audio": self.use_audio,
                "dropout": self.dropout,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "remat": self.remat,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_mirasol")
class TransformerCombiner(CombinerBase):
    """Combine each snippet with a transformer and keep the last m outputs.

    `m` learned combiner tokens are appended after the snippet's video and
    audio tokens; after `L_c` blocks their outputs are the snippet's
    representation. Each snippet is combined on its own.

    Args:
        num_tokens: int. Output tokens `m` per snippet (the learned
            combiner tokens).
        hidden_dim: int. Width `D` of the combined tokens.
        num_layers: int. Transformer blocks `L_c`.
        num_heads: int. Attention heads.
        intermediate_dim: int. MLP width.
        use_audio: bool. Whether audio tokens are combined with the video
            tokens. Defaults to `True`.
        dropout: float. Dropout rate of the blocks (training only).
            Defaults to `0.0`.
        layer_norm_epsilon: float. Epsilon of the layer normalizations.
            Defaults to `1e-6`.
        remat: bool. Recompute the transformer blocks' activations in the
            backward pass, one snippet at a time (`map_snippets`).
            Defaults to `False`.

    Call arguments:
        video_tokens: float `[B, T, n_v, D_v]`.
        audio_tokens: float `[B, T, n_a, D_a]`, or `None` when
            `use_audio=False`.
        training: bool or None.

    Returns:
        float `[B, T, m, D]`.

    Example:
    ```python
    combiner = keras_mirasol.models.TransformerCombiner(
        num_tokens=4, hidden_dim=32, num_layers=1, num_heads=2,
        intermediate_dim=64,
    )
    combiner(np.ones((2, 3, 8, 16)), np.ones((2, 3, 5, 24)))  # [2, 3, 4, 32]
    ```
    """

    def build(self, video_tokens_shape, audio_tokens_shape=None):
        super().build(video_tokens_shape, audio_tokens_shape)
        self.combiner_tokens = self.add_weight(
            name="combiner_tokens",
            shape=(self.num_tokens, self.hidden_dim),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
        )
        self.transformer.build(
            (None, self.num_input_tokens + self.num_tokens, self.hidden_dim)
        )
        self.built = True

    def call(self, video_tokens, audio_tokens=None, training=None):
        num_snippets = video_tokens.shape[1]
        x = self.fuse(video_tokens, audio_tokens)
        x = ops.reshape(x, (-1, self.num_input_tokens, self.hidden_dim))
        slots = ops.cast(self.combiner_tokens, self.compute_dtype)
        slots = ops.zeros_like(x[:, :1, :]) + slots[None]
        x = ops.concatenate([x, slots], axis=1)

        def combine(tokens):
            return self.transformer(
                tokens, training=training, keep_last=self.num_tokens
            )

        if self.remat and num_snippets > 1:
            x = map_snippets(combine, x, num_snippets)
        else:
            x = combine(x)
        return ops.reshape(
            x, (-1, num_snippets, self.num_tokens, self.hidden_dim)
        )


@keras.saving.register_keras_serializable(package="keras_mirasol")
class AllTokensCombiner(CombinerBase):
    """Keep every token: a transformer over each snippet, no compression.

    The snippet's video and audio tokens are projected to `D`, tagged by
    modality and passed through `L_c` transformer blocks; all
    `n_v + n_a` outputs are kept (`num_tokens` is not used). With
    `num_snippets=1` this is the unchunked baseline that the paper's
    snippets are measured against: every audio and video token of the
    clip in one sequence under full attention, and the text decoder
    cross-attending to all of them (`unchunked_config`).

    Args:
        num_tokens: int. Not used (every token is kept); accepted so that
            every Combiner takes the same arguments.
        hidden_dim: int. Width `D` of the combined tokens.
        num_layers: int. Transformer blocks `L_c`.
        num_heads: int. Attention heads.
        intermediate_dim: int. MLP width.
        use_audio: bool. Whether audio tokens are combined with the video
            tokens. Defaults to `True`.
        dropout: float. Dropout rate of the blocks (training only).
            Defaults to `0.0`.
        layer_norm_epsilon: float. Epsilon of the layer normalizations.
            Defaults to `1e-6`.
        remat: bool. Recompute the transformer blocks' activations in the
            backward pass, one snippet at a time (`map_snippets`).
            Defaults to `False`.

    Call arguments:
        video_tokens: float `[B, T, n_v, D_v]`.
        audio_tokens: float `[B, T, n_a, D_a]`, or `None` when
            `use_audio=False`.
        training: bool or None.

    Returns:
        float `[B, T, n_v + n_a, D]`.

    Example:
    ```python
    combiner = keras_mirasol.models.AllTokensCombiner(
        num_tokens=4, hidden_dim=32, num_layers=1, num_heads=2,
        intermediate_dim=64,
    )
    combiner(np.ones((2, 3, 8, 16)), np.ones((2, 3, 5, 24)))  # [2, 3, 13, 32]
    ```
    """

    def build(self, video_tokens_shape, audio_tokens_shape=None):
        super().build(video_tokens_shape, audio_tokens_shape)
        self.transformer.build((None, self.num_input_tokens, self.hidden_dim))
        self.built = True

    def call(self, video_tokens, audio_tokens=None, training=None):
        num_snippets = video_tokens.shape[1]
        x = self.fuse(video_tokens, audio_tokens)
        x = ops.reshape(x, (-1, self.num_input_tokens, self.hidden_dim))
        if self.remat and num_snippets > 1:
            x = map_snippets(
                lambda tokens: self.transformer(tokens, training=training),
                x,
                num_snippets,
            )
        else:
            x = self.transformer(x, training=training)
        return ops.reshape(
            x, (-1, num_snippets, self.num_input_tokens, self.hidden_dim)
        )

    def compute_output_shape(self, video_tokens_shape, audio_tokens_shape=None):
        num_tokens = video_tokens_shape[2]
        if audio_tokens_shape is not None:
            num_tokens += audio_tokens_shape[2]
        return (
            video_tokens_shape[0],
            video_tokens_shape[1],
            num_tokens,
            self.hidden_dim,
        )


@keras.saving.register_keras_serializable(package="keras_mirasol")
class TTMCombiner(CombinerBase):
    """Token Turing Machine Combiner (Ryoo et al. 2023).

    A memory of `memory_size` tokens is carried from snippet to snippet.
    For snippet `t`:
    `read = TokenLearner_m([memory, inputs_t])`,
    `output_t = Transformer(read)` (the snippet's `m` tokens),
    `memory = TokenLearner_M([memory, inputs_t, output_t])`.
    So a snippet's output depends on earlier snippets through the memory,
    never on later ones. The memory starts at zero; a learned memory
    position embedding tells its slots apart.

    Args:
        num_tokens: int. Output tokens `m` per snippet, read from memory
            and inputs by a `TokenLearner`.
        memory_size: int. Memory tokens `M`.
        bottleneck_dim: int. Width of the TokenLearner scoring MLPs.
            Defaults to `64`.
        **kwargs: the other `CombinerBase` arguments: `hidden_dim`,
            `num_layers`, `num_heads`, `intermediate_dim` (required),
            `use_audio` (defaults to `True`), `dropout` (defaults to
            `0.0`), `layer_norm_epsilon` (defaults to `1e-6`), `remat`
            (defaults to `False`), and layer arguments such as `name` and
            `dtype`.

    Call arguments:
        video_tokens: float `[B, T, n_v, D_v]`.
        audio_tokens: float `[B, T, n_a, D_a]`, or `None` when
            `use_audio=False`.
        memory: optional float `[B, M, D]`, the memory to start from (e.g.
            carried over from the previous call when streaming). Defaults to
            zeros.
        return_memory: bool. Also return the final memory.
        training: bool or None.

    Returns:
        float `[B, T, m, D]`, or `(outputs, memory [B, M, D])` when
        `return_memory=True`.

    Example:
    ```python
    combiner = keras_mirasol.models.TTMCombiner(
        num_tokens=4, memory_size=8, hidden_dim=32, num_layers=1,
        num_heads=2, intermediate_dim=64,
    )
    combiner(np.ones((2, 3, 8, 16)), np.ones((2, 3, 5, 24)))  # [2, 3, 4, 32]
    ```
    """

    def __init__(self, num_tokens, memory_size, bottleneck_dim=64, **kwargs):
        super().__init__(num_tokens=num_tokens, **kwargs)
        self.memory_size = memory_size
        self.bottleneck_dim = bottleneck_dim
        self.read_learner = TokenLearner(
            num_tokens,
            bottleneck_dim=bottleneck_dim,
            layer_norm_epsilon=self.layer_norm_epsilon,
            dtype=self.dtype_policy,
            name="read",
        )
        self.write_learner = TokenLearner(
            memory_size,
            bottleneck_dim=bottleneck_dim,
            layer_norm_epsilon=self.layer_norm_epsilon,
            dtype=self.dtype_policy,
            name="write",
        )

    def build(self, video_tokens_shape, audio_tokens_shape=None):
        super().build(video_tokens_shape, audio_tokens_shape)
        self.memory_embedding = self.add_weight(
            name="memory_embedding",
            shape=(self.memory_size, self.hidden_dim),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
        )
        read_len = self.memory_size + self.num_input_tokens
        self.read_learner.build((None, read_len, self.hidden_dim))
        self.transformer.build((None, self.num_tokens, self.hidden_dim))
        self.write_learner.build(
            (None, read_len + self.num_tokens, self.hidden_dim)
        )
        self.built = True

    def call(
        self,
        video_tokens,
        audio_tokens=None,
        memory=None,
        return_memory=False,
        training=None,
    ):
        x = self.fuse(video_tokens, audio_tokens)
        memory_embedding = ops.cast(self.memory_embedding, self.compute_dtype)
        if memory is None:
            memory = ops.zeros_like(x[:, 0, :1, :]) + ops.zeros_like(
                memory_embedding
            )

        def step(memory, inputs_t):
            tagged_memory = memory + memory_embedding
            read = self.read_learner(
                ops.concatenate([tagged_memory, inputs_t], axis=1)
            )
            output_t = self.transformer(read, training=training)
            memory = self.write_learner(
                ops.concatenate([tagged_memory, inputs_t, output_t], axis=1)
            )
            return memory, output_t

        # A loop over snippets (`keras.ops.scan`): each step reads the
        # memory the previous one wrote. One compiled step for any `T`,
        # where an unrolled loop compiles `T` copies.
        memory, outputs = scan_snippets(step, memory, ops.moveaxis(x, 1, 0))
        outputs = ops.moveaxis(outputs, 0, 1)
        if return_memory:
            return outputs, memory
        return outputs

    def compute_output_spec(
        self,
        video_tokens,
        audio_tokens=None,
        memory=None,
        return_memory=False,
        training=None,
    ):
        shape = self.compute_output_shape(
            video_tokens.shape,
            None if audio_tokens is None else audio_tokens.shape,
        )
        outputs = keras.KerasTensor(shape, dtype=self.compute_dtype)
        if return_memory:
            memory = keras.KerasTensor(
                (shape[0], self.memory_size, self.hidden_dim),
                dtype=self.compute_dtype,
            )
            return outputs, memory
        return outputs

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "memory_size": self.memory_size,
                "bottleneck_dim": self.bottleneck_dim,
            }
        )
        return config
