"""One reconcile of one ModelRollout: read it, gather observations, decide, apply the decision.

Everything it decides comes from ``rollout.machine.decide``; this module only does the I/O around it.
All state lives in the object's status, so a restarted operator picks up exactly where it was.
"""

from __future__ import annotations

import asyncio
import datetime
import time

import kopf
import structlog
from pydantic import ValidationError

from modelrollout import metrics
from modelrollout.analysis import run
from modelrollout.analysis.prometheus import PrometheusProvider
from modelrollout.analysis.provider import SharedQueries
from modelrollout.api import constants
from modelrollout.api.spec import ModelRolloutSpec
from modelrollout.api.status import ModelRolloutStatus, Phase
from modelrollout.k8s import manifests, resources
from modelrollout.rollout import commands, machine, steps
from modelrollout.routing import factory
from modelrollout.routing.base import RolloutRef

log = structlog.get_logger("modelrollout")

_providers: dict[str, SharedQueries] = {}
_ensured: dict[str, tuple[str, float]] = {}
"""Per rollout: the fingerprint of the owned objects last applied, and when (in-memory: after a restart the
first reconcile applies them again, which is idempotent)."""
ENSURE_EVERY_SECONDS = 60.0
"""Owned objects are re-applied at least this often, to repair drift, and at once when the spec changes."""
SETTLED = {Phase.PROMOTED, Phase.ROLLED_BACK, Phase.ABORTED, Phase.FAILED}
WARNING_REASONS = {
    "AnalysisFailed",
    "MetricsUnavailable",
    "ProgressDeadlineExceeded",
    "Aborted",
    "InvalidSpec",
    "AnalysisFailing",
    "MetricsError",
}


def provider_for(spec: ModelRolloutSpec) -> SharedQueries:
    """One shared, caching provider per Prometheus address: rollouts share their queries."""
    key = spec.analysis.prometheus.url
    if key not in _providers:
        _providers[key] = SharedQueries(
            PrometheusProvider(
                key,
                timeout=spec.analysis.prometheus.timeout,
                verify_tls=not spec.analysis.prometheus.insecure_skip_verify,
            )
        )
    return _providers[key]


def _ref(body: kopf.Body) -> RolloutRef:
    return RolloutRef(
        namespace=body["metadata"]["namespace"],
        name=body["metadata"]["name"],
        uid=body["metadata"]["uid"],
        body=dict(body),
    )


def _parse(body: kopf.Body) -> ModelRolloutSpec:
    spec = ModelRolloutSpec.model_validate(dict(body.get("spec") or {}))
    for colour in (spec.blue, spec.green):
        manifests.model_path(colour.model.uri)
    factory.router_for(spec.traffic.provider)
    return spec


def _command(body: kopf.Body) -> commands.Command | None:
    annotations = body.get("metadata", {}).get("annotations") or {}
    text = annotations.get(constants.ANNOTATION_COMMAND)
    command_id = annotations.get(constants.ANNOTATION_COMMAND_ID) or f"{text}@{body['metadata']['resourceVersion']}"
    return commands.parse(text, command_id)


async def reconcile(body: kopf.Body, patch: kopf.Patch) -> None:
    begun = time.monotonic()
    ref = _ref(body)
    now = datetime.datetime.now(datetime.UTC)
    status = ModelRolloutStatus.model_validate(dict(body.get("status") or {}))
    structlog.contextvars.bind_contextvars(
        rollout=f"{ref.namespace}/{ref.name}", step=status.step_index, phase=status.phase.value
    )
    try:
        try:
            spec = _parse(body)
            command = _command(body)
        except (ValidationError, ValueError) as error:
            decision = machine.reject(status, f"the spec cannot be rolled out: {_problem(error)}", now)
            await asyncio.to_thread(factory.all_to_blue_without_spec, ref)
            _apply(body, patch, ref, decision, begun)
            return
        if _resting(body, spec, status, command):
            return
        decision = await _decide(spec, status, ref, body, command, now)
        router = factory.router_for(spec.traffic.provider)
        await asyncio.to_thread(router.set_weights, ref, spec, green=decision.green_weight)
        if command is not None:
            patch.setdefault("metadata", {}).setdefault("annotations", {})[constants.ANNOTATION_COMMAND] = None
            patch["metadata"]["annotations"][constants.ANNOTATION_COMMAND_ID] = None
        _apply(body, patch, ref, decision, begun)
    finally:
        structlog.contextvars.unbind_contextvars("rollout", "step", "phase")


async def _decide(
    spec: ModelRolloutSpec,
    status: ModelRolloutStatus,
    ref: RolloutRef,
    body: kopf.Body,
    command: commands.Command | None,
    now: datetime.datetime,
) -> machine.Decision:
    green_replicas, fingerprint = _owned(body, spec, status)
    key = f"{ref.namespace}/{ref.name}"
    if not _ensured_lately(key, fingerprint):
        await asyncio.to_thread(resources.ensure, ref, spec, green_replicas=green_replicas)
        _ensured[key] = (fingerprint, time.monotonic())
    ready = all(
        await asyncio.gather(
            asyncio.to_thread(resources.available, ref, constants.BLUE, version=spec.blue.model.version),
            asyncio.to_thread(resources.available, ref, constants.GREEN, version=spec.green.model.version),
        )
    )
    analysis = None
    if steps.analysis_due(spec, status, now) and status.green_revision == steps.green_revision(spec):
        started = time.monotonic()
        analysis = await run.analyse(
            provider_for(spec),
            spec,
            namespace=ref.namespace,
            rollout=ref.name,
            now=now,
            canary_age_seconds=steps.seconds_since(status.started_at, now),
        )
        metrics.ANALYSIS_DURATION.observe(time.monotonic() - started)
    router = factory.router_for(spec.traffic.provider)
    applied = await asyncio.to_thread(router.applied_green_weight, ref, spec)
    observations = machine.Observations(
        resources_ready=ready, analysis=analysis, router_green_weight=applied, command=command
    )
    return machine.decide(spec, status, observations, now)


def _owned(body: kopf.Body, spec: ModelRolloutSpec, status: ModelRolloutStatus) -> tuple[int, str]:
    """Green's replica count, and the fingerprint of the owned objects as they should be now."""
    keep_green = status.phase not in (Phase.ROLLED_BACK, Phase.ABORTED) or spec.rollback.green == "keep"
    green_replicas = spec.server.replicas if keep_green else 0
    return green_replicas, f"{body['metadata'].get('generation')}/{green_replicas}"


def _ensured_lately(key: str, fingerprint: str) -> bool:
    last = _ensured.get(key)
    return last is not None and last[0] == fingerprint and time.monotonic() - last[1] <= ENSURE_EVERY_SECONDS


def _resting(
    body: kopf.Body, spec: ModelRolloutSpec, status: ModelRolloutStatus, command: commands.Command | None
) -> bool:
    """A settled rollout whose spec has not changed since it was reconciled, with no command waiting and its
    owned objects as they should be: no work (no reads, no writes) until those are due to be re-applied."""
    if status.phase not in SETTLED or command is not None:
        return False
    if status.observed_generation != body["metadata"].get("generation"):
        return False
    key = f"{body['metadata']['namespace']}/{body['metadata']['name']}"
    return _ensured_lately(key, _owned(body, spec, status)[1])


def _apply(body: kopf.Body, patch: kopf.Patch, ref: RolloutRef, decision: machine.Decision, begun: float) -> None:
    decision.status.observed_generation = body["metadata"].get("generation") or 0
    wanted = decision.status.to_api()
    if wanted != dict(body.get("status") or {}):  # an unchanged status is not written again
        patch["status"] = wanted
    metrics.track_phase(f"{ref.namespace}/{ref.name}", decision.status.phase.value)
    if decision.recorded:
        kind = "Warning" if decision.reason in WARNING_REASONS else "Normal"
        kopf.event(body, type=kind, reason=decision.reason, message=decision.message[:1000])
        log.info(
            "decision",
            action=decision.action.value,
            reason=decision.reason,
            message=decision.message,
            green_weight=decision.green_weight,
            phase=decision.status.phase.value,
        )
        if decision.action is machine.Action.ROLL_BACK:
            metrics.ROLLBACKS.labels(reason=decision.reason).inc()
    metrics.DECISION_LATENCY.observe(time.monotonic() - begun)


def _problem(error: Exception) -> str:
    if isinstance(error, ValidationError):
        return "; ".join(f"spec.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()[:5])
    return str(error)


def forget(body: kopf.Body) -> None:
    key = f"{body['metadata']['namespace']}/{body['metadata']['name']}"
    metrics.track_phase(key, None)
    _ensured.pop(key, None)
