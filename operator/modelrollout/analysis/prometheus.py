"""The Prometheus MetricProvider: instant queries over the HTTP API (also Thanos, Mimir, VictoriaMetrics)."""

from __future__ import annotations

import math
from typing import Any

import httpx

from modelrollout.analysis.provider import NO_DATA, ProviderError, QueryResult, Sample


def parse_response(body: dict[str, Any]) -> QueryResult:
    """Samples of a /api/v1/query answer; NO_DATA for an empty vector or NaN scalar."""
    if body.get("status") != "success":
        raise ProviderError(f"query failed: {body.get('errorType', '')} {body.get('error', body)}".strip())
    data = body.get("data", {})
    kind, result = data.get("resultType"), data.get("result")
    if kind == "vector":
        samples = [Sample(labels=item.get("metric", {}), value=float(item["value"][1])) for item in result or []]
        return samples or NO_DATA
    if kind == "scalar":
        value = float(result[1])
        return NO_DATA if math.isnan(value) else [Sample(labels={}, value=value)]
    raise ProviderError(f"unsupported result type {kind!r}: analysis queries must return an instant vector")


class PrometheusProvider:
    def __init__(
        self, url: str, *, timeout: float = 5.0, bearer_token: str | None = None, verify_tls: bool = True
    ) -> None:
        headers = {"Authorization": f"Bearer {bearer_token}"} if bearer_token else {}
        self.url = url.rstrip("/")
        self._client = httpx.AsyncClient(base_url=self.url, timeout=timeout, headers=headers, verify=verify_tls)

    async def query(self, promql: str) -> QueryResult:
        try:
            response = await self._client.get("/api/v1/query", params={"query": promql})
        except httpx.HTTPError as error:
            raise ProviderError(f"Prometheus at {self.url} unreachable: {type(error).__name__}: {error}") from error
        if response.status_code >= 500:
            raise ProviderError(f"Prometheus at {self.url} answered {response.status_code}")
        try:
            body = response.json()
        except ValueError as error:
            raise ProviderError(f"Prometheus at {self.url} answered no JSON ({response.status_code})") from error
        return parse_response(body)

    async def is_online(self) -> bool:
        try:
            response = await self._client.get("/-/ready")
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def close(self) -> None:
        await self._client.aclose()
