"""
Title: Training Mirasol across devices with keras.distribution
Author: keras_mirasol developers
Date created: 2026/12/01
Last modified: 2026/12/01
Description: Data parallel and model parallel training on a device mesh.
Accelerator: None
"""

"""
## Setup

`keras.distribution` places a model's weights and each batch over the
devices of a mesh. It runs on the JAX backend. This guide simulates eight
devices on the CPU so it runs anywhere; on a TPU VM or a multi-GPU host,
drop the `XLA_FLAGS` line and the same code uses the real devices. Both
variables must be set before JAX loads.
"""

import os  # noqa: E402

os.environ["KERAS_BACKEND"] = "jax"
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

# TensorFlow's C++ log lines off (they must be set before it loads).
from keras_mirasol.logs import quiet_native_logs  # noqa: E402

quiet_native_logs()

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_mirasol.models import MirasolBackbone  # noqa: E402
from keras_mirasol.models import MirasolCausalLM  # noqa: E402

devices = keras.distribution.list_devices()
print(len(devices), "devices:", devices[0], "...")

"""
## A batch to train on

Random clips of the `mirasol_tiny` shape (16 frames of 32x32, 2 s of
16 kHz audio) with a question and an answer each. The task's preprocessor
tokenizes the text inside `fit`.
"""

rng = np.random.default_rng(0)
batch = {
    "video": rng.uniform(size=(8, 16, 32, 32, 3)).astype("float32"),
    "audio": rng.normal(size=(8, 32000)).astype("float32") * 0.1,
    "prompts": ["what colour is shown first?"] * 8,
    "responses": ["red", "green", "blue", "cyan"] * 2,
}


def build_task():
    keras.utils.set_random_seed(0)  # the same initial weights every time
    lm = MirasolCausalLM.from_preset("mirasol_tiny")
    lm.compile(optimizer=keras.optimizers.AdamW(1e-3))
    return lm


"""
## One device

For reference: the loss of the untrained model on the batch, then one
training step.
"""

lm = build_task()
reference = lm.evaluate(batch, batch_size=8, verbose=0, return_dict=True)
print("one device, loss before training:", round(reference["loss"], 4))

"""
## Data parallel

`DataParallel` keeps a full copy of the weights on every device and splits
each batch over them: a batch of 8 questions gives each device one. Build
the model inside the distribution's scope so its weights are placed there.
"""

data_parallel = keras.distribution.DataParallel(devices=devices)
with data_parallel.scope():
    lm = build_task()
    result = lm.evaluate(batch, batch_size=8, verbose=0, return_dict=True)
print("data parallel, loss before training:", round(result["loss"], 4))
np.testing.assert_allclose(result["loss"], reference["loss"], rtol=1e-4)

"""
The loss equals the one-device loss (up to float rounding): the same
weights see the same batch, only split differently. `fit`, `predict` and
`generate` run inside the scope the same way.

## Model parallel

When the weights do not fit one device, shard them. A `DeviceMesh` names
two axes: `batch` splits the batch, `model` splits the weight matrices.
`MirasolBackbone.get_layout_map(mesh)` says, for every kernel and
embedding of every part (encoders, Combiner, time-aligned model, text
decoder), which dimension goes over which axis: attention heads and MLP
widths over `model`, the other dimension over `batch`, as keras-hub's
Gemma does. Norms and biases stay replicated.
"""

mesh = keras.distribution.DeviceMesh(
    shape=(2, 4), axis_names=("batch", "model"), devices=devices
)
layout_map = MirasolBackbone.get_layout_map(mesh)
for key in list(layout_map.keys())[:4]:
    print(f"{key:60s} {layout_map[key].axes}")

model_parallel = keras.distribution.ModelParallel(
    layout_map=layout_map, batch_dim_name="batch"
)
with model_parallel.scope():
    lm = build_task()
    result = lm.evaluate(batch, batch_size=8, verbose=0, return_dict=True)
    history = lm.fit(batch, batch_size=8, epochs=2, verbose=0)
print("model parallel, loss before training:", round(result["loss"], 4))
np.testing.assert_allclose(result["loss"], reference["loss"], rtol=1e-4)
print("losses of two steps:", [round(v, 4) for v in history.history["loss"]])

"""
Each weight now lives in pieces. A query kernel of the text decoder,
`[width, heads, head_dim]`, is split over both axes of the mesh:
"""

path = "text_decoder/transformer_layer_0/self_attention/query/kernel"
kernel = next(w for w in lm.backbone.weights if w.path == path)
print(kernel.path, tuple(kernel.shape), kernel.value.sharding.spec)

"""
Before allocating anything, the backbone checks the layout map against its
own shapes: a mesh axis that does not divide a sharded dimension is an
error that names the layer, the dimension and the axis, rather than a
crash deep in the compiler. An 8-way `model` axis, for instance, does not
divide `mirasol_tiny`'s 4 attention heads:
"""

wide = keras.distribution.DeviceMesh(
    shape=(1, 8), axis_names=("batch", "model"), devices=devices
)
try:
    with keras.distribution.ModelParallel(
        layout_map=MirasolBackbone.get_layout_map(wide),
        batch_dim_name="batch",
    ).scope():
        MirasolBackbone.from_preset("mirasol_tiny")
except ValueError as error:
    print("ValueError:", str(error)[:200])

"""
## From the command line

`keras-mirasol train` builds the same distributions before the model:

```bash
keras-mirasol train --train records/train --out runs/dp --data-parallel
keras-mirasol train --train records/train --out runs/mp --mesh 2x4
```

`--batch-size` counts questions and must split evenly over the `batch`
axis. In Python, `keras_mirasol.distribution.make_distribution(mesh="2x4")`
or `make_distribution(data_parallel=True)` returns what the flags use, and
`keras_mirasol.training.train(..., distribution=...)` trains under it.

## On real hardware

- **A multi-GPU host**: nothing changes. `list_devices()` returns the GPUs;
  pick a mesh whose sizes multiply to their number (`--mesh 2x4` on 8
  GPUs, `--data-parallel` on any number).
- **A TPU VM pod slice** (one process per host): run the same command on
  every host with `--multi-host`. It calls
  `keras.distribution.initialize()` first, which reads the pod's
  coordinator from the environment, so `list_devices()` returns every chip
  of the slice and Keras shards the tf.data pipeline per host. In Python,
  call `keras.distribution.initialize()` before building the mesh.
- **A GPU cluster**: call
  `keras.distribution.initialize(job_addresses, num_processes, process_id)`
  yourself on every process, then proceed as on one host.

A trained run saves ordinary weights: it loads on one device (or another
mesh) with `MirasolCausalLM.from_preset(run_folder)`.
"""
