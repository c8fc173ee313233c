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
time. `--xla-flags` sets `XLA_FLAGS` for the run, to compare compiler
options on the same model. Start Python with
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="peer-matched")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--spectrogram-frames", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--xla-flags", default=None)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    if args.xla_flags is not None:
        os.environ["XLA_FLAGS"] = args.xla_flags
    os.environ.setdefault("KERAS_BACKEND", "jax")

    import jax
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
    steps = 3
    with tempfile.TemporaryDirectory() as folder:
        with jax.profiler.trace(folder, create_perfetto_trace=True):
            lm.fit(
                x,
                y,
                sample_weight=sample_weight,
                batch_size=args.batch_size,
                epochs=steps,
                verbose=0,
            )
        by_kind, by_kernel = kernel_times(folder, steps)
    total = sum(by_kind.values())
    print(
        f"step {timing['median_s']:.3f} s (median of 5), kernels "
        f"{total:.0f} ms per step; XLA_FLAGS={os.environ.get('XLA_FLAGS')}"
    )
    for name, ms in by_kind.most_common(args.top):
        print(f"{ms:9.1f} ms {100 * ms / total:5.1f}%  {name}")
    print("largest kernels:")
    for name, ms in by_kernel.most_common(args.top):
        print(f"{ms:9.1f} ms  {name}")


if __name__ == "__main__":
    main()
