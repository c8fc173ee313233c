"""Run one benchmark job in this process and print its result.

    KERAS_BACKEND=jax python -m keras_mirasol.benchmark.worker '{"kind": ...}'

The runner starts one process per job, so jobs never share a backend,
threads or compiled functions, and one job's memory is gone before the
next starts. The result is the last line of stdout, one JSON object.
"""

import json
import sys

from keras_mirasol import host_memory


def run_job(job):
    """Run `job` (a dict with `kind`) and return its result dict."""
    kind = job["kind"]
    if kind.startswith("port_"):
        from keras_mirasol.benchmark import port

        if kind == "port_train":
            return port.time_port_train_step(
                frames=job["frames"],
                spectrogram_frames_per_clip=job["spectrogram_frames"],
                batch_size=job["batch_size"],
                steps=job["steps"],
                threads=job["threads"],
            )
        return port.time_port_generation(
            new_tokens=job["new_tokens"],
            frames=job["frames"],
            spectrogram_frames_per_clip=job["spectrogram_frames"],
            batch_size=job["batch_size"],
            steps=job["steps"],
            threads=job["threads"],
        )

    import keras

    from keras_mirasol.benchmark import measure
    from keras_mirasol.benchmark.configs import benchmark_config

    result = {"backend": keras.backend.backend()}
    if kind == "peak":
        # The float32 peak at the top level, every dtype's under `dtypes`.
        peaks = {
            dtype: measure.matmul_peak(dtype=dtype)
            for dtype in job.get("dtypes", ["float32"])
        }
        result.update(peaks.get("float32", {}))
        result["dtypes"] = peaks
        return result
    if kind == "dtype_probe":
        result.update(measure.dtype_slowdown(job["dtype"]))
        return result
    if kind == "pipeline":
        from keras_mirasol.benchmark.pipeline import pipeline_vs_model

        result.update(
            pipeline_vs_model(
                preset=job["config"],
                records=job.get("records"),
                batch_size=job["batch_size"],
                batches=job["steps"],
                questions_per_clip=job.get("questions_per_clip"),
            )
        )
        return result
    if kind == "scaling":
        from keras_mirasol.benchmark.configs import scaling_config

        config = scaling_config(job["config"], job["frames"], job["variant"])
        result.update(
            measure.time_train_step(
                config, batch_size=job["batch_size"], steps=job["steps"]
            )
        )
        result["num_snippets"] = config["num_snippets"]
        return result
    config = benchmark_config(
        job["config"],
        job.get("frames", 16),
        job.get("spectrogram_frames", 1024),
    )
    if kind == "train":
        result.update(
            measure.time_train_step(
                config,
                batch_size=job["batch_size"],
                steps=job["steps"],
                dtype=job.get("dtype"),
            )
        )
        return result
    if kind == "parts":
        result["parts"] = measure.time_parts(
            config, batch_size=job["batch_size"], steps=job["steps"]
        )
        return result
    if kind == "generate":
        result.update(
            measure.time_generation(
                config,
                new_tokens=job["new_tokens"],
                batch_size=job["batch_size"],
                steps=job["steps"],
            )
        )
        return result
    if kind == "stream":
        result.update(
            measure.time_stream(
                config,
                snippets=job["snippets"],
                batch_size=job["batch_size"],
            )
        )
        return result
    raise ValueError(f"Unknown benchmark job kind {kind!r}.")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    result = run_job(json.loads(argv[0]))
    result["host_memory"] = host_memory.describe()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
