"""Huge pages for the buffers XLA allocates on a CPU host, at every step.

On a CPU, XLA allocates a step's temporary buffers with `malloc` and frees
them when the step ends. glibc serves a buffer larger than 32 MiB with a
fresh `mmap` and returns it with `munmap`, so at every step the kernel
faults in and zeroes each 4 KiB page of those buffers again, and the step
runs with cold TLBs. That cost grows with the step's memory: for the
peer-matched training step (`keras-mirasol bench --scaling`) it was 1.9 GB
faulted per step at 128 frames and 7.9 GB at 512, and it made the step
time grow 5.0x from 128 to 512 frames for 4.0x the work.

glibc's `glibc.malloc.hugetlb=1` tunable makes `malloc` ask the kernel for
transparent huge pages (2 MiB) for such buffers (`madvise`): the faults
fell over 100-fold and the same two steps grew 4.0x. glibc reads the tunable
when a process starts, so it has to be in the environment before Python
starts:

- the `keras-mirasol` command restarts itself with it once
  (`exec_with_huge_pages`), and the benchmark's worker processes start
  with it (`with_huge_pages`);
- in your own scripts, start Python with
  `GLIBC_TUNABLES=glibc.malloc.hugetlb=1`.

It changes nothing where it cannot help: a system whose transparent huge
pages are `always` (already on) or `never` (off), another C library, or a
glibc older than 2.35 (which ignores the tunable). `MIRASOL_HUGE_PAGES=0`
turns it off, and a `hugetlb` value already in `GLIBC_TUNABLES` wins.
"""

import os
import sys

TUNABLE = "glibc.malloc.hugetlb"
# Set to "0" to keep the allocator as it is.
SWITCH = "MIRASOL_HUGE_PAGES"
_THP_MODE = "/sys/kernel/mm/transparent_hugepage/enabled"


def transparent_huge_pages_mode(path=_THP_MODE):
    """The kernel's transparent huge page mode, or None off Linux.

    Args:
        path: str. The sysfs file. Defaults to the kernel's.

    Returns:
        `"always"`, `"madvise"`, `"never"` or None (no such file).
    """
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    # The file lists every mode and brackets the current one.
    start, end = text.find("["), text.find("]")
    if start < 0 or end < start:
        return None
    return text[start + 1 : end]


def _tunables(environ):
    value = environ.get("GLIBC_TUNABLES", "")
    return [item for item in value.split(":") if item]


def huge_pages_requested(environ=None):
    """Whether `environ` asks glibc for huge pages (`hugetlb` >= 1).

    Args:
        environ: mapping. Defaults to `None`, which means `os.environ`
            (for this process: how it was started).

    Returns:
        bool.
    """
    environ = os.environ if environ is None else environ
    for item in _tunables(environ):
        name, _, value = item.partition("=")
        if name == TUNABLE:
            return value.strip() not in ("", "0")
    return False


def with_huge_pages(environ=None):
    """A copy of `environ` whose processes get huge pages from `malloc`.

    Adds `glibc.malloc.hugetlb=1` to `GLIBC_TUNABLES`, keeping the
    tunables already there. Returns an unchanged copy when `environ`
    already sets `glibc.malloc.hugetlb` (to any value) or sets
    `MIRASOL_HUGE_PAGES=0`.

    Args:
        environ: mapping. Defaults to `None`, which means `os.environ`.

    Returns:
        dict.

    Example:
    ```python
    env = with_huge_pages({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
    env["GLIBC_TUNABLES"]  # 'glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1'
    ```
    """
    environ = dict(os.environ if environ is None else environ)
    if environ.get(SWITCH, "1").strip() == "0":
        return environ
    tunables = _tunables(environ)
    if any(item.partition("=")[0] == TUNABLE for item in tunables):
        return environ
    environ["GLIBC_TUNABLES"] = ":".join(tunables + [f"{TUNABLE}=1"])
    return environ


def exec_with_huge_pages(argv=None, thp_mode=None):
    """Restart this process with huge pages for `malloc`, where that helps.

    Replaces the process (`os.execve`) with the same interpreter, flags
    and arguments and `with_huge_pages(os.environ)`, on Linux when the
    kernel's transparent huge pages are `madvise` (the mode in which only
    programs that ask get them) and the environment does not already
    decide (`huge_pages_requested`, a `hugetlb` tunable, or
    `MIRASOL_HUGE_PAGES=0`). Otherwise returns and changes nothing. Call
    it first thing in a program's entry point, before any thread starts.

    Args:
        argv: list of str. The command line to run again. Defaults to
            `None`, which means `sys.orig_argv` (this process's own).
        thp_mode: str or None. Defaults to `None`, which means
            `transparent_huge_pages_mode()`.

    Returns:
        None, when the process is not restarted.
    """
    if not sys.platform.startswith("linux"):
        return
    environ = with_huge_pages(os.environ)
    if environ == dict(os.environ):
        return
    if (thp_mode or transparent_huge_pages_mode()) != "madvise":
        return
    argv = list(sys.orig_argv if argv is None else argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *argv[1:]], environ)


def describe(environ=None, thp_mode=None):
    """One line saying whether this process's buffers get huge pages.

    Args:
        environ: mapping. Defaults to `None`, which means `os.environ`.
        thp_mode: str or None. Defaults to `None`, which means
            `transparent_huge_pages_mode()`.

    Returns:
        str.
    """
    mode = thp_mode or transparent_huge_pages_mode()
    requested = huge_pages_requested(environ)
    if mode is None:
        return "host huge pages: unknown (no transparent huge page setting)"
    if mode == "always":
        return "host huge pages: on (transparent huge pages: always)"
    if mode == "never":
        return "host huge pages: off (transparent huge pages: never)"
    if requested:
        return (
            f"host huge pages: on ({TUNABLE}=1, transparent huge pages: {mode})"
        )
    return (
        f"host huge pages: off (transparent huge pages: {mode}; start "
        f"with GLIBC_TUNABLES={TUNABLE}=1)"
    )
