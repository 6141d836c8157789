"""The MetricProvider interface: run a query, say whether the backend is online, and tell "no data"
apart from "zero" and from "could not ask"."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from prometheus_client import Counter

QUERIES_SENT = Counter(
    "modelrollout_prometheus_queries_total",
    "Queries the operator sent to Prometheus (answers shared by rollouts asking the same one count once).",
)


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


class Samples(Sequence[Sample]):
    """A query's samples, also grouped by the rollout they are for (``namespace`` and ``rollout`` labels):
    the grouping is built once, on first use, for every rollout that shares the answer (SharedQueries), so
    each rollout finds its own series without scanning everyone's."""

    def __init__(self, samples: Sequence[Sample]) -> None:
        self._samples = tuple(samples)
        self._grouped: dict[tuple[str | None, str | None], list[int]] | None = None

    def __getitem__(self, index: int) -> Sample:  # type: ignore[override]
        return self._samples[index]

    def __len__(self) -> int:
        return len(self._samples)

    def __eq__(self, other: object) -> bool:
        """Equal to any sequence of the same samples (a list answer and its grouped copy are one answer)."""
        if isinstance(other, Sequence) and not isinstance(other, str):
            return list(self._samples) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def of(self, *, namespace: str, rollout: str) -> list[Sample]:
        """The samples labelled with ``rollout`` and ``namespace`` (or with no namespace label), in order."""
        if self._grouped is None:
            grouped: dict[tuple[str | None, str | None], list[int]] = {}
            for index, sample in enumerate(self._samples):
                key = (sample.labels.get("namespace"), sample.labels.get("rollout"))
                grouped.setdefault(key, []).append(index)
            self._grouped = grouped
        found = self._grouped.get((namespace, rollout), []) + self._grouped.get((None, rollout), [])
        return [self._samples[index] for index in sorted(found)]


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
        self._swept_at = time.monotonic()
        self.sent = 0
        """How many queries reached the provider (for tests and the operator's metrics)."""

    async def query(self, promql: str) -> QueryResult:
        now = time.monotonic()
        self._sweep(now)
        cached = self._answers.get(promql)
        if cached is not None and now - cached[0] < self.ttl:
            return await asyncio.shield(cached[1])
        future: asyncio.Future[QueryResult] = asyncio.get_running_loop().create_future()
        self._answers[promql] = (now, future)
        self.sent += 1
        QUERIES_SENT.inc()
        try:
            answer = await self.provider.query(promql)
            future.set_result(answer if isinstance(answer, NoData) else Samples(answer))
        except BaseException as error:
            # Any failure, also one that is not the provider's (the asking task cancelled, a bug): every other
            # waiter gets an error now rather than wait forever, and the query is asked afresh next time.
            failed = error if isinstance(error, ProviderError) else ProviderError(f"query not answered: {error!r}")
            future.set_exception(failed)
            self._answers.pop(promql, None)
            # mark the exception retrieved: other waiters get it through their own await
            future.exception()
            raise
        return future.result()

    def _sweep(self, now: float) -> None:
        """Forget answers no rollout can use any more (older than ``ttl``), at most once per ``ttl``: a query
        no rollout asks again (its rollout finished, its spec changed) does not stay in memory."""
        if now - self._swept_at < self.ttl:
            return
        self._swept_at = now
        for promql, (asked_at, future) in list(self._answers.items()):
            if now - asked_at >= self.ttl and future.done():
                del self._answers[promql]

    def __len__(self) -> int:
        """Answers held now."""
        return len(self._answers)

    async def is_online(self) -> bool:
        return await self.provider.is_online()
