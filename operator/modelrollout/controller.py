"""One reconcile of one ModelRollout: read it, gather observations, decide, apply the decision.

Everything it decides comes from ``rollout.machine.decide``; this module only does the I/O around it.
All state lives in the object's status, so a restarted operator picks up exactly where it was.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime
import enum
import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping
from typing import Any, cast

import kopf
import structlog
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from modelrollout import lanes, metrics
from modelrollout.analysis import run
from modelrollout.analysis.prometheus import PrometheusProvider
from modelrollout.analysis.provider import SharedQueries
from modelrollout.api import constants
from modelrollout.api.spec import AnalysisSpec, ColourSpec, ModelRolloutSpec, parse_duration, serving_revision
from modelrollout.api.status import ModelRolloutStatus, Phase, StableStatus, without_nulls
from modelrollout.k8s import api, manifests, resources
from modelrollout.k8s.owned import LIVE, SEEN, OwnedObjects, Versions, drifted
from modelrollout.rollout import commands, machine, steps
from modelrollout.routing import factory
from modelrollout.routing.base import AppliedWeights, RolloutRef
from modelrollout.routing.guard import GuardTrip
from modelrollout.routing.report import latest_trip, legacy_trip, trip_of

log = structlog.get_logger("modelrollout")

_providers: dict[tuple[str, str, float, bool], SharedQueries] = {}


def state_key(namespace: str, name: str, uid: str) -> str:
    """What this module keeps of a rollout in memory is kept by object, not by name: a reconcile still in
    flight when its rollout is deleted (with no finalizer) and made again under the name cannot leave its
    failures, applies or fence to the new object."""
    return f"{namespace}/{name}/{uid}"


def _key(ref: RolloutRef) -> str:
    return state_key(ref.namespace, ref.name, ref.uid)


def _body_key(body: Mapping[str, Any]) -> str:
    metadata = body.get("metadata") or {}
    return state_key(*(str(metadata.get(field) or "") for field in ("namespace", "name", "uid")))


_tokens: dict[tuple[str, str, str], tuple[str, float]] = {}
TOKEN_TTL_SECONDS = 60.0
"""A bearer token read from a Secret is read again after this long (a rotated token is picked up)."""
_compared_with_record: set[str] = set()
"""Rollouts whose status was compared with blue's record of the stable model since this process started
(a status restored from an older copy is caught on the first reconcile after a restart)."""
_unreadable: set[str] = set()
"""Rollouts whose stored status could not be read: the next status written replaces it whole."""
_failures: dict[str, str] = {}
"""Per rollout: what failed after the last decision (writing weights), counted by the next reconcile."""
_repeated_rounds: dict[str, tuple[str, str, str, datetime.datetime]] = {}
"""Per rollout: the uid, resourceVersion and stored analysis time (as written) of the status an analysis round
found again, and that round's time (see repeats_stored_round). The round is not written; its time is kept here
so that the next round is due an interval after it, not at once."""


def repeats_stored_round(wanted: Mapping[str, Any], stored: Mapping[str, Any]) -> bool:
    """Whether status ``wanted`` differs from ``stored`` only in the time of its analysis (a pure function): a
    round that found what the stored round found, with the same decision. Such a round is not written (a
    rollout held by its analysis costs no write per round; ``status.analysis.time`` is then that of an earlier
    round that found the same). Losing it costs nothing: without it, the stored result is older, so a step that
    needs a fresh analysis waits for the next round, which is due at once."""
    wanted_analysis, stored_analysis = wanted.get("analysis"), stored.get("analysis")
    if not isinstance(wanted_analysis, Mapping) or not isinstance(stored_analysis, Mapping):
        return False
    if wanted_analysis.get("time") == stored_analysis.get("time"):
        return False
    return {**wanted, "analysis": {**wanted_analysis, "time": stored_analysis.get("time")}} == dict(stored)


def _with_repeated_round(key: str, body: Mapping[str, Any], status: ModelRolloutStatus) -> ModelRolloutStatus:
    """``status`` with its analysis dated by the last round that found it again, while the stored status is the
    one that round saw (the same uid, resourceVersion and analysis time: any write to the rollout, by anyone,
    makes the stored time count again)."""
    remembered = _repeated_rounds.get(key)
    if remembered is None:
        return status
    uid, version, stored_time, at = remembered
    stored = dict(body.get("status") or {}).get("analysis") or {}
    seen = ((body.get("metadata") or {}).get("uid"), _resource_version(body), stored.get("time"))
    if seen != (uid, version, stored_time):
        _repeated_rounds.pop(key, None)
        return status
    if status.analysis is None or at <= status.analysis.time:
        return status
    return status.model_copy(update={"analysis": status.analysis.model_copy(update={"time": at})})


@dataclasses.dataclass(frozen=True)
class Ensured:
    """When a rollout's owned objects were last applied, built from what (``fingerprint``), and the uid and
    version of each object the apply returned (``applied``), which the watches should show from then on."""

    fingerprint: str
    at: float
    applied: Versions | None = None


_ensured: dict[str, Ensured] = {}
"""Per rollout, in memory: after a restart the first reconcile applies the owned objects again (idempotent)."""
_relisted = float("-inf")
"""When a watch of owned objects last listed them again (see relisted)."""
ENSURE_EVERY_SECONDS = 60.0
"""Owned objects are applied again at once when what they are built from changes, and otherwise this often to
repair drift, when the operator does not watch them (MODELROLLOUT_OWNED_READS=api)."""
ENSURE_WATCHED_EVERY_SECONDS = float(os.environ.get("MODELROLLOUT_REAPPLY_SECONDS", "1800"))
"""With the watches: an owned object deleted, made again or changed by someone else is seen by its watch and
applied again at once, and all of a rollout's are applied again after a watch lists again; otherwise they are
applied again this often all the same (a settled rollout's re-apply also checks its cached copy, owned.Resync:
20 requests every 30 minutes, 0.67 a minute)."""
SETTLE_SECONDS = 5.0
"""An object the watch has not shown this long after the apply that made it counts as deleted."""
_at_rest: set[str] = set()
"""The rollouts whose last reconcile found them resting (``_resting``): their loops look again less often."""


def _settling(key: str) -> bool:
    """Whether the last apply of this rollout's objects is recent enough that an object deleted since is not
    yet counted as drift (SETTLE_SECONDS): the rollout looks again at the next tick, not at rest."""
    last = _ensured.get(key)
    return last is not None and time.monotonic() - last.at <= SETTLE_SECONDS


def at_rest(namespace: str, name: str, uid: str) -> bool:
    """Whether this rollout's last reconcile found nothing to do and nothing that time alone would change but
    the periodic re-apply (handlers.steer then waits REST_SECONDS for a wake-up rather than a tick): never
    while its last apply settles, nor when the colours are read from the API server (no watch wakes it)."""
    return state_key(namespace, name, uid) in _at_rest


RELIST_SECONDS = 30.0
"""Listing events this close together are one relist (every rollout applies again once, not once per event)."""


def relisted() -> None:
    """A watch of owned objects listed them again (after a 410 Gone or an error): an object deleted meanwhile
    got no DELETED event and may still show as it was applied, so every rollout's objects are applied again
    at its next reconcile, as after an operator restart (applying makes such an object again)."""
    global _relisted
    now = time.monotonic()
    if now - _relisted > RELIST_SECONDS:
        _relisted = now


def ensure_due(
    last: Ensured | None, fingerprint: str, shown: Versions | None, now: float, relisted_at: float = float("-inf")
) -> bool:
    """Whether the owned objects are to be applied again (a pure function): never applied, built from something
    else now, applied before the watches last listed again, an object the watches (``shown``, see owned.Seen)
    show otherwise than it was applied, or not applied for the period."""
    if last is None or last.fingerprint != fingerprint:
        return True
    age = now - last.at
    if shown is None or last.applied is None:
        return age > ENSURE_EVERY_SECONDS
    if last.at <= relisted_at:
        return True
    return bool(drifted(last.applied, shown, settled=age > SETTLE_SECONDS)) or age > ENSURE_WATCHED_EVERY_SECONDS


_written: dict[str, tuple[str, str]] = {}
"""Per rollout: its uid and the resourceVersion of the operator's last write to it (see behind)."""
_held: dict[str, float] = {}
"""Per rollout: since when its reconciles are held back waiting for the watch to deliver that write."""
FENCE_SECONDS = 30.0
ROUTER_IMAGE = os.environ.get("MODELROLLOUT_ROUTER_IMAGE", "")
"""The builtin router's image (the Helm chart sets the operator's own); unset: the stable model's server
image. Never the candidate's."""
ROUTER_REPLICAS = int(os.environ.get("MODELROLLOUT_ROUTER_REPLICAS", "2"))
"""Replicas of each builtin router (the Helm chart's ``router.replicas``): weights count as applied once every
one that may be sent traffic reports them (routing.report.applied_by)."""
if ROUTER_REPLICAS < 1:
    raise ValueError(f"MODELROLLOUT_ROUTER_REPLICAS must be at least 1, not {ROUTER_REPLICAS}")
_fence: Callable[[], bool] | None = None


def _never_ended(uid: str) -> bool:
    return False


def _end_nothing(uid: str) -> None:
    return None


_ended: Callable[[str], bool] = _never_ended
_end: Callable[[str], None] = _end_nothing


def objects_with(ended: Callable[[str], bool], end: Callable[[str], None]) -> None:
    """What the rollouts' loops know of deleted objects (handlers.WAKEUPS): ``ended(uid)``, the object was seen
    deleted; ``end(uid)``, the API server has no such object (a status write answered 404), so its loop ends
    also when its DELETED event was never seen (the rollout deleted while the watch was down and listed
    again). A reconcile of an ended object applies nothing and moves no weights: the name may hold another
    object by now, whose objects an apply with the old owner would hand to the garbage collector."""
    global _ended, _end
    _ended, _end = ended, end


def fence_with(check: Callable[[], bool]) -> None:
    """Under leader election (k8s.leader): ``check`` says whether this replica's Lease is fresh."""
    global _fence
    _fence = check


def may_act() -> bool:
    """Whether this operator may write now: checked before a reconcile, before its status write and before its
    weights write, so that a replica whose Lease went stale in the middle of a reconcile (a pause, a slow API
    server) writes nothing. Always, without leader election."""
    return _fence is None or _fence()


def behind(seen: str, written: str) -> bool:
    """Whether resourceVersion ``seen`` is older than ``written`` (a pure function). On the API servers the
    operator supports they are etcd revisions, which only grow; anything else never counts as behind."""
    try:
        return int(seen) < int(written)
    except ValueError:
        return False


class Fence(enum.Enum):
    GO = "go"
    HOLD = "hold"
    READ = "read"


def _write_fence(key: str, body: kopf.Body) -> Fence:
    """HOLD while the watch has not delivered the operator's last write to this rollout: deciding from this body
    would decide from a status already replaced (a step advanced twice, a history entry lost, a rolled-back
    candidate given its weight again). The loop is woken once it has (caught_up). READ after FENCE_SECONDS of
    that (a watch gone quiet, resourceVersions that went backwards): the decision is made from the API
    server's copy, read now, never from the stale one, and a rollout never freezes on the watch."""
    written, seen = _written.get(key), _resource_version(body)
    if written is None or written[0] != (body.get("metadata") or {}).get("uid") or not behind(seen, written[1]):
        _held.pop(key, None)
        return Fence.GO
    held_since = _held.setdefault(key, time.monotonic())
    if time.monotonic() - held_since > FENCE_SECONDS:
        log.warning(
            "the watch has not delivered the operator's last write: deciding from the API server's copy",
            written=written[1],
            seen=seen,
            seconds=round(time.monotonic() - held_since, 1),
        )
        return Fence.READ  # held until that read succeeds
    return Fence.HOLD


def caught_up(namespace: str, name: str, body: Mapping[str, Any]) -> bool:
    """Whether a reconcile held back by its own last write (see _write_fence) may go on with ``body``."""
    key = state_key(namespace, name, str((body.get("metadata") or {}).get("uid") or ""))
    written = _written.get(key)
    return key in _held and (written is None or not behind(_resource_version(body), written[1]))


def _resource_version(body: Mapping[str, Any]) -> str:
    return str((body.get("metadata") or {}).get("resourceVersion") or "")


def _wrote(ref: RolloutRef, stored: Mapping[str, Any]) -> None:
    version = (stored.get("metadata") or {}).get("resourceVersion")
    if version:
        _written[_key(ref)] = (ref.uid, str(version))


SETTLED = {Phase.PROMOTED, Phase.ROLLED_BACK, Phase.ABORTED, Phase.FAILED}
WARNING_REASONS = {
    "AnalysisFailed",
    "GuardTripped",
    "MetricsUnavailable",
    "ProgressDeadlineExceeded",
    "Aborted",
    "InvalidSpec",
    "AnalysisFailing",
    "MetricsError",
    "UnknownCommand",
    "RouterNotConfirming",
    "ReconcileError",
    "ReconcileFailed",
    "WaitingForRouter",
    "BlueNotReady",
}


def _bearer_token(spec: ModelRolloutSpec, namespace: str) -> str:
    """The token in ``analysis.prometheus.bearerTokenSecret`` (read from the rollout's namespace), or ""."""
    ref = spec.analysis.prometheus.bearer_token_secret
    if ref is None:
        return ""
    key = (namespace, ref.name, ref.key)
    cached = _tokens.get(key)
    if cached is not None and time.monotonic() - cached[1] < TOKEN_TTL_SECONDS:
        return cached[0]
    secret = api.core().read_namespaced_secret(ref.name, namespace)
    data = (secret.data or {}).get(ref.key)
    if data is None:
        raise ValueError(f"spec.analysis.prometheus.bearerTokenSecret: Secret {ref.name} has no key {ref.key!r}")
    token = base64.b64decode(data).decode().strip()
    _tokens[key] = (token, time.monotonic())
    return token


def provider_for(spec: ModelRolloutSpec, namespace: str = "") -> SharedQueries:
    """One shared, caching provider per Prometheus address and credentials: rollouts that reach the same
    Prometheus the same way share their queries."""
    prometheus = spec.analysis.prometheus
    token = _bearer_token(spec, namespace)
    fingerprint = hashlib.sha256(token.encode()).hexdigest() if token else ""
    key = (prometheus.url, fingerprint, prometheus.timeout, prometheus.insecure_skip_verify)
    if key not in _providers:
        _providers[key] = SharedQueries(
            PrometheusProvider(
                prometheus.url,
                timeout=prometheus.timeout,
                bearer_token=token or None,
                verify_tls=not prometheus.insecure_skip_verify,
            )
        )
    return _providers[key]


def _ref(body: kopf.Body, router_report: Mapping[str, str] | None, owned: OwnedObjects) -> RolloutRef:
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    return RolloutRef(
        namespace=namespace,
        name=name,
        uid=body["metadata"]["uid"],
        body=dict(body),
        router_report=router_report,
        routers=lambda: resources.live_pods(owned.pods(namespace, name, manifests.ROUTER)),
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


async def reconcile(
    body: kopf.Body,
    router_report: Mapping[str, str] | None = None,
    owned: OwnedObjects = LIVE,
    *,
    deployed: Versions | None = None,
) -> None:
    """One tick, with the builtin router's report as last seen (routing.report), and the colours'
    Deployments and pods as ``owned`` sees them (the handlers pass the operator's watches: no request per
    tick) and ``deployed``, what the watches show of every owned object (owned.Seen: one changed by someone
    else is applied again at once; None: they are applied again every ENSURE_EVERY_SECONDS instead). Whatever
    fails is recorded in status and as an Event and retried on the next tick (a second later): a failure is
    a state of the rollout, never a freeze."""
    begun = time.monotonic()
    ref = _ref(body, router_report, owned)
    key = _key(ref)
    _at_rest.discard(key)
    if _ended(ref.uid):
        return
    fence = _write_fence(key, body)
    if fence is Fence.HOLD:
        return
    if fence is Fence.READ:
        try:
            fresh = await lanes.in_thread(
                api.get_custom, constants.GROUP, constants.VERSION, constants.PLURAL, ref.namespace, ref.name
            )
        except Exception as error:  # noqa: BLE001 - nothing is decided; the next tick reads again
            log.warning("rollout not read after its watch went quiet", error=_describe(error))
            return
        if fresh is None or (fresh.get("metadata") or {}).get("uid") != ref.uid:
            return  # gone, or made again under the name: that object is its own loop's
        _written.pop(key, None)
        _held.pop(key, None)
        body = kopf.Body(cast(kopf.RawBody, fresh))
        ref = _ref(body, router_report, owned)
    now = datetime.datetime.now(datetime.UTC)
    try:
        status = _with_repeated_round(key, body, ModelRolloutStatus.model_validate(dict(body.get("status") or {})))
    except ValidationError as error:
        # Edited by hand, or written by another version: read as a lost status, which is recovered from
        # what the cluster runs (see _recovered) rather than left to freeze the rollout.
        unreadable = f"status cannot be read ({_problem(error, 'status')}): rebuilt from what the cluster runs"
        kopf.event(body, type="Warning", reason="StatusUnreadable", message=unreadable[:1000])
        log.warning("status unreadable", error=unreadable)
        status = ModelRolloutStatus()
        _unreadable.add(key)
    structlog.contextvars.bind_contextvars(
        rollout=f"{ref.namespace}/{ref.name}", step=status.step_index, phase=status.phase.value
    )
    try:
        try:
            spec = _parse(body)
        except (ValidationError, ValueError) as error:
            report = await lanes.in_thread(factory.applied_without_spec, ref)
            if status.stable is None and report.revision is not None:
                # The status is lost (the router served weights it asked for) and the spec cannot say
                # what green is: deciding now could send users to an older model. Nothing moves.
                unread = f"the status is lost and the spec cannot be rolled out: {_problem(error)}"
                kopf.event(body, type="Warning", reason="InvalidSpec", message=unread[:1000])
                return
            await _reject(body, ref, status, _problem(error), report, now, begun)
            return
        command = _command(body)
        if _resting(body, spec, status, command, deployed):
            if deployed is not None and not _settling(key):
                _at_rest.add(key)
            return
        if status.stable is None or key not in _compared_with_record:
            try:
                status = await lanes.in_thread(_recovered, ref, spec, status, now)
                _compared_with_record.add(key)
            except Exception as error:  # noqa: BLE001 - deciding now could pick spec.blue or an older copy
                unread = f"reading what blue and green serve: {_describe(error)}; nothing moves until it is read"
                kopf.event(body, type="Warning", reason="ReconcileError", message=unread[:1000])
                log.warning("stable model not compared with blue's record", error=unread)
                try:  # shown in status too (phase, weights and stable untouched)
                    await lanes.in_thread(_patch_status, ref, {"status": {"lastError": unread}})
                except Exception as failed:  # noqa: BLE001 - the Event and the log carry it
                    log.warning("status not written", error=_describe(failed))
                return
        try:
            observations = await _gather(spec, status, ref, body, command, now, owned, deployed)
        except Exception as error:  # noqa: BLE001 - any failure to gather is counted, not a freeze
            observations = machine.Observations(command=command, error=_describe(error))
        earlier = _failures.pop(key, None)
        if earlier and observations.error is None:
            observations = dataclasses.replace(observations, error=earlier)
        decision = machine.decide(spec, status, observations, now)
        if not await _record_promotion(body, ref, spec, status, decision):
            return
        consumed = command is not None and decision.status.last_command_id == command.id
        # The status (what is wanted) is written before the data plane is asked for it, so that a route
        # is never ahead of a status that could be lost.
        if not await _apply(body, ref, decision, begun, consumed_command=consumed):
            return
        if not may_act() or _ended(ref.uid):
            return
        try:
            router = factory.router_for(spec.traffic.provider)
            await lanes.in_thread(
                router.set_weights, ref, spec, green=decision.green_weight, revision=decision.weights_revision
            )
        except Exception as error:  # noqa: BLE001 - counted by the next reconcile
            _failures[key] = f"setting weights: {_describe(error)}"
            kopf.event(body, type="Warning", reason="ReconcileError", message=_failures[key][:1000])
            log.warning("weights not written", error=_failures[key])
    except Exception as error:  # noqa: BLE001 - recorded and retried on the next tick, never silent
        await _leave_a_trace(body, ref, status, _describe(error))
    finally:
        structlog.contextvars.unbind_contextvars("rollout", "step", "phase")


async def _record_promotion(
    body: kopf.Body, ref: RolloutRef, spec: ModelRolloutSpec, status: ModelRolloutStatus, decision: machine.Decision
) -> bool:
    """A newly promoted stable model goes to blue's Deployment (its template and its record of the stable
    model) before the status says so: a status lost later is recovered from that record, and a deletion
    that starts now finds blue already being redeployed. False when that failed: the status is not written
    either, the failure is counted, and the next tick decides again."""
    stable = decision.status.stable
    if stable is None or stable.promoted_at is None or stable == status.stable:
        return True
    if _ended(ref.uid):
        return False  # the name may hold another object by now: nothing is applied for this one
    try:
        applied = await lanes.in_thread(
            resources.ensure,
            ref,
            _as_deployed(spec, decision.status, stable),
            stable=stable,
            green_replicas=spec.server.replicas,
            replace_green=False,
            router_image=ROUTER_IMAGE,
            router_replicas=ROUTER_REPLICAS,
        )
    except Exception as error:  # noqa: BLE001 - counted by the next reconcile, never a freeze
        key = _key(ref)
        _failures[key] = f"redeploying blue with the promoted model: {_describe(error)}"
        kopf.event(body, type="Warning", reason="ReconcileError", message=_failures[key][:1000])
        log.warning("blue not redeployed", error=_failures[key])
        return False
    SEEN.applied(ref.namespace, ref.name, applied)
    return True


async def _leave_a_trace(body: kopf.Body, ref: RolloutRef, status: ModelRolloutStatus, error: str) -> None:
    """An unexpected failure (a bug, not a state the machine knows): counted in status and posted as an
    Event, so that it is seen and not silent; the next tick tries again. It counts toward the same
    consecutive-error limit as any other failure: at the limit a canary in flight rolls back."""
    log.error("reconcile failed", error=error)
    limit = _error_limit(body)
    min_seconds = machine.error_seconds(limit, _analysis_interval(body))
    now = datetime.datetime.now(datetime.UTC)
    decision = machine.failed_reconcile(status, error, limit=limit, min_seconds=min_seconds, now=now)
    try:
        written = await _apply(body, ref, decision, time.monotonic())
        if written and decision.action is machine.Action.ROLL_BACK and not _ended(ref.uid):
            await lanes.in_thread(factory.all_to_blue_without_spec, ref, revision=decision.weights_revision)
    except Exception as failed:  # noqa: BLE001 - the Event and the log carry it
        log.error("status not written", error=_describe(failed))
    if not decision.recorded:
        kopf.event(body, type="Warning", reason="ReconcileError", message=error[:1000])


def _analysis_interval(body: kopf.Body) -> float:
    """spec.analysis.interval as written, or its default when it cannot be read."""
    raw = ((body.get("spec") or {}).get("analysis") or {}).get("interval")
    try:
        return parse_duration(raw) if raw is not None else AnalysisSpec().interval
    except (TypeError, ValueError):
        return AnalysisSpec().interval


def _error_limit(body: kopf.Body) -> int:
    """spec.analysis.consecutiveErrorLimit as written, or its default when it cannot be read."""
    raw = ((body.get("spec") or {}).get("analysis") or {}).get("consecutiveErrorLimit")
    return raw if isinstance(raw, int) and raw > 0 else AnalysisSpec().consecutive_error_limit


async def _gone(ref: RolloutRef) -> bool:
    """Whether the API server has no object ``ref.uid`` under its name, read again after a write answered 404:
    an API server may answer 404 for a custom object that exists (its caches refilling after a restart), and
    one such answer must not end a live rollout's loop. False when the read fails."""
    try:
        found = await lanes.in_thread(
            api.get_custom, constants.GROUP, constants.VERSION, constants.PLURAL, ref.namespace, ref.name
        )
    except Exception as error:  # noqa: BLE001 - not known to be gone: the loop goes on
        log.warning("rollout not read after a write answered 404", error=_describe(error))
        return False
    return found is None or (found.get("metadata") or {}).get("uid") != ref.uid


def _patch_status(ref: RolloutRef, patch: dict[str, Any]) -> None:
    """A merge patch of part of the status (a message): no precondition (the API server keeps an object's uid
    in a status merge patch rather than refuse it), so never the weights or the phase (``_write_status``)."""
    _wrote(
        ref,
        api.patch_custom_status(constants.GROUP, constants.VERSION, constants.PLURAL, ref.namespace, ref.name, patch),
    )


def _write_status(ref: RolloutRef, patch: dict[str, Any]) -> None:
    """The decided status, whole (``patch["status"]``, every field: null ones are left out), written only to
    the object ``ref.uid``: one deleted and made again under the name meanwhile refuses it (422), so a
    reconcile in flight for the old object never hands the new one its weights, phase or step."""
    stored = api.replace_custom_status(
        constants.GROUP,
        constants.VERSION,
        constants.PLURAL,
        ref.namespace,
        ref.name,
        without_nulls(patch["status"]),
        uid=ref.uid,
    )
    _wrote(ref, stored)


def _consume_command(ref: RolloutRef) -> None:
    """Remove the command annotation (and its id), only if it still says what was acted on (a JSON patch
    whose test fails with 422 when the user wrote another command meanwhile)."""
    annotations = ref.body.get("metadata", {}).get("annotations") or {}
    operations: list[dict[str, Any]] = [{"op": "test", "path": "/metadata/uid", "value": ref.uid}]
    for key in (constants.ANNOTATION_COMMAND, constants.ANNOTATION_COMMAND_ID):
        if key in annotations:
            path = f"/metadata/annotations/{key.replace('~', '~0').replace('/', '~1')}"
            operations += [{"op": "test", "path": path, "value": annotations[key]}, {"op": "remove", "path": path}]
    if len(operations) > 1:
        stored = api.custom().patch_namespaced_custom_object(
            constants.GROUP,
            constants.VERSION,
            ref.namespace,
            constants.PLURAL,
            ref.name,
            operations,
            _content_type="application/json-patch+json",
        )
        _wrote(ref, stored)


async def _reject(
    body: kopf.Body,
    ref: RolloutRef,
    status: ModelRolloutStatus,
    problem: str,
    report: AppliedWeights,
    now: datetime.datetime,
    begun: float,
) -> None:
    """A spec the operator cannot serve (``report``: what the data plane serves, read without the spec):
    reported; a canary in flight rolls back to the stable model."""
    decision = machine.reject(status, problem, machine.Observations(router=report), now)
    if await _apply(body, ref, decision, begun) and decision.green_weight == 0 and not _ended(ref.uid):
        await lanes.in_thread(factory.all_to_blue_without_spec, ref, revision=decision.weights_revision)


def _recovered(
    ref: RolloutRef, spec: ModelRolloutSpec, status: ModelRolloutStatus, now: datetime.datetime
) -> ModelRolloutStatus:
    """A status without ``stable`` (new, lost, or written by an operator that kept the promoted model on
    green) with what the owned Deployments say blue and green serve (see machine.recover)."""
    blue = resources.deployment(ref, constants.BLUE)
    green = resources.deployment(ref, constants.GREEN)
    green_runs = manifests.served_by(
        green, rollout=ref.name, namespace=ref.namespace, candidate=(spec.green.model, spec.server)
    )
    recorded = manifests.recorded_stable(blue)
    serving = machine.Serving()
    if recorded is not None:
        revision = serving_revision(recorded.model, recorded.server)
        version = recorded.model.version
        serving = machine.Serving(
            blue_runs_only_stable=resources.running_only(ref, constants.BLUE, revision=revision),
            blue_ready=resources.available(ref, constants.BLUE, version=version, revision=revision),
            green_runs_stable=manifests.template_revision(green) == revision,
        )
    report = factory.router_for(spec.traffic.provider).applied(ref, spec)
    return machine.recover(status, recorded=recorded, green_serves=green_runs, serving=serving, router=report, now=now)


def stable_of(spec: ModelRolloutSpec, status: ModelRolloutStatus) -> StableStatus:
    """What blue serves: the promoted model, or spec.blue before any promotion."""
    if status.stable is not None and status.stable.promoted_at is not None:
        return status.stable
    server = spec.server if status.stable is None else status.stable.server
    return StableStatus(model=spec.blue.model, server=server, revision="")


async def _gather(
    spec: ModelRolloutSpec,
    status: ModelRolloutStatus,
    ref: RolloutRef,
    body: kopf.Body,
    command: commands.Command | None,
    now: datetime.datetime,
    owned: OwnedObjects = LIVE,
    deployed: Versions | None = None,
) -> machine.Observations:
    stable = stable_of(spec, status)
    green_replicas, fingerprint = _owned(body, spec, status)
    key = _key(ref)
    refused = None
    if not _ensured_lately(key, fingerprint, deployed) and not _ended(ref.uid):
        replace_green = not _green_has_traffic_to_lose(spec, status)
        begun_apply = time.monotonic()  # a relist while it applies counts as after it
        try:
            applied = await lanes.in_thread(
                resources.ensure,
                ref,
                _as_deployed(spec, status, stable),
                stable=stable,
                green_replicas=green_replicas,
                replace_green=replace_green,
                router_image=ROUTER_IMAGE,
                router_replicas=ROUTER_REPLICAS,
            )
            SEEN.applied(ref.namespace, ref.name, applied)
            if replace_green:
                _ensured[key] = Ensured(fingerprint, begun_apply, applied)
        except (ApiException, ValueError) as error:
            # Refused (invalid, an admission webhook, a quota, a stable model older than blue's record):
            # counted, and the rest is still observed so that a rollback in progress can be confirmed.
            refused = f"applying the owned objects: {_describe(error)}"
            if isinstance(error, resources.StaleStable):
                _compared_with_record.discard(key)  # the next tick takes the later promotion from the record
    revisions = {
        constants.BLUE: serving_revision(stable.model, stable.server),
        constants.GREEN: steps.green_revision(spec),
    }
    blue_ready, green_ready = await asyncio.gather(
        lanes.in_thread(
            resources.available,
            ref,
            constants.BLUE,
            version=stable.model.version,
            revision=revisions[constants.BLUE],
            owned=owned,
        ),
        lanes.in_thread(
            resources.available,
            ref,
            constants.GREEN,
            version=spec.green.model.version,
            revision=revisions[constants.GREEN],
            owned=owned,
        ),
    )
    failures = []
    for colour, ready in ((constants.BLUE, blue_ready), (constants.GREEN, green_ready)):
        why = "" if ready else await lanes.in_thread(resources.failing_to_start, ref, colour, revisions[colour], owned)
        if why:
            failures.append(f"{colour}: {why}")
    analysis = None
    if steps.analysis_due(spec, status, now):
        started = time.monotonic()
        health = await lanes.in_thread(
            resources.pod_health, ref, constants.GREEN, revision=revisions[constants.GREEN], owned=owned
        )
        analysis = await run.analyse(
            await lanes.in_thread(provider_for, spec, ref.namespace),  # it may read a token Secret
            spec,
            namespace=ref.namespace,
            rollout=ref.name,
            now=now,
            canary_age_seconds=steps.seconds_since(status.started_at, now),
            blue_has_traffic=status.weights.blue > 0,
            pods=health,
            stable_version=stable.model.version,
            stable_golden_set=stable.model.golden_set is not None,
            window_seconds=steps.evidence_window(spec, status, now),
        )
        metrics.ANALYSIS_DURATION.observe(time.monotonic() - started)
    router = factory.router_for(spec.traffic.provider)
    report = await lanes.in_thread(router.applied, ref, spec)
    return machine.Observations(
        resources_ready=blue_ready and green_ready,
        blue_ready=blue_ready,
        start_failures="; ".join(failures),
        analysis=analysis,
        router=report,
        command=command,
        guard=guard_trip(ref, spec),
        error=refused,
    )


def guard_trip(ref: RolloutRef, spec: ModelRolloutSpec) -> GuardTrip | None:
    """The builtin router's guard trip, from its report, or from where an earlier router version wrote it
    (the gateway-api provider has no guard)."""
    if spec.traffic.provider != "builtin":
        return None
    return latest_trip(trip_of(ref.router_report, ref.uid), legacy_trip(ref.body))


def _as_deployed(spec: ModelRolloutSpec, status: ModelRolloutStatus, stable: StableStatus) -> ModelRolloutSpec:
    """The spec the owned objects are built from. While a promotion finishes, green keeps running the
    promoted model (it may carry all traffic) even when a newer green was given meanwhile."""
    if status.phase is not Phase.FINALIZING:
        return spec
    server = stable.server.model_copy(update={"replicas": spec.server.replicas})
    return spec.model_copy(update={"green": ColourSpec(model=stable.model), "server": server})


def _green_has_traffic_to_lose(spec: ModelRolloutSpec, status: ModelRolloutStatus) -> bool:
    """A new green must not replace the old one while the router may still send it traffic: green's
    Deployment is applied again once the router reports 0% green (while Finalizing, green is built from
    the stable model, which it already runs). A router that reports nothing usable (a route its Gateway
    has not accepted) may still serve the last weights it did accept, so it counts as traffic once any
    weights were asked for."""
    if status.phase is Phase.FINALIZING:
        return False
    changed = status.green_revision not in ("", steps.green_revision(spec))
    moving = status.phase is Phase.PENDING and status.weights_confirmed_at is None
    unknown = status.applied_revision is None and status.weights.revision > 0
    return (changed or moving) and (status.weights.green > 0 or unknown or (status.applied_green_weight or 0) > 0)


def _owned(body: kopf.Body, spec: ModelRolloutSpec, status: ModelRolloutStatus) -> tuple[int, str]:
    """Green's replica count, and the fingerprint of the owned objects as they should be now."""
    scaled_down = status.phase is Phase.PROMOTED or (
        status.phase in (Phase.ROLLED_BACK, Phase.ABORTED) and spec.rollback.green != "keep"
    )
    green_replicas = 0 if scaled_down else spec.server.replicas
    stable = stable_of(spec, status)
    return green_replicas, f"{body['metadata'].get('generation')}/{green_replicas}/{stable.revision}"


def _ensured_lately(key: str, fingerprint: str, shown: Versions | None = None) -> bool:
    last, now = _ensured.get(key), time.monotonic()
    if ensure_due(last, fingerprint, shown, now, _relisted):
        if last is not None and last.fingerprint == fingerprint and last.applied is not None and shown is not None:
            changed = drifted(last.applied, shown, settled=now - last.at > SETTLE_SECONDS)
            if changed:
                log.info("owned objects changed by someone else: applied again", objects=changed)
        return False
    return True


def _resting(
    body: kopf.Body,
    spec: ModelRolloutSpec,
    status: ModelRolloutStatus,
    command: commands.Command | None,
    deployed: Versions | None = None,
) -> bool:
    """A settled rollout whose spec has not changed since it was reconciled, with no command waiting and its
    owned objects as they should be: no work (no reads, no writes) until those are due to be re-applied."""
    if status.phase not in SETTLED or command is not None or status.weights_confirmed_at is None:
        return False  # a settled phase whose weights the router has not confirmed yet is still watched
    if status.observed_generation != body["metadata"].get("generation"):
        return False
    return _ensured_lately(_body_key(body), _owned(body, spec, status)[1], deployed)


def _describe(error: BaseException) -> str:
    """One line for status and Events; for the API server, its own message (which names the object and the
    field it refused) rather than the HTTP headers."""
    if isinstance(error, ApiException) and error.body:
        try:
            message = json.loads(error.body).get("message")
        except (ValueError, AttributeError):
            message = None
        if message:
            return f"API server refused ({error.status} {error.reason}): {message[:800]}"
    text = str(error).strip().replace("\n", " ")
    return f"{type(error).__name__}: {text[:500]}"


async def _apply(
    body: kopf.Body, ref: RolloutRef, decision: machine.Decision, begun: float, *, consumed_command: bool = False
) -> bool:
    """Write the decided status (then, if a command was acted on, remove its annotation), post the Event.
    The operator writes these itself rather than through kopf's patch: a write that fails is counted by the
    next tick, whereas a failed kopf patch would stop the rollout's loop for good. False when the status
    could not be written."""
    decision.status.observed_generation = body["metadata"].get("generation") or 0
    wanted = decision.status.to_api()
    key = _key(ref)
    if not may_act():  # under leader election: the Lease went stale during this reconcile; write nothing
        log.warning("decision dropped: this replica's lease is not fresh")
        return False
    if consumed_command:
        # Removed before the status says it was acted on: a command is acted on at most once, even when
        # the operator stops between the two writes (then it is lost, and the Event below says so).
        try:
            await lanes.in_thread(_consume_command, ref)
        except Exception as error:  # noqa: BLE001 - not acted on; the next tick sees the command again
            _failures[key] = f"removing the command annotation: {_describe(error)}"
            kopf.event(body, type="Warning", reason="ReconcileError", message=_failures[key][:1000])
            return False
    try:
        if key in _unreadable:  # what could not be read goes, rather than be read again on the next tick
            await lanes.in_thread(_write_status, ref, {"status": wanted})
            _unreadable.discard(key)
        else:  # an unchanged status is not written again, nor one that only repeats its analysis round
            stored = dict(body.get("status") or {})
            # fields this version does not know (written by a newer one, or by a tool) are kept as they are
            desired = {**{k: v for k, v in stored.items() if k not in wanted}, **without_nulls(wanted)}
            analysis = decision.status.analysis
            if analysis is not None and repeats_stored_round(desired, stored):
                stored_time = str(stored["analysis"]["time"])
                _repeated_rounds[key] = (ref.uid, _resource_version(body), stored_time, analysis.time)
            elif desired != stored:
                await lanes.in_thread(_write_status, ref, {"status": desired})
    except Exception as error:  # noqa: BLE001 - counted by the next reconcile, never a freeze
        if isinstance(error, ApiException) and error.status == 404 and await _gone(ref):
            _end(ref.uid)  # gone, though no DELETED event said so: its loop ends, what it kept is forgotten
        _failures[key] = f"writing status: {_describe(error)}"
        if consumed_command:
            _failures[key] += f"; the command {decision.status.last_command_id!r} was not applied: give it again"
        kopf.event(body, type="Warning", reason="ReconcileError", message=_failures[key][:1000])
        log.warning("status not written", error=_failures[key])
        return False
    metrics.track_phase(_key(ref), decision.status.phase.value)
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
    return True


def _problem(error: Exception, root: str = "spec") -> str:
    if isinstance(error, ValidationError):
        return "; ".join(f"{root}.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()[:5])
    return str(error)


def forget(namespace: str, name: str, uid: str) -> None:
    """The object ``uid`` gone: what this module keeps of it in memory is dropped (handlers.forget)."""
    key = state_key(namespace, name, uid)
    metrics.track_phase(key, None)
    _ensured.pop(key, None)
    _failures.pop(key, None)
    _compared_with_record.discard(key)
    _unreadable.discard(key)
    _written.pop(key, None)
    _held.pop(key, None)
    _repeated_rounds.pop(key, None)
    _at_rest.discard(key)
