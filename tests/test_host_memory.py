import os
import platform
import subprocess
import sys

import pytest

from keras_mirasol import host_memory
from keras_mirasol.benchmark import runner

TUNABLE = "glibc.malloc.hugetlb=1"
MADVISE = host_memory.transparent_huge_pages_mode() == "madvise"
_, GLIBC = platform.libc_ver()
HAS_TUNABLE = bool(GLIBC) and tuple(map(int, GLIBC.split(".")[:2])) >= (2, 35)
needs_madvise = pytest.mark.skipif(
    not (MADVISE and HAS_TUNABLE),
    reason="needs glibc >= 2.35 and transparent huge pages in `madvise` mode",
)


def _clean_environ(**extra):
    environ = {
        k: v
        for k, v in os.environ.items()
        if k not in ("GLIBC_TUNABLES", host_memory.SWITCH)
    }
    environ.update(extra)
    return environ


@pytest.mark.one_backend
def test_with_huge_pages_adds_the_tunable_and_keeps_the_others():
    assert host_memory.with_huge_pages({})["GLIBC_TUNABLES"] == TUNABLE
    mine = {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2", "A": "b"}
    environ = host_memory.with_huge_pages(mine)
    assert environ == {
        "GLIBC_TUNABLES": "glibc.malloc.arena_max=2:" + TUNABLE,
        "A": "b",
    }
    # A copy: the caller's mapping is untouched.
    assert mine["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2"
    assert host_memory.huge_pages_requested(environ)
    assert not host_memory.huge_pages_requested(mine)


@pytest.mark.one_backend
def test_an_explicit_choice_wins():
    # The user's own hugetlb value, even 0, and the switch are kept.
    off = {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}
    assert host_memory.with_huge_pages(off) == off
    assert not host_memory.huge_pages_requested(off)
    two = {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=2"}
    assert host_memory.huge_pages_requested(two)
    switched_off = {host_memory.SWITCH: "0"}
    assert host_memory.with_huge_pages(switched_off) == switched_off


@pytest.mark.one_backend
def test_transparent_huge_pages_mode_reads_the_bracketed_mode(tmp_path):
    path = tmp_path / "enabled"
    path.write_text("always [madvise] never\n")
    assert host_memory.transparent_huge_pages_mode(str(path)) == "madvise"
    path.write_text("[always] madvise never\n")
    assert host_memory.transparent_huge_pages_mode(str(path)) == "always"
    assert host_memory.transparent_huge_pages_mode(str(tmp_path / "x")) is None


@pytest.mark.one_backend
def test_exec_restarts_only_where_huge_pages_help(monkeypatch):
    calls = []
    monkeypatch.setattr(os, "execve", lambda *a: calls.append(a))
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(os, "environ", {"KERAS_BACKEND": "jax"})
    argv = ["python", "-X", "utf8", "-m", "keras_mirasol.cli", "info"]
    for mode in ("always", "never", None):
        host_memory.exec_with_huge_pages(argv, thp_mode=mode or "none")
    assert calls == []
    host_memory.exec_with_huge_pages(argv, thp_mode="madvise")
    [(executable, new_argv, environ)] = calls
    # The same interpreter, flags and arguments; the tunable added.
    assert executable == sys.executable
    assert new_argv == [sys.executable, *argv[1:]]
    assert environ == {"KERAS_BACKEND": "jax", "GLIBC_TUNABLES": TUNABLE}
    # Started with it already (or switched off): no second restart.
    for environ in ({"GLIBC_TUNABLES": TUNABLE}, {host_memory.SWITCH: "0"}):
        monkeypatch.setattr(os, "environ", environ)
        host_memory.exec_with_huge_pages(argv, thp_mode="madvise")
    assert len(calls) == 1


_FAULTS = """
import ctypes, resource
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
size = 256 * 2**20
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    # What XLA does with a step's temporary buffer.
    buffer = libc.malloc(size)
    libc.memset(buffer, 1, size)
    libc.free(buffer)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@needs_madvise
@pytest.mark.one_backend
def test_huge_pages_cut_the_page_faults_of_large_buffers():
    """The mechanism itself: a freed and reallocated 256 MiB buffer is
    faulted in again each time, 4 KiB at a time without the tunable."""

    def faults(environ):
        out = subprocess.run(
            [sys.executable, "-c", _FAULTS],
            env=environ,
            capture_output=True,
            text=True,
            check=True,
        )
        return int(out.stdout)

    plain = faults(_clean_environ())
    huge = faults(host_memory.with_huge_pages(_clean_environ()))
    # 4 x 65,536 pages of 4 KiB; with 2 MiB pages, 512 times fewer.
    assert plain > 4 * 60_000
    assert huge * 10 < plain


@needs_madvise
@pytest.mark.one_backend
def test_the_command_restarts_itself_with_huge_pages():
    def info(environ):
        out = subprocess.run(
            [sys.executable, "-m", "keras_mirasol.cli", "--backend", "jax"]
            + ["info"],
            env=environ,
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout

    # Its arguments survive the restart: --backend wins over the variable.
    on = info(_clean_environ(KERAS_BACKEND="tensorflow"))
    assert "backend: jax" in on
    assert f"host huge pages: on ({TUNABLE}" in on
    off = info(_clean_environ(**{host_memory.SWITCH: "0"}))
    assert "host huge pages: off" in off


@pytest.mark.one_backend
def test_benchmark_workers_start_with_huge_pages(tmp_path):
    script = tmp_path / "environment.py"
    script.write_text(
        "import json, os\n"
        "print(json.dumps({'tunables': os.environ.get('GLIBC_TUNABLES')}))\n"
    )
    command = [sys.executable, str(script)]
    result = runner.run_job({"kind": "peak"}, command=command)
    assert TUNABLE in result["tunables"].split(":")
    summary = runner.summarize(
        [
            dict(
                section="peak",
                backend="jax",
                job={"kind": "peak"},
                result={"gflops": 1.0, "host_memory": "host huge pages: on"},
            )
        ]
    )
    assert "Host huge pages: on" in runner.format_summary(summary)
