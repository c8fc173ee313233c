"""Peak memory of a training step with and without `remat`, per clip length.

    python tools/remat_memory.py --frames 128 512

Each point runs in a fresh process (the peer-matched benchmark config at
that many frames, 64 spectrogram frames per video frame, batch 2, AdamW):
`keras_mirasol.benchmark.measure.time_train_step`, then the process's
peak resident memory in GiB. One JSON line per point, then a table. Peak
RSS includes the libraries that are loaded (TensorFlow and JAX).
"""

import argparse
import json
import resource
import subprocess
import sys


def run_point(frames, remat, batch_size, steps):
    """Run one point in this process; returns its result dict."""
    from keras_mirasol.benchmark import measure
    from keras_mirasol.benchmark.configs import peer_matched_config

    config = dict(peer_matched_config(frames, 64 * frames), remat=remat)
    result = measure.time_train_step(config, batch_size=batch_size, steps=steps)
    return {
        "frames": frames,
        "remat": remat,
        "step_s": result["median_s"],
        # ru_maxrss is in KiB on Linux.
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        / 2**20,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--point", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.point:
        frames, remat = json.loads(args.point)
        point = run_point(frames, remat, args.batch_size, args.steps)
        print(json.dumps(point), flush=True)
        return
    rows = []
    for frames in args.frames:
        for remat in (False, True):
            done = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--point",
                    json.dumps([frames, remat]),
                    "--batch-size",
                    str(args.batch_size),
                    "--steps",
                    str(args.steps),
                ],
                capture_output=True,
                text=True,
            )
            if done.returncode:
                sys.exit(done.stderr[-3000:])
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    print("| frames | remat | peak RSS GiB | step s |")
    print("| --- | --- | --- | --- |")
    for row in rows:
        print(
            f"| {row['frames']} | {row['remat']} | "
            f"{row['peak_rss_gib']:.2f} | {row['step_s']:.2f} |"
        )


if __name__ == "__main__":
    main()
