"""The MetricProvider interface: run a query, say whether the backend is online, and tell "no data"
apart from "zero" and from "could not ask"."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol


@dataclass(frozen=True)
class Sample:
    labels: Mapping[str, str]
    value: float


class NoData:
    """The query ran and matched no series: not zero, not an error (Inconclusive, never Failed)."""

    def __repr__(self) -> str:
        return "NO_DATA"


NO_DATA: Final = NoData()

QueryResult = Sequence[Sample] | NoData


class ProviderError(Exception):
    """The provider could not answer (unreachable, timed out, rejected the query): an Error verdict."""


class MetricProvider(Protocol):
    async def query(self, promql: str) -> QueryResult:
        """An instant query; NO_DATA when nothing matches; raises ProviderError when it cannot answer."""
        ...

    async def is_online(self) -> bool: ...


class SharedQueries:
    """Answers the same query text once per ``ttl`` seconds for every rollout that asks.

    Queries are grouped by rollout, so one answer serves every rollout: the number of queries an
    interval sends depends on the number of templates, not on the number of rollouts.
    """

    def __init__(self, provider: MetricProvider, *, ttl: float = 1.0) -> None:
        self.provider = provider
        self.ttl = ttl
        self._answers: dict[str, tuple[float, asyncio.Future[QueryResult]]] = {}
        self.sent = 0
        """How many queries reached the provider (for tests and the operator's metrics)."""

    async def query(self, promql: str) -> QueryResult:
        now = time.monotonic()
        cached = self._answers.get(promql)
        if cached is not None and now - cached[0] < self.ttl:
            return await asyncio.shield(cached[1])
        future: asyncio.Future[QueryResult] = asyncio.get_running_loop().create_future()
        self._answers[promql] = (now, future)
        self.sent += 1
        try:
            future.set_result(await self.provider.query(promql))
        except ProviderError as error:
            future.set_exception(error)
            self._answers.pop(promql, None)
            # mark the exception retrieved: other waiters get it through their own await
            future.exception()
            raise
        return future.result()

    async def is_online(self) -> bool:
        return await self.provider.is_online()
