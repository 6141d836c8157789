"""The router's own metrics (``modelrouter_*``), owned in one place."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

disable_created_metrics()  # type: ignore[no-untyped-call]  # nothing reads the *_created series

OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1)


@dataclass
class RouterMetrics:
    rollout: str
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "modelrouter_requests_total", "Requests routed, by colour.", ["rollout", "colour"], registry=r
        )
        self.upstream_errors = Counter(
            "modelrouter_upstream_errors_total", "Upstreams that could not answer.", ["rollout", "colour"], registry=r
        )
        self.applied_weight = Gauge(
            "modelrouter_applied_weight", "Green weight in percent, as applied.", ["rollout"], registry=r
        )
        self.mirror_comparisons = Counter(
            "modelrouter_mirror_comparisons_total",
            "Mirrored requests whose answers were compared.",
            ["rollout"],
            registry=r,
        )
        self.mirror_disagreements = Counter(
            "modelrouter_mirror_disagreements_total",
            "Mirrored requests where green predicted differently.",
            ["rollout"],
            registry=r,
        )
        self.mirror_errors = Counter(
            "modelrouter_mirror_errors_total",
            "Mirrored copies green could not answer (kept apart from upstream errors: no user saw them).",
            ["rollout"],
            registry=r,
        )
        self.guard_trips = Counter(
            "modelrouter_guard_trips_total",
            "Times the data-plane guard sent green 0% because too many of its answers failed.",
            ["rollout"],
            registry=r,
        )
        self.feedback_refused = Counter(
            "modelrouter_feedback_refused_total",
            "Feedback refused before reaching a model server (reason: unauthorized, no_token or rate_limited).",
            ["rollout", "reason"],
            registry=r,
        )
        self.nginx_restarts = Counter(
            "modelrouter_nginx_restarts_total",
            "Times nginx (the nginx data plane) exited unasked and was started again with the config it served.",
            ["rollout"],
            registry=r,
        )
        self.overhead = Histogram(
            "modelrouter_overhead_seconds",
            "Time spent in the router beyond the upstream.",
            ["rollout"],
            buckets=OVERHEAD_BUCKETS,
            registry=r,
        )
        self._by_colour = {c: self.requests.labels(rollout=self.rollout, colour=c) for c in ("blue", "green")}
        self._errors = {c: self.upstream_errors.labels(rollout=self.rollout, colour=c) for c in ("blue", "green")}
        self._overhead = self.overhead.labels(rollout=self.rollout)
        self._guard_trips = self.guard_trips.labels(rollout=self.rollout)
        self._weight = self.applied_weight.labels(rollout=self.rollout)
        self._comparisons = self.mirror_comparisons.labels(rollout=self.rollout)
        self._disagreements = self.mirror_disagreements.labels(rollout=self.rollout)
        self._mirror_errors = self.mirror_errors.labels(rollout=self.rollout)

    def feedback_refusal(self, reason: str) -> None:
        self.feedback_refused.labels(rollout=self.rollout, reason=reason).inc()

    def routed(self, colour: str) -> None:
        self._by_colour[colour].inc()

    def upstream_error(self, colour: str) -> None:
        self._errors[colour].inc()

    def mirror_failed(self) -> None:
        self._mirror_errors.inc()

    def guard_tripped(self) -> None:
        self._guard_trips.inc()

    def nginx_restarted(self) -> None:
        self.nginx_restarts.labels(rollout=self.rollout).inc()

    def observe_overhead(self, seconds: float) -> None:
        self._overhead.observe(seconds)

    def set_weight(self, weight: int) -> None:
        self._weight.set(weight)

    def compared(self, *, disagreed: bool) -> None:
        self._comparisons.inc()
        if disagreed:
            self._disagreements.inc()
