"""Where a reconcile's blocking calls run (the Kubernetes client's reads and writes): on asyncio's worker threads,
or, for an urgent reconcile, on threads of its own.

A reconcile is urgent when a user asked for something (a command, a spec change), when the router reported (a
confirmation or a guard trip), or when a reconcile held back for its own last write may go on (wakeups). Routine
reconciles (ticks, owned objects, pods) of many rollouts tend to fall in the same second (their analysis rounds
do), and their calls queue for asyncio's few worker threads: an urgent reconcile's calls never wait in that
queue. Only the threads are set apart: a reconcile waiting on the network (Prometheus) holds none, so a slow
Prometheus delays no other reconcile.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

URGENT_THREADS = 4
_urgent = contextvars.ContextVar("modelrollout_urgent", default=False)
_urgent_threads: ThreadPoolExecutor | None = None


@contextmanager
def urgent(flag: bool) -> Iterator[None]:
    """The reconcile run inside (in this task) is urgent when ``flag`` is."""
    token = _urgent.set(flag)
    try:
        yield
    finally:
        _urgent.reset(token)


def is_urgent() -> bool:
    return _urgent.get()


async def in_thread(func: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """``asyncio.to_thread``, on the urgent threads when the reconcile is urgent."""
    global _urgent_threads
    loop = asyncio.get_running_loop()
    call = functools.partial(contextvars.copy_context().run, func, *args, **kwargs)
    if not _urgent.get():
        return await loop.run_in_executor(None, call)
    if _urgent_threads is None:
        _urgent_threads = ThreadPoolExecutor(max_workers=URGENT_THREADS, thread_name_prefix="urgent-reconcile")
    return await loop.run_in_executor(_urgent_threads, call)
