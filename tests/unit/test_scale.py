"""What keeps one operator's work in step with the number of rollouts: each rollout picks its series out of a
shared answer without scanning everyone's, shared answers are forgotten once no rollout can use them, the
phase gauge is kept without recounting every rollout, and the operator's requests keep to a rate limit."""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import Sequence
from types import SimpleNamespace

import pytest
import urllib3
from kubernetes import client

from modelrollout import metrics
from modelrollout.analysis import provider as provider_module
from modelrollout.analysis.provider import ProviderError, QueryResult, Sample, Samples, SharedQueries
from modelrollout.analysis.run import _ours
from modelrollout.api.status import Phase
from modelrollout.k8s.api import TokenBucket, bounded, limit


def linear_pick(samples: Sequence[Sample], *, namespace: str, rollout: str) -> list[Sample]:
    """What picking a rollout's series means (the scan the grouping replaces)."""
    return [
        s for s in samples if s.labels.get("rollout") == rollout and s.labels.get("namespace", namespace) == namespace
    ]


@pytest.mark.parametrize("seed", range(20))
def test_a_rollouts_series_are_the_same_grouped_or_scanned(seed: int) -> None:
    chance = random.Random(seed)
    samples = []
    for index in range(200):
        labels = {"colour": chance.choice(["blue", "green"])}
        if chance.random() < 0.9:
            labels["rollout"] = chance.choice(["a", "b", "c"])
        if chance.random() < 0.8:
            labels["namespace"] = chance.choice(["ml", "web"])
        samples.append(Sample(labels, float(index)))
    grouped = Samples(samples)
    assert list(grouped) == samples and len(grouped) == 200
    for namespace in ("ml", "web", "other"):
        for rollout in ("a", "b", "c", "d"):
            expected = linear_pick(samples, namespace=namespace, rollout=rollout)
            assert grouped.of(namespace=namespace, rollout=rollout) == expected  # same samples, same order
            assert _ours(grouped, namespace=namespace, rollout=rollout) == expected
            assert _ours(samples, namespace=namespace, rollout=rollout) == expected
    assert grouped.of(namespace="ml", rollout="a")  # not vacuous


class Answering:
    def __init__(self) -> None:
        self.asked: list[str] = []

    async def query(self, promql: str) -> QueryResult:
        self.asked.append(promql)
        return [Sample({"rollout": "a", "namespace": "ml"}, 1.0)]

    async def is_online(self) -> bool:
        return True


async def test_shared_answers_are_grouped_and_forgotten_once_no_rollout_can_use_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [100.0]
    monkeypatch.setattr(provider_module.time, "monotonic", lambda: clock[0])
    answering = Answering()
    shared = SharedQueries(answering, ttl=5.0)
    sent = provider_module.QUERIES_SENT._value.get()
    answer = await shared.query("q-finished-rollout")
    assert isinstance(answer, Samples) and answer.of(namespace="ml", rollout="a") == list(answer)
    await shared.query("q-live")
    assert len(shared) == 2
    assert provider_module.QUERIES_SENT._value.get() == sent + 2
    clock[0] += 4.0
    await shared.query("q-live")  # still fresh: shared, not asked again
    assert answering.asked == ["q-finished-rollout", "q-live"] and len(shared) == 2
    clock[0] += 2.0
    await shared.query("q-live")  # stale now: asked again; the answer nobody asks again is gone
    assert answering.asked == ["q-finished-rollout", "q-live", "q-live"]
    assert len(shared) == 1


def recount() -> dict[str, float]:
    return {phase.value: metrics.ROLLOUTS.labels(phase=phase.value)._value.get() for phase in Phase}


def test_the_phase_gauge_counts_each_rollout_once_in_its_latest_phase(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "_phases", {})
    for phase in Phase:
        metrics.ROLLOUTS.labels(phase=phase.value).set(0)
    chance = random.Random(7)
    truth: dict[str, str] = {}
    phases = [phase.value for phase in Phase]
    for _ in range(2000):
        key = f"ml/r{chance.randrange(30)}"
        if chance.random() < 0.1:
            metrics.track_phase(key, None)
            truth.pop(key, None)
        else:
            phase = chance.choice(phases)
            metrics.track_phase(key, phase)
            truth[key] = phase
        counted = recount()
        assert counted == {phase: float(sum(1 for p in truth.values() if p == phase)) for phase in phases}
    assert sum(recount().values()) == len(truth) > 0


# -- the operator's client-side rate limit (k8s.api) -------------------------------------------------------


def test_the_rate_limit_lets_a_burst_through_then_spaces_requests_at_the_rate() -> None:
    clock = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds

    bucket = TokenBucket(10.0, 5, clock=lambda: clock[0], sleep=sleep)
    assert [bucket.acquire() for _ in range(5)] == [0.0] * 5  # the burst
    assert bucket.acquire() == pytest.approx(0.1)  # then one every 1/rate
    assert bucket.acquire() == pytest.approx(0.1)
    clock[0] += 10.0  # idle: saves up no more than the burst
    assert [bucket.acquire() for _ in range(5)] == [0.0] * 5
    assert bucket.acquire() == pytest.approx(0.1)
    assert sum(slept) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="rate above 0"):
        TokenBucket(0, 1)


def test_every_request_of_the_operators_client_takes_a_token() -> None:
    sent: list[str] = []
    taken: list[int] = []

    class Bucket:
        def acquire(self) -> float:
            taken.append(len(sent))
            return 0.0

    api_client = SimpleNamespace(rest_client=SimpleNamespace(request=lambda method, url, **_: sent.append(url)))
    limit(api_client, Bucket())  # type: ignore[arg-type]
    api_client.rest_client.request("GET", "/api/v1/pods")
    api_client.rest_client.request("PATCH", "/apis/modelrollout.dev/v1alpha1/x")
    assert sent == ["/api/v1/pods", "/apis/modelrollout.dev/v1alpha1/x"]
    assert taken == [0, 1]  # each token taken before its request went out


def test_a_request_to_an_api_server_that_never_answers_gives_up_at_the_timeout() -> None:
    """A real client against a loopback socket that accepts and then says nothing (a connection lost without a
    reset): the request fails after the timeout instead of holding its thread for good; one that names its own
    timeout keeps it."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        configuration = client.Configuration(host=f"http://127.0.0.1:{silent.getsockname()[1]}")
        configuration.retries = False
        api_client = bounded(client.ApiClient(configuration), 0.3)
        started = time.monotonic()
        with pytest.raises(urllib3.exceptions.HTTPError):
            client.CoreV1Api(api_client).list_namespace()
        assert time.monotonic() - started < 10
        started = time.monotonic()
        with pytest.raises(urllib3.exceptions.HTTPError):
            client.CoreV1Api(api_client).list_namespace(_request_timeout=1.2)
        assert time.monotonic() - started >= 1.0  # its own timeout, not the default


async def test_a_cancelled_first_asker_leaves_no_waiter_hanging() -> None:
    """The task that sent a shared query is cancelled (its tick timed out) while another rollout waits for the
    same answer: the other gets an error at once, and the query is asked afresh next time."""
    release = asyncio.Event()

    class Slow:
        asked = 0

        async def query(self, promql: str) -> QueryResult:
            Slow.asked += 1
            await release.wait()
            return [Sample({"rollout": "a"}, 1.0)]

        async def is_online(self) -> bool:
            return True

    shared = SharedQueries(Slow(), ttl=60)
    first = asyncio.ensure_future(shared.query("q"))
    await asyncio.sleep(0)
    second = asyncio.ensure_future(shared.query("q"))
    await asyncio.sleep(0)
    first.cancel()
    with pytest.raises(ProviderError, match="not answered"):
        await asyncio.wait_for(second, timeout=5)
    assert first.cancelled()
    release.set()
    assert list(await shared.query("q")) == [Sample({"rollout": "a"}, 1.0)]
    assert Slow.asked == 2
