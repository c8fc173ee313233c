"""Where a JAX training step's time goes, by XLA kernel kind.

    KERAS_BACKEND=jax python tools/profile_step.py --frames 64 \\
        --spectrogram-frames 4096

Builds the peer-matched model of `keras-mirasol bench` (or a preset with
`--config`), compiles its training step with `fit`, records three more
steps with `jax.profiler`, and prints the kernels' time per step grouped
by kind (`ynn_fusion`: the matrix products and what XLA fused into them;
`copy_bitcast_fusion`: layout copies with the elementwise work fused into
them; ...), with their share, then the largest single kernels. The
kernels run on XLA's threads, so their sum can exceed the step's wall
time. `--by-layer` also prints the time by pass (forward, backward, and
`other`: the optimizer's update) and part of the model
(`mirasol_backbone/video_encoder`, ...; `--depth` scopes), and
the largest kernels with their shapes and the operations they come from:
each kernel is named after an instruction of the compiled step, whose
metadata names the Keras layer it was traced in. `--xla-flags` sets
`XLA_FLAGS` for the run, to compare compiler options on the same model.
Start Python with
`GLIBC_TUNABLES=glibc.malloc.hugetlb=1` as `keras-mirasol` does
(`keras_mirasol.host_memory`). Run nothing else meanwhile.
"""

import argparse
import collections
import glob
import gzip
import json
import os
import re
import tempfile


def kernel_times(trace_folder, steps):
    """Milliseconds per step of each XLA kernel in a `jax.profiler` trace.

    Args:
        trace_folder: str. The folder `jax.profiler.trace` wrote.
        steps: int. Steps the trace holds.

    Returns:
        `(by_kind, by_kernel)`: two `collections.Counter` of milliseconds
        per step, by kernel kind (the name without its `.N` suffix) and by
        kernel.
    """
    path = sorted(
        glob.glob(f"{trace_folder}/**/*.trace.json.gz", recursive=True)
    )[-1]
    with gzip.open(path) as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    by_kind, by_kernel = collections.Counter(), collections.Counter()
    for event in events:
        name = event.get("name", "")
        # Kernels carry their HLO names, in lower case; Python frames
        # (`$...`) and the runtime's spans (`PjitFunction(...)`,
        # `ThunkExecutor::Execute`, `DevicePut`, ...) are not kernels.
        if event.get("ph") != "X" or not name[:1].islower():
            continue
        milliseconds = event.get("dur", 0) / 1000 / steps
        by_kind[re.sub(r"\.\d+$", "", name)] += milliseconds
        by_kernel[name] += milliseconds
    return by_kind, by_kernel


_INSTRUCTION = re.compile(r"^\s+(?:ROOT )?%([\w.\-]+) = (\S+) ")
_OP_NAME = re.compile(r'op_name="([^"]*)"')


def instruction_origins(hlo_text):
    """Each instruction's shape and the operation it was traced from.

    Args:
        hlo_text: str. A compiled program's text
            (`jax.jit(...).lower(...).compile().as_text()`).

    Returns:
        dict: instruction name to `(shape, op_name)`; `op_name` is the
        metadata's (e.g. `jit(train_step)/transpose(jvp(model))/dense/
        dot_general`), or `""` where the instruction has none (copies XLA
        adds, constants).
    """
    origins = {}
    for line in hlo_text.splitlines():
        match = _INSTRUCTION.match(line)
        if match is None:
            continue
        op_name = _OP_NAME.search(line)
        origins[match.group(1)] = (
            match.group(2),
            op_name.group(1) if op_name else "",
        )
    return origins


_TRACED = re.compile(r"^(transpose\()?jvp\(([^()]*)\)+$")


def pass_and_part(op_name, depth=2):
    """`(pass, part)` of an operation of a traced Keras training step.

    Args:
        op_name: str. An instruction's `op_name` metadata, e.g.
            `jit(train_step)/transpose(jvp(mirasol_backbone))/combiner/
            transformer/dot_general`.
        depth: int. How many scopes name the part. Defaults to `2`.

    Returns:
        `(pass, part)`: pass is `"forward"` (under `jvp(...)`),
        `"backward"` (under `transpose(jvp(...))`), `"other"` (outside
        the model's call: the optimizer's update, `adam_w`, the loss's
        reduction) or `"unknown"` (no metadata: copies XLA adds, and
        kernels of programs other than the step). The part is the
        operation's first `depth` scopes (`mirasol_backbone/combiner`; a
        functional model's layer, `dense`), without the operation itself.
    """
    path = [step for step in op_name.split("/") if step]
    if path and path[0].startswith("jit("):
        path = path[1:]
    if not path:
        return "unknown", ""
    traced = _TRACED.match(path[0])
    if traced is None:
        return "other", "/".join(path[:-1][:depth])
    kind = "backward" if traced.group(1) else "forward"
    scopes = [traced.group(2)] + [step.rstrip(")") for step in path[1:-1]]
    return kind, "/".join(scopes[:depth])


def by_layer(by_kernel, origins, depth=2):
    """Milliseconds per step by `(pass, part)`.

    Args:
        by_kernel: `collections.Counter` of milliseconds per kernel
            (`kernel_times`).
        origins: dict from `instruction_origins`.
        depth: int. As in `pass_and_part`. Defaults to `2`.

    Returns:
        `collections.Counter` keyed by `(pass, part)`.
    """
    grouped = collections.Counter()
    for kernel, ms in by_kernel.items():
        # A kernel split across threads also reports its end part.
        name = kernel.removeprefix("end: ")
        _, op_name = origins.get(name, ("", ""))
        grouped[pass_and_part(op_name, depth)] += ms
    return grouped


def fit_kernel_times(model, x, y, sample_weight, batch_size, steps=3):
    """`kernel_times` of `steps` steps of `model.fit`, one batch each.

    Args:
        model: a compiled Keras model (JAX backend) whose training step
            is compiled already (one `fit` step before).
        x, y, sample_weight: one batch.
        batch_size: int. The batch's size.
        steps: int. Steps recorded. Defaults to `3`.

    Returns:
        `(by_kind, by_kernel)` as `kernel_times`.
    """
    import jax

    with tempfile.TemporaryDirectory() as folder:
        with jax.profiler.trace(folder, create_perfetto_trace=True):
            model.fit(
                x,
                y,
                sample_weight=sample_weight,
                batch_size=batch_size,
                epochs=steps,
                verbose=0,
            )
        return kernel_times(folder, steps)


def compiled_train_step_text(lm, batch):
    """The compiled program of `lm`'s JAX training step, as text.

    Compiled as Keras' `fit` compiles it (the state donated), so its
    instruction names are those of the kernels `fit` runs.
    """
    import jax

    from keras_mirasol.benchmark import measure

    state, data = measure.jax_train_step_arguments(lm, batch)
    step = jax.jit(lm.train_step, donate_argnums=0)
    return step.lower(state, data).compile().as_text()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="peer-matched")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--spectrogram-frames", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--xla-flags", default=None)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument(
        "--by-layer",
        action="store_true",
        help="Also the time by pass and part, and the largest kernels' "
        "shapes and operations.",
    )
    parser.add_argument(
        "--depth",
        type=int,
        default=2,
        help="Scopes that name a part with --by-layer (2: "
        "mirasol_backbone/combiner; 3: mirasol_backbone/combiner/"
        "transformer).",
    )
    args = parser.parse_args()
    if args.xla_flags is not None:
        os.environ["XLA_FLAGS"] = args.xla_flags
    os.environ.setdefault("KERAS_BACKEND", "jax")

    import keras

    from keras_mirasol.benchmark import configs
    from keras_mirasol.benchmark import measure

    if keras.backend.backend() != "jax":
        raise SystemExit("Run it with KERAS_BACKEND=jax.")
    config = configs.benchmark_config(
        args.config, args.frames, args.spectrogram_frames
    )
    keras.utils.set_random_seed(0)
    lm = measure.build_lm(config)
    x, y, sample_weight = measure.random_batch(config, args.batch_size)
    timing = measure.time_fit_steps(lm, (x, y, sample_weight), steps=5)
    by_kind, by_kernel = fit_kernel_times(
        lm, x, y, sample_weight, args.batch_size
    )
    total = sum(by_kind.values())
    print(
        f"step {timing['median_s']:.3f} s (median of 5), kernels "
        f"{total:.0f} ms per step; XLA_FLAGS={os.environ.get('XLA_FLAGS')}"
    )
    for name, ms in by_kind.most_common(args.top):
        print(f"{ms:9.1f} ms {100 * ms / total:5.1f}%  {name}")
    if not args.by_layer:
        print("largest kernels:")
        for name, ms in by_kernel.most_common(args.top):
            print(f"{ms:9.1f} ms  {name}")
        return
    origins = instruction_origins(
        compiled_train_step_text(lm, (x, y, sample_weight))
    )
    print("by pass and part:")
    grouped = by_layer(by_kernel, origins, args.depth)
    for (kind, part), ms in grouped.most_common():
        print(f"{ms:9.1f} ms {100 * ms / total:5.1f}%  {kind} {part}")
    print("largest kernels (shape, operation):")
    for name, ms in by_kernel.most_common(args.top):
        shape, op_name = origins.get(name.removeprefix("end: "), ("", ""))
        print(f"{ms:9.1f} ms  {name}  {shape}  {op_name}")


if __name__ == "__main__":
    main()
