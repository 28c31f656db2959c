"""Run Python calls inside a network namespace: one worker thread joins the namespace
(setns(2) changes only the calling thread's namespace), and every socket it opens lives there.
The lab's own process stays in the root namespace and still talks to a control plane that
only exists on the lab's underlay."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
CLONE_NEWNET = 0x40000000


_libc = ctypes.CDLL(None, use_errno=True)


def setns(fd: int, what: str) -> None:
    """Move the calling thread into the network namespace open as `fd` (`what` names it)."""
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns into network namespace {what}: {os.strerror(err)}")


def join_netns(netns: str) -> None:
    """Move the calling thread into the named network namespace (/run/netns/NAME)."""
    fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        setns(fd, netns)
    finally:
        os.close(fd)


class NetnsThread:
    """`run(fn, *args)` calls fn in a thread inside `netns` (None: in this thread, here)."""

    def __init__(self, netns: str | None):
        self.netns = netns
        self._pool: ThreadPoolExecutor | None = None

    def run(self, fn: Callable[..., T], *args, **kwargs) -> T:
        if self.netns is None:
            return fn(*args, **kwargs)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"netns-{self.netns}",
                                            initializer=join_netns, initargs=(self.netns,))
        return self._pool.submit(fn, *args, **kwargs).result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None
