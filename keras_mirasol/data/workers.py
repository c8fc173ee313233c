"""Process pools for media work (decoding, encoding) without TensorFlow.

Workers start with the "spawn" method: forking a process that already runs
TensorFlow or JAX threads is unsafe. `workers=1` runs in this process, with
no pool at all (also for scripts without a `__main__` guard).
"""

import concurrent.futures
import contextlib
import multiprocessing
import os


class _InProcess:
    def map(self, fn, jobs, chunksize=1):
        return map(fn, jobs)


@contextlib.contextmanager
def worker_pool(workers=None):
    """A `map(fn, jobs, chunksize)` provider over `workers` processes.

    Args:
        workers: int or None. Processes (default: all cores); 1 runs
            jobs in this process.
    """
    workers = workers or os.cpu_count() or 1
    if workers == 1:
        yield _InProcess()
        return
    with concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn")
    ) as pool:
        yield pool
