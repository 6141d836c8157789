"""Every metric the model server exports, owned here; each series carries rollout, colour, model, version.

Names follow the contract the operator's analysis relies on (README, "Metrics contract").
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

disable_created_metrics()  # type: ignore[no-untyped-call]  # the *_created series double the output and nothing here reads them

BASE_LABELS = ("rollout", "colour", "model", "version")
# 1 ms .. 10 s, dense enough that p95 between them is within about 25%.
LATENCY_BUCKETS = (
    0.001,
    0.0015,
    0.002,
    0.003,
    0.004,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.04,
    0.05,
    0.075,
    0.1,
    0.125,
    0.15,
    0.2,
    0.25,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    1.5,
    2.0,
    3.0,
    5.0,
    7.5,
    10.0,
)


@dataclass
class RequestOutcome:
    """Filled in by the handler inside ``ServerMetrics.request``."""

    status: int = 200
    timed_out: bool = False


@dataclass
class ServerMetrics:
    rollout: str
    colour: str
    model: str
    version: str
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    scraped: asyncio.Event = field(default_factory=asyncio.Event)
    """Set at the first scrape: counts made before it would be invisible to increase()."""

    def __post_init__(self) -> None:
        base = list(BASE_LABELS)
        r = self.registry
        self.duration = Histogram(
            "modelserver_request_duration_seconds",
            "Request latency.",
            [*base, "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.requests = Counter(
            "modelserver_requests_total", "Requests by status class.", [*base, "endpoint", "code_class"], registry=r
        )
        self.timeouts = Counter(
            "modelserver_request_timeouts_total",
            "Inference that ran past the timeout.",
            [*base, "endpoint"],
            registry=r,
        )
        self.outcomes = Counter(
            "modelserver_labelled_outcomes_total",
            "Predictions checked against a true label.",
            [*base, "source", "outcome"],
            registry=r,
        )
        self.feedback_rejected = Counter(
            "modelserver_feedback_rejected_total", "Feedback that could not be joined.", [*base, "reason"], registry=r
        )
        self.predictions = Counter(
            "modelserver_predictions_total", "Predictions by class.", [*base, "class"], registry=r
        )
        self.golden_accuracy = Gauge(
            "modelserver_golden_accuracy_ratio", "Accuracy on the golden set, last scored.", base, registry=r
        )
        self.ready = Gauge("modelserver_ready", "1 when the model is loaded and serving.", base, registry=r)
        self.start_time = Gauge(
            "modelserver_start_time_seconds",
            "When this server process started (Unix time): a change is a restart, which counts against green.",
            base,
            registry=r,
        )
        self.ttft = Histogram(
            "modelserver_time_to_first_token_seconds",
            "GGUF: time to the first token.",
            base,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter("modelserver_generated_tokens_total", "GGUF: tokens generated.", base, registry=r)
        self.cached_prompt_tokens = Counter(
            "modelserver_prompt_cached_tokens_total",
            "GGUF: prompt tokens taken from a held or saved prompt state instead of being processed.",
            base,
            registry=r,
        )
        self._children: dict[tuple[object, ...], Any] = {}
        self._base = {"rollout": self.rollout, "colour": self.colour, "model": self.model, "version": self.version}
        self.start_time.labels(**self._base).set(time.time())
        # Export every series the analysis reads from the start: rate() needs a sample before the first request.
        for endpoint in ("infer",):
            self.duration.labels(**self._base, endpoint=endpoint)
            self.timeouts.labels(**self._base, endpoint=endpoint)
            for code_class in ("2xx", "4xx", "5xx"):
                self.requests.labels(**self._base, endpoint=endpoint, code_class=code_class)
        for source in ("feedback", "golden"):
            for outcome in ("correct", "incorrect"):
                self.outcomes.labels(**self._base, source=source, outcome=outcome)
        self.ready.labels(**self._base).set(0)

    @contextmanager
    def request(self, endpoint: str) -> Iterator[RequestOutcome]:
        """Time one request and count it by status class (and as a timeout when it timed out)."""
        outcome = RequestOutcome()
        begun = time.perf_counter()
        try:
            yield outcome
        except BaseException:
            outcome.status = 500
            raise
        finally:
            self._duration(endpoint).observe(time.perf_counter() - begun)
            self._requests(endpoint, outcome.status // 100).inc()
            if outcome.timed_out:
                self.timeouts.labels(**self._base, endpoint=endpoint).inc()

    # Children bound once per label set: labels() on every request costs a lock and a dict per call.
    def _duration(self, endpoint: str) -> Any:
        key = ("duration", endpoint)
        if key not in self._children:
            self._children[key] = self.duration.labels(**self._base, endpoint=endpoint)
        return self._children[key]

    def _requests(self, endpoint: str, status_hundreds: int) -> Any:
        key = ("requests", endpoint, status_hundreds)
        if key not in self._children:
            self._children[key] = self.requests.labels(
                **self._base, endpoint=endpoint, code_class=f"{status_hundreds}xx"
            )
        return self._children[key]

    def labelled(self, *, source: str, correct: int, incorrect: int) -> None:
        if correct:
            self.outcomes.labels(**self._base, source=source, outcome="correct").inc(correct)
        if incorrect:
            self.outcomes.labels(**self._base, source=source, outcome="incorrect").inc(incorrect)

    def predicted(self, classes: list[int]) -> None:
        for value, count in collections.Counter(classes).items():
            self.predictions.labels(**self._base, **{"class": str(value)}).inc(count)

    def rejected(self, reason: str) -> None:
        self.feedback_rejected.labels(**self._base, reason=reason).inc()

    def set_ready(self, ready: bool) -> None:
        self.ready.labels(**self._base).set(1 if ready else 0)

    def set_golden_accuracy(self, accuracy: float) -> None:
        self.golden_accuracy.labels(**self._base).set(accuracy)
