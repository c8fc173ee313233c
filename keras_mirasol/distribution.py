"""Layout maps and distributions for training across devices.

`layout_map()` (also `MirasolBackbone.get_layout_map`) shards every
kernel and embedding of a `MirasolBackbone` over a 2-D device mesh
`(batch, model)` the way keras-hub's Gemma does: Megatron-style tensor
parallelism over the `model` axis (attention heads, MLP width, embedding
width) and ZeRO-style sharding of the other dimension over the `batch`
axis. `make_distribution()` builds a `keras.distribution.DataParallel` or
`ModelParallel` from a mesh shape such as `"2x4"`; `check_layout_map()`
finds, before any weight is allocated, layout keys that match no variable
and sharded dimensions the mesh does not divide. `MirasolBackbone` runs
that check itself when it is built under a `ModelParallel` distribution.

`keras.distribution` runs on the JAX backend. On a TPU VM pod (one
process per host) call `keras.distribution.initialize()` first, on every
host, before building the distribution (`keras-mirasol train
--multi-host`).
"""

import contextlib
import math
import random
import re

import keras
import numpy as np

# Which dimension of each weight kind goes to which mesh axis. "model" and
# "batch" stand for the mesh's model- and data-parallel axis names; None
# keeps a dimension whole. Paths look like
# `text_decoder/transformer_layer_0/cross_attention/query/kernel`.
_ATTENTION = r"(self_attention|self_attention_layer|cross_attention)"
_LAYOUT = (
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
)


def layout_map(
    device_mesh,
    model_parallel_dim_name="model",
    data_parallel_dim_name="batch",
):
    """A `keras.distribution.LayoutMap` for `MirasolBackbone` weights.

    Every kernel and embedding of every component (video and audio
    encoders, Combiner, time-aligned model, latent head, text decoder) is
    sharded: attention heads, MLP widths and embedding widths over the
    model-parallel axis, the other matrix dimension over the
    data-parallel axis. Norms and the remaining biases stay replicated.
    The `model` axis size must divide every component's number of heads
    and widths; `check_layout_map` says which weight does not.

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
    for key, axes in _LAYOUT:
        layouts[key] = tuple(names.get(axis) for axis in axes)
    return layouts


def parse_mesh(mesh):
    """`"2x4"`, `"8"` or `(2, 4)` -> `(batch, model)` ints."""
    if isinstance(mesh, str):
        parts = mesh.lower().split("x")
        try:
            shape = tuple(int(p) for p in parts)
        except ValueError:
            shape = ()
    else:
        shape = tuple(mesh)
    if len(shape) == 1:
        shape = (shape[0], 1)
    if len(shape) != 2 or any(not isinstance(n, int) or n < 1 for n in shape):
        raise ValueError(
            f"A mesh is BATCHxMODEL with positive sizes, e.g. '2x4' (2-way "
            f"data parallel, 4-way model parallel); got {mesh!r}."
        )
    return shape


def _check_backend():
    if keras.backend.backend() != "jax":
        raise ValueError(
            "keras.distribution layouts need the JAX backend; this process "
            f"runs KERAS_BACKEND={keras.backend.backend()!r}. Set "
            "KERAS_BACKEND=jax before starting Python."
        )


def make_distribution(
    mesh=None,
    data_parallel=False,
    model_parallel_dim_name="model",
    data_parallel_dim_name="batch",
):
    """A `DataParallel` or `ModelParallel` distribution over this host.

    Args:
        mesh: `"BATCHxMODEL"` (e.g. `"2x4"`) or a tuple: a
            `ModelParallel` over a `(batch, model)` mesh with
            `layout_map()`. The sizes must multiply to at most the number
            of devices.
        data_parallel: bool. A `DataParallel` over every device instead.
        model_parallel_dim_name, data_parallel_dim_name: str. Mesh axis
            names.

    Returns:
        A `keras.distribution.Distribution`; use it as
        `keras.distribution.set_distribution(d)` or `with d.scope():`
        before building the model.
    """
    _check_backend()
    if data_parallel == (mesh is not None):
        raise ValueError(
            "Pass exactly one of `mesh` (model parallel, e.g. '2x4') and "
            "`data_parallel=True`."
        )
    devices = keras.distribution.list_devices()
    if data_parallel:
        return keras.distribution.DataParallel(devices=devices)
    batch, model = parse_mesh(mesh)
    if batch * model > len(devices):
        raise ValueError(
            f"The mesh {batch}x{model} needs {batch * model} devices but "
            f"this process sees {len(devices)} ({devices[0]}, ...). Use a "
            f"mesh whose sizes multiply to at most {len(devices)}; on a "
            "multi-host pod call keras.distribution.initialize() first "
            "(`--multi-host`) so every host's devices are visible."
        )
    device_mesh = keras.distribution.DeviceMesh(
        shape=(batch, model),
        axis_names=(data_parallel_dim_name, model_parallel_dim_name),
        devices=devices[: batch * model],
    )
    return keras.distribution.ModelParallel(
        layout_map=layout_map(
            device_mesh,
            model_parallel_dim_name=model_parallel_dim_name,
            data_parallel_dim_name=data_parallel_dim_name,
        ),
        batch_dim_name=data_parallel_dim_name,
    )


@contextlib.contextmanager
def _shape_only():
    """Create variables without values and without a distribution.

    Variables made in a `keras.StatelessScope` are registered for later
    initialisation; this keeps them out of that registry, so nothing is
    ever allocated for them. It also restores the Python and NumPy random
    states (unseeded initialisers and dropout layers draw their seeds from
    Python's `random` when they are created) and Keras' layer name
    counters, so a shape-only build before the real one changes neither
    the real model's initial weights nor its layer names.
    """
    from keras.src.backend.common import global_state

    registry = "uninitialized_variables"
    pending = list(global_state.get_global_attribute(registry) or [])
    uids = global_state.get_global_attribute("object_name_uids")
    uids = None if uids is None else uids.copy()
    python_state = random.getstate()
    numpy_state = np.random.get_state()
    outer = keras.distribution.distribution()
    keras.distribution.set_distribution(None)
    try:
        with keras.StatelessScope(initialize_variables=False):
            yield
    finally:
        keras.distribution.set_distribution(outer)
        global_state.set_global_attribute(registry, pending)
        global_state.set_global_attribute("object_name_uids", uids)
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def variable_shapes(config):
    """`{path: shape}` of `MirasolBackbone(**config)`, allocating nothing.

    Args:
        config: dict. A `MirasolBackbone` config (`get_config()`).
    """
    from keras_mirasol.models.backbone import MirasolBackbone

    config = {k: v for k, v in config.items() if k not in ("name",)}
    with _shape_only():
        backbone = MirasolBackbone(**config)
        return {v.path: tuple(v.shape) for v in backbone.weights}


def unmatched_variables(layouts, shapes):
    """Paths in `shapes` that no key of `layouts` matches (replicated)."""
    return [path for path in shapes if layouts[path] is None]


def check_layout_map(layouts, config):
    """Check a layout map against a backbone config before allocating.

    Args:
        layouts: `keras.distribution.LayoutMap`.
        config: dict. A `MirasolBackbone` config.

    Returns:
        `{path: shape}` of the backbone's variables.

    Raises:
        ValueError: a key (other than the built-in ones of `layout_map`,
            some of which are for optional parts) matches no variable, or
            a sharded dimension is not divisible by the size of its mesh
            axis (naming the layer, the dimension and the mesh axis).
    """
    shapes = variable_shapes(config)
    # The built-in keys cover optional parts (audio, TTM, untied output
    # embedding) that a given config may not have.
    builtin = {key for key, _ in _LAYOUT}
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
