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

import keras

from keras_mirasol.models.backbone import MirasolBackbone
from keras_mirasol.models.layouts import check_layouts
from keras_mirasol.models.layouts import layout_map
from keras_mirasol.models.layouts import unmatched_variables
from keras_mirasol.models.shape_only import shape_only_weights

__all__ = [
    "check_layout_map",
    "layout_map",
    "make_distribution",
    "parse_mesh",
    "unmatched_variables",
    "variable_shapes",
]


def parse_mesh(mesh):
    """`"2x4"`, `"8"` or `(2, 4)` -> `(batch, model)` ints.

    Args:
        mesh: str or tuple of int. `"BATCHxMODEL"` (e.g. `"2x4"`), one
            size (`"8"` or `(8,)`: data parallel only, model size 1) or a
            `(batch, model)` tuple.

    Returns:
        `(batch, model)`, two positive ints.

    Raises:
        ValueError: `mesh` is not of that form.
    """
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
            of devices. Pass either `mesh` or `data_parallel=True`.
            Defaults to `None`.
        data_parallel: bool. A `DataParallel` over every device instead.
            Defaults to `False`.
        model_parallel_dim_name: str. Name of the mesh axis that shards
            weights tensor-parallel. Defaults to `"model"`.
        data_parallel_dim_name: str. Name of the mesh axis that splits the
            batch. Defaults to `"batch"`.

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


def variable_shapes(config):
    """`{path: shape}` of `MirasolBackbone(**config)`, allocating nothing.

    Args:
        config: dict. A `MirasolBackbone` config (`get_config()`).
    """
    config = {k: v for k, v in config.items() if k not in ("name",)}
    return shape_only_weights(lambda: MirasolBackbone(**config))


def check_layout_map(layouts, config):
    """Check a layout map against a backbone config before allocating.

    `MirasolBackbone` runs this check itself when it is built under a
    `ModelParallel` distribution.

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
    return check_layouts(layouts, variable_shapes(config))
