"""Which weight goes to which device-mesh axis, and checking that it fits.

The rules of `layout_map()` (also `MirasolBackbone.get_layout_map`) shard
every kernel and embedding of a `MirasolBackbone` over a 2-D device mesh
`(batch, model)` the way keras-hub's Gemma does: Megatron-style tensor
parallelism over the `model` axis (attention heads, MLP width, embedding
width) and ZeRO-style sharding of the other dimension over the `batch`
axis. `check_layouts()` finds layout keys that match no variable and
sharded dimensions the mesh does not divide, from variable shapes that
`shape_only.shape_only_weights()` gets without allocating anything.
`keras_mirasol.distribution` builds distributions on top of this.
"""

import math
import re

import keras

# Which dimension of each weight kind goes to which mesh axis. "model" and
# "batch" stand for the mesh's model- and data-parallel axis names; None
# keeps a dimension whole. Paths look like
# `text_decoder/transformer_layer_0/cross_attention/query/kernel`.
_ATTENTION = r"(self_attention|self_attention_layer|cross_attention)"
LAYOUT_RULES = (
    # Attention: heads over "model" (kernels are [D, heads, head_dim] and
    # [heads, head_dim, D]), the width over "batch".
    (rf".*/{_ATTENTION}/(query|key|value)/kernel", ("batch", "model", None)),
    (rf".*/{_ATTENTION}/(query|key|value)/bias", ("model", None)),
    (rf".*/{_ATTENTION}/attention_output/kernel", ("model", None, "batch")),
    # MLP: the intermediate width over "model".
    (r".*/feedforward_intermediate_dense/kernel", ("batch", "model")),
    (r".*/feedforward_intermediate_dense/bias", ("model",)),
    (r".*/feedforward_output_dense/kernel", ("model", "batch")),
    # Token embedding [V, D] and its untied output projection [D, V]:
    # the width, so any vocabulary size shards.
    (r"text_decoder/token_embedding/embeddings", (None, "model")),
    (r"text_decoder/token_embedding/reverse_embeddings", ("model", None)),
    # Position, slot, modality, query and memory embeddings [n, D].
    (
        r".*(position_embedding/embeddings|slot_embedding|"
        r"modality_embedding|combiner_tokens|memory_embedding)",
        (None, "model"),
    ),
    # Patch embeddings: [t, p, p, 3, D] tubelets, [p, p, 1, D] audio.
    (
        r"video_encoder/tubelet_embedding/projection/kernel",
        (None, None, None, None, "model"),
    ),
    (r"audio_encoder/patch_embedding/kernel", (None, None, None, "model")),
    # Dense projections [D_in, D_out]: out over "model" for the first of
    # a pair, in over "model" for the second.
    (
        r"(combiner/(video|audio)_projection|latent_prediction/hidden|"
        r"combiner/(read|write)/score_hidden)/kernel",
        ("batch", "model"),
    ),
    (r"latent_prediction/output_projection/kernel", ("model", "batch")),
    (r"combiner/(read|write)/score_output/kernel", ("model", None)),
    # The MLP of the gated cross-attention blocks inserted into a
    # pretrained text decoder.
    (
        r"text_decoder/gated_cross_attention_\d+/mlp_up/kernel",
        ("batch", "model"),
    ),
    (r"text_decoder/gated_cross_attention_\d+/mlp_up/bias", ("model",)),
    (
        r"text_decoder/gated_cross_attention_\d+/mlp_down/kernel",
        ("model", "batch"),
    ),
)

# The keras-hub parts of `MirasolBackbone.from_components`. Their weights
# keep the paths the keras-hub backbone gave them when it was built (no
# `video_encoder/` prefix), so these keys name each family's own layers;
# the rules above already cover the attention and MLP of Whisper and of
# the Llama family (Qwen3, SmolLM3), whose layers keras-hub names like
# ours. Gemma3 as keras-hub's `GemmaBackbone.get_layout_map` shards it;
# keras-hub 0.32 has no layout map for Gemma3, VideoPrism or Whisper.
HUB_LAYOUT_RULES = (
    # Text decoders' token embedding [V, D], as keras-hub's Gemma, Llama
    # and Qwen layout maps shard it.
    (r"^token_embedding/embeddings", ("model", "batch")),
    # Gemma3: attention kernels [heads, D, head_dim], [heads, head_dim, D].
    (
        r"^decoder_block_\d+/attention/(query|key|value)/kernel",
        ("model", "batch", None),
    ),
    (
        r"^decoder_block_\d+/attention/attention_output/kernel",
        ("model", None, "batch"),
    ),
    (r"^decoder_block_\d+/ffw_gating(_2)?/kernel", ("batch", "model")),
    (r"^decoder_block_\d+/ffw_linear/kernel", ("model", "batch")),
    # Llama family: the gate of the gated MLP [D, I].
    (
        r"^transformer_layer_\d+/feedforward_gate_dense/kernel",
        ("batch", "model"),
    ),
    # VideoPrism: attention [D, heads, head_dim] and [heads, head_dim, D],
    # the MLP [D, I] then [I, D], the patch embedding [p*p*3, D].
    (
        r"^(spatial|temporal)_encoder/transformer_block_\d+/mha/"
        r"(query|key|value)/kernel",
        ("batch", "model", None),
    ),
    (
        r"^(spatial|temporal)_encoder/transformer_block_\d+/mha/"
        r"(query|key|value)/bias",
        ("model", None),
    ),
    (
        r"^(spatial|temporal)_encoder/transformer_block_\d+/mha/output/kernel",
        ("model", None, "batch"),
    ),
    (
        r"^(spatial|temporal)_encoder/transformer_block_\d+/mlp/dense_1/kernel",
        ("batch", "model"),
    ),
    (
        r"^(spatial|temporal)_encoder/transformer_block_\d+/mlp/dense_1/bias",
        ("model",),
    ),
    (
        r"^(spatial|temporal)_encoder/transformer_block_\d+/mlp/dense_2/kernel",
        ("model", "batch"),
    ),
    (
        r"^spatial_patching_and_embedding/patch_embedding/kernel",
        (None, "model"),
    ),
    # Whisper: its decoder's token embedding [51865, D] (Mirasol reads
    # only the encoder; 51865 has no factor 2, so the width is sharded),
    # and the convolutions of its front end [width, in, D].
    (
        r"^decoder_token_and_position_embedding/token_embedding/embeddings",
        (None, "model"),
    ),
    (
        r"^encoder_token_embedding_conv_layer_\d+/kernel",
        (None, None, "model"),
    ),
)


def layout_map(
    device_mesh,
    model_parallel_dim_name="model",
    data_parallel_dim_name="batch",
):
    """A `keras.distribution.LayoutMap` for `MirasolBackbone` weights.

    Every kernel and embedding of every component (video and audio
    encoders, Combiner, time-aligned model, latent head, text decoder),
    and of the keras-hub parts of `MirasolBackbone.from_components`
    (VideoPrism, Whisper, Gemma3, the Llama family), is sharded:
    attention heads, MLP widths and embedding widths over the
    model-parallel axis, the other matrix dimension over the
    data-parallel axis. Norms and the remaining biases stay replicated.
    The `model` axis size must divide every component's number of heads
    and widths; `check_layouts` says which weight does not.

    Args:
        device_mesh: `keras.distribution.DeviceMesh`.
        model_parallel_dim_name: str. Mesh axis that shards weights
            tensor-parallel. Defaults to `"model"`.
        data_parallel_dim_name: str. Mesh axis that splits the batch.
            Defaults to `"batch"`.

    Returns:
        `keras.distribution.LayoutMap`.

    Example:
    ```python
    mesh = keras.distribution.DeviceMesh(
        (2, 4), ("batch", "model"), keras.distribution.list_devices()
    )
    distribution = keras.distribution.ModelParallel(
        layout_map=MirasolBackbone.get_layout_map(mesh),
        batch_dim_name="batch",
    )
    with distribution.scope():
        lm = keras_mirasol.models.MirasolCausalLM.from_preset("mirasol_tiny")
    ```
    """
    if not isinstance(device_mesh, keras.distribution.DeviceMesh):
        raise ValueError(
            "`device_mesh` must be a keras.distribution.DeviceMesh, got "
            f"{type(device_mesh).__name__}."
        )
    for arg, name in (
        ("model_parallel_dim_name", model_parallel_dim_name),
        ("data_parallel_dim_name", data_parallel_dim_name),
    ):
        if name not in device_mesh.axis_names:
            raise ValueError(
                f"`{arg}`={name!r} is not an axis of the device mesh, whose "
                f"axes are {list(device_mesh.axis_names)}."
            )
    names = {"model": model_parallel_dim_name, "batch": data_parallel_dim_name}
    layouts = keras.distribution.LayoutMap(device_mesh)
    for key, axes in LAYOUT_RULES + HUB_LAYOUT_RULES:
        layouts[key] = tuple(names.get(axis) for axis in axes)
    return layouts


def unmatched_variables(layouts, shapes):
    """Paths in `shapes` that no key of `layouts` matches (replicated).

    Args:
        layouts: `keras.distribution.LayoutMap`.
        shapes: dict `{path: shape}` of the backbone's variables
            (`variable_shapes`).

    Returns:
        list of str: the variable paths that stay replicated.
    """
    return [path for path in shapes if layouts[path] is None]


def check_layouts(layouts, shapes):
    """Check a layout map against a backbone's variable shapes.

    Args:
        layouts: `keras.distribution.LayoutMap`.
        shapes: dict `{path: shape}` of the backbone's variables
            (`shape_only_weights`).

    Returns:
        `shapes`.

    Raises:
        ValueError: a key (other than the built-in ones of `layout_map`,
            some of which are for optional parts) matches no variable, or
            a sharded dimension is not divisible by the size of its mesh
            axis (naming the layer, the dimension and the mesh axis).
    """
    # The built-in keys cover optional parts (audio, TTM, untied output
    # embedding) that a given config may not have.
    builtin = {key for key, _ in LAYOUT_RULES + HUB_LAYOUT_RULES}
    unused = [
        key
        for key in layouts
        if key not in builtin
        and not any(re.fullmatch(key, path) for path in shapes)
    ]
    if unused:
        example = next(iter(shapes))
        raise ValueError(
            f"Layout map keys {unused} match no variable of this "
            f"MirasolBackbone. Keys are regexes over whole variable paths "
            f"such as {example!r}; list them with "
            "`[v.path for v in backbone.weights]`."
        )
    mesh = layouts.device_mesh
    sizes = dict(zip(mesh.axis_names, mesh.shape))
    problems = []
    for path, shape in shapes.items():
        layout = layouts[path]
        if layout is None:
            continue
        axes = tuple(layout.axes)
        if len(axes) != len(shape):
            problems.append(
                f"{path} has shape {shape} but its layout {axes} has "
                f"{len(axes)} entries"
            )
            continue
        for dim, (size, axis) in enumerate(zip(shape, axes)):
            if axis is None:
                continue
            group = axis if isinstance(axis, (tuple, list)) else (axis,)
            parts = math.prod(sizes[a] for a in group)
            if size % parts:
                layer, _, weight = path.rpartition("/")
                problems.append(
                    f"layer '{layer}' weight '{weight}' {shape}: dimension "
                    f"{dim} (size {size}) is sharded over mesh axis "
                    f"{axis!r} of size {parts}, which does not divide it"
                )
    if problems:
        raise ValueError(
            "The device mesh does not fit this model: "
            + "; ".join(problems)
            + ". Use a mesh whose 'model' axis divides every component's "
            "number of heads and widths, or change those sizes in the "
            "config."
        )
    return shapes
