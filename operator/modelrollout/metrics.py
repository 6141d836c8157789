"""The operator's own metrics (``modelrollout_*``), served on MODELROLLOUT_METRICS_PORT."""

from __future__ import annotations

import threading

from prometheus_client import Counter, Gauge, Histogram

from modelrollout.api.status import Phase

ROLLOUTS = Gauge("modelrollout_rollouts", "ModelRollouts by phase.", ["phase"])
ROLLBACKS = Counter("modelrollout_rollbacks_total", "Rollbacks, by reason.", ["reason"])
THROTTLED_SECONDS = Counter(
    "modelrollout_api_throttled_seconds_total",
    "Seconds the operator's requests waited for the client-side rate limit (MODELROLLOUT_API_QPS, _BURST).",
)
LOOPS = Gauge("modelrollout_reconcile_loops", "Reconcile loops running: one per ModelRollout this replica reconciles.")
LEADER = Gauge("modelrollout_leader", "1 while this operator replica reconciles (holds the Lease, or runs alone).")
ANALYSIS_DURATION = Histogram(
    "modelrollout_analysis_duration_seconds",
    "Time to run one rollout's analysis.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
DECISION_LATENCY = Histogram(
    "modelrollout_decision_latency_seconds",
    "From the start of a reconcile to its decision being handed to the API server.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)

for _known in Phase:
    ROLLOUTS.labels(phase=_known.value)  # every phase shown from the start, at 0

_phases: dict[str, str] = {}
_phases_lock = threading.Lock()


def track_phase(key: str, phase: str | None) -> None:
    """Keep the phase gauge in step with every rollout this operator sees (None: deleted): the rollout's
    old phase counts one less, its new one one more (constant work per call, whatever the number of
    rollouts)."""
    with _phases_lock:  # the deletion handler runs in a thread, reconciles on the event loop
        before = _phases.pop(key, None) if phase is None else _phases.get(key)
        if phase is not None:
            _phases[key] = phase
        if before == phase:
            return
        if before is not None:
            ROLLOUTS.labels(phase=before).dec()
        if phase is not None:
            ROLLOUTS.labels(phase=phase).inc()
