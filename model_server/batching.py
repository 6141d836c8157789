"""Running a Runtime from the event loop, alone or with adaptive batching.

Adaptive batching is a wrapper: requests that arrive within ``max_wait`` of each other are merged along
the first dimension into one model call, up to ``max_batch_size`` rows, and the outputs are split back.
The runtime never knows it is batched.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from model_server.runtime.base import Runtime, Tensors


class Predictor(Protocol):
    async def predict(self, inputs: Tensors) -> Tensors: ...

    async def close(self) -> None: ...


class DirectPredictor:
    """One model call per request: on a worker thread (onnxruntime releases the GIL while it runs), or,
    for calls measured to take under ``inline_below`` seconds, right on the event loop, where a thread hop
    would cost more than the model. The cost is measured inside the worker, around the model call alone:
    under load the hop's queueing would make any model look slow."""

    def __init__(self, runtime: Runtime, *, workers: int = 2, inline_below: float = 0.0005) -> None:
        self.runtime = runtime
        self.inline_below = inline_below
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="predict")
        self._seconds_per_row: list[float] = []
        self._row_cost: float | None = None

    async def predict(self, inputs: Tensors) -> Tensors:
        rows = max(1, next(iter(inputs.values())).shape[0] if inputs else 1)
        if self._row_cost is not None and self._row_cost * rows < self.inline_below:
            return self.runtime.predict(inputs)
        result, seconds = await asyncio.get_running_loop().run_in_executor(self._executor, self._timed, inputs)
        if self._row_cost is None:
            self._seconds_per_row.append(seconds / rows)
            if len(self._seconds_per_row) >= 20:  # enough calls to know the model's cost
                self._row_cost = sorted(self._seconds_per_row)[len(self._seconds_per_row) // 2]
        return result

    def _timed(self, inputs: Tensors) -> tuple[Tensors, float]:
        begun = time.perf_counter()
        result = self.runtime.predict(inputs)
        return result, time.perf_counter() - begun

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


@dataclass
class _Pending:
    inputs: Tensors
    rows: int
    future: asyncio.Future[Tensors]


def _signature(inputs: Tensors) -> tuple[tuple[str, str, tuple[int, ...]], ...]:
    """Requests with the same signature can share a batch."""
    return tuple(sorted((name, str(array.dtype), array.shape[1:]) for name, array in inputs.items()))


class BatchingPredictor:
    def __init__(self, runtime: Runtime, *, max_batch_size: int, max_wait_seconds: float, workers: int = 1) -> None:
        self.runtime = runtime
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_seconds
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="batch")
        self._queue: asyncio.Queue[_Pending] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._busy = asyncio.Semaphore(workers)
        self._running: set[asyncio.Task[None]] = set()
        self.batches = 0
        """Model calls made (for tests and benchmarks)."""

    async def predict(self, inputs: Tensors) -> Tensors:
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._run(), name="batcher")
        rows = next(iter(inputs.values())).shape[0] if inputs else 0
        future: asyncio.Future[Tensors] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(inputs, rows, future))
        return await future

    async def _run(self) -> None:
        assert self._queue is not None
        queue = self._queue
        carry: _Pending | None = None
        while True:
            first = carry or await queue.get()
            carry = None
            batch, rows = [first], first.rows
            deadline = time.monotonic() + self.max_wait
            signature = _signature(first.inputs)
            while rows < self.max_batch_size:
                remaining = deadline - time.monotonic()
                try:
                    item = queue.get_nowait() if remaining <= 0 else await asyncio.wait_for(queue.get(), remaining)
                except (asyncio.QueueEmpty, TimeoutError):
                    break
                if _signature(item.inputs) != signature or rows + item.rows > self.max_batch_size:
                    carry = item
                    break
                batch.append(item)
                rows += item.rows
            await self._busy.acquire()
            task = asyncio.create_task(self._execute(batch))
            self._running.add(task)  # keep a reference until it finishes
            task.add_done_callback(self._running.discard)

    async def _execute(self, batch: list[_Pending]) -> None:
        try:
            merged = {name: np.concatenate([p.inputs[name] for p in batch]) for name in batch[0].inputs}
            self.batches += 1
            outputs = await asyncio.get_running_loop().run_in_executor(self._executor, self.runtime.predict, merged)
            start = 0
            for pending in batch:
                end = start + pending.rows
                if not pending.future.done():
                    pending.future.set_result({name: value[start:end] for name, value in outputs.items()})
                start = end
        except Exception as error:  # noqa: BLE001 - every waiter gets the model's error
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(error)
        finally:
            self._busy.release()

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)
