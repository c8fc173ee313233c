"""Process pools for media work (decoding, encoding) without TensorFlow.

Workers start with the "spawn" method: forking a process that already runs
TensorFlow or JAX threads is unsafe. `workers=1` runs in this process, with
no pool at all (also for scripts without a `__main__` guard).

`worker_pool` is a plain `ProcessPoolExecutor`: one failing job ends the
run. `isolated_pool` gives each job a worker of its own at a time, so that
a job that raises, crashes its worker or hangs is reported as a `Failure`
for that job alone (used to decode files that may be damaged).
"""

import collections
import concurrent.futures
import contextlib
import multiprocessing
import multiprocessing.connection
import os
import signal
import time


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


class Failure(collections.namedtuple("Failure", ["kind", "message"])):
    """Why a job of an `isolated_pool` gave no result.

    `kind` is "error" (the job raised; `message` is "Type: message"),
    "died" (its worker process died; `message` says how) or "timeout" (its
    worker ran longer than the pool's timeout and was killed; `message` is
    the timeout, e.g. "120 s").
    """


def _describe(error, limit=500):
    """`"Type: message"` of an exception, at most `limit` characters."""
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _exit_description(code):
    if code is None:
        return "exit status unknown"
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _serve(fn, conn):
    """Worker process: run `fn` on each job received until None or EOF.

    Sends ("ready", None) once started, then for each job ("ok", result)
    or ("error", "Type: message"). Ctrl-C is left to the parent, which
    stops its workers.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn.send(("ready", None))
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job is None:
            return
        try:
            reply = ("ok", fn(job))
        except Exception as error:
            reply = ("error", _describe(error))
        try:
            conn.send(reply)
        except Exception as error:  # a result that cannot be pickled
            conn.send(("error", _describe(error)))


class _Worker:
    """One worker process, its pipe, and the job it runs (index or None)."""

    def __init__(self, context, fn):
        self.conn, child = context.Pipe()
        self.process = context.Process(
            target=_serve, args=(fn, child), daemon=True
        )
        self.process.start()
        child.close()
        self.ready = False
        self.job = None
        self.deadline = None

    def stop(self, grace=5.0):
        """Ask the process to end (if idle), else end it; always reap it."""
        if self.job is None:
            try:
                self.conn.send(None)
            except OSError:
                pass
            self.process.join(grace)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(1.0)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()
        self.process.close()


class IsolatedPool:
    """Worker processes that run `fn` one job at a time each.

    Unlike a `ProcessPoolExecutor`, one bad job costs only itself: an
    exception becomes a `Failure("error", ...)`; a worker that dies
    (a crash in native code, `os._exit`, an OOM kill) becomes a
    `Failure("died", ...)` for exactly the job it ran; a job that runs
    longer than `timeout` seconds has its worker terminated (then killed)
    and becomes a `Failure("timeout", ...)`. A fresh worker replaces each
    lost one. Workers start with "spawn", so `fn` and the jobs must be
    picklable (a module-level function, or a `functools.partial` of one).

    Args:
        fn: callable. Runs in the workers, one job at a time.
        workers: int. Processes.
        timeout: float or None. Seconds a job may run (counted from when
            its worker, already started, receives it); None: no limit.
    """

    def __init__(self, fn, workers, timeout=None):
        self._fn = fn
        self._count = max(1, int(workers))
        self._timeout = timeout
        self._window = 4 * self._count
        self._context = multiprocessing.get_context("spawn")
        self._workers = []

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self):
        """Stop every worker and reap its process."""
        workers, self._workers = self._workers, []
        for worker in workers:
            worker.stop()

    def _discard(self, worker, grace=5.0):
        self._workers.remove(worker)
        worker.stop(grace)

    def imap(self, jobs):
        """Run `fn` on every job; yield results in the order of `jobs`.

        Args:
            jobs: iterable of picklable jobs.

        Yields:
            `(result, None)`, or `(None, Failure)` for a job that raised,
            killed its worker or timed out.

        Raises:
            RuntimeError: a worker process died before it could start
                (a broken installation, not a bad job).
        """
        pending = iter(enumerate(jobs))
        retry = collections.deque()
        results = {}
        next_index = pulled = 0
        exhausted = False
        try:
            while True:
                # Collect what is done and give idle workers new jobs
                # before each result is handed out, so that they work
                # while the caller uses it.
                self._collect(results, block=False)
                if retry or not exhausted:
                    while len(self._workers) < self._count:
                        self._workers.append(_Worker(self._context, self._fn))
                for worker in list(self._workers):
                    if not worker.ready or worker.job is not None:
                        continue
                    if retry:
                        index, job = retry.popleft()
                    elif exhausted or pulled >= next_index + self._window:
                        break
                    else:
                        try:
                            index, job = next(pending)
                        except StopIteration:
                            exhausted = True
                            break
                        pulled += 1
                    try:
                        worker.conn.send(job)
                    except OSError:  # it died while idle: not the job's fault
                        retry.appendleft((index, job))
                        self._discard(worker, grace=0)
                        continue
                    worker.job = index
                    if self._timeout is not None:
                        worker.deadline = time.monotonic() + self._timeout
                if next_index in results:
                    yield results.pop(next_index)
                    next_index += 1
                elif exhausted and not retry and next_index == pulled:
                    return
                else:
                    self._collect(results, block=True)
        finally:
            # Abandoned early: results of jobs still running are stale.
            for worker in list(self._workers):
                if worker.job is not None:
                    self._discard(worker, grace=0)

    def _collect(self, results, block):
        """Record finished jobs, dead workers and jobs past their deadline
        in `results`; if `block`, first wait until there is one."""
        deadlines = [w.deadline for w in self._workers if w.job is not None]
        deadlines = [d for d in deadlines if d is not None]
        wait = 0.0
        if block:
            wait = None
            if deadlines:
                wait = max(0.0, min(deadlines) - time.monotonic())
        handles = {}
        for worker in self._workers:
            handles[worker.conn] = worker
            handles[worker.process.sentinel] = worker
        ready = multiprocessing.connection.wait(list(handles), wait)
        for worker in {handles[handle] for handle in ready}:
            self._service(worker, results)
        now = time.monotonic()
        for worker in list(self._workers):
            if worker.job is not None and worker.deadline is not None:
                if now >= worker.deadline:
                    results[worker.job] = (
                        None,
                        Failure("timeout", f"{self._timeout:g} s"),
                    )
                    self._discard(worker, grace=0)

    def _service(self, worker, results):
        """Read what a worker sent, or handle its death."""
        try:
            message = worker.conn.recv() if worker.conn.poll() else None
        except (EOFError, OSError):
            message = None
        if message is not None:
            kind, value = message
            if kind == "ready":
                worker.ready = True
            elif worker.job is not None:
                if kind == "ok":
                    results[worker.job] = (value, None)
                else:
                    results[worker.job] = (None, Failure("error", value))
                worker.job = worker.deadline = None
            return
        worker.process.join(5.0)
        if worker.process.is_alive():
            return
        how = _exit_description(worker.process.exitcode)
        if worker.job is not None:
            results[worker.job] = (None, Failure("died", how))
        elif not worker.ready:
            self._discard(worker, grace=0)
            raise RuntimeError(f"A worker process failed to start ({how}).")
        self._discard(worker, grace=0)


class _InProcessRunner:
    """`IsolatedPool.imap` in this process: exceptions only, no timeout."""

    def __init__(self, fn):
        self._fn = fn

    def imap(self, jobs):
        for job in jobs:
            try:
                result = self._fn(job)
            except Exception as error:
                yield None, Failure("error", _describe(error))
            else:
                yield result, None


@contextlib.contextmanager
def isolated_pool(fn, workers=None, timeout=None):
    """An `IsolatedPool` of `fn` over `workers` processes.

    Args:
        fn: callable. A module-level function (or a `functools.partial`
            of one) run on each job.
        workers: int or None. Processes (default: all cores). 1 runs jobs
            in this process: an exception still costs only its job, but a
            crash ends the run and `timeout` cannot apply.
        timeout: float or None. Seconds a job may run before its worker
            is killed (only with 2 or more workers).

    Yields:
        An object with `imap(jobs)` (see `IsolatedPool.imap`).
    """
    workers = workers or os.cpu_count() or 1
    if workers == 1:
        yield _InProcessRunner(fn)
        return
    with IsolatedPool(fn, workers, timeout) as pool:
        yield pool
