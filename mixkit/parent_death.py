"""Forked worker processes that exit when the process that forked them dies.

FFCV's ``DatasetWriter`` forks its workers (``multiprocessing.Process``); they wait on a queue that the parent
feeds, and hold their own end of its pipe, so when the parent is killed (SIGKILL, the OOM killer) no end of
input ever arrives and each worker sleeps forever with its memory (about 500 MB after ``mixkit convert``'s
kill test). Inside ``children_exit_with_parent()``, every process forked from this one asks Linux for
SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)`` through ctypes); where prctl is unavailable
(other systems, or a libc without it) a watchdog thread in the child polls ``os.getppid()`` and exits once
the parent is gone. Written by hand: multiprocessing has no such option, and the workers are created by a
third-party pool that takes no initializer.

Linux sends the signal when the *thread* that forked the child ends: fork inside the block from a thread
that outlives the children (the calling thread, as ffcv's writer does).
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator

__all__ = ["children_exit_with_parent", "exit_with_parent"]

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
WATCHDOG_PERIOD_S = 0.5

_depth = 0  # > 0 inside children_exit_with_parent(); copied into forked children
_forking_pid: int | None = None
armed: str | None = None  # in a child forked inside the block: 'prctl' or 'watchdog'


def _load_prctl():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        return libc.prctl
    except (OSError, AttributeError):
        return None


_prctl = _load_prctl()


def exit_with_parent(parent_pid: int) -> str:
    """Makes this process exit when ``parent_pid`` (its parent now) dies; returns the mechanism used,
    'prctl' or 'watchdog'. Exits at once if the parent has died already."""
    mechanism = "watchdog"
    if _prctl is not None and _prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0:
        mechanism = "prctl"
    if os.getppid() != parent_pid:  # the parent died before the death signal was armed
        os._exit(1)
    if mechanism == "watchdog":
        def watch() -> None:
            while os.getppid() == parent_pid:
                time.sleep(WATCHDOG_PERIOD_S)
            os._exit(1)

        threading.Thread(target=watch, name="mixkit-parent-watchdog", daemon=True).start()
    return mechanism


def _before_fork() -> None:
    global _forking_pid
    _forking_pid = os.getpid()


def _after_fork_in_child() -> None:
    global armed
    if _depth > 0 and _forking_pid is not None:
        armed = exit_with_parent(_forking_pid)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)


@contextlib.contextmanager
def children_exit_with_parent() -> Iterator[None]:
    """Within the block, every process forked from this one (``os.fork``, multiprocessing's 'fork' start
    method) exits when this process dies. Processes started by exec ('spawn', subprocess) are not covered."""
    global _depth
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
