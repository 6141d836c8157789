"""What deleting a ModelRollout does. The operator's finalizer (``handlers.deleted``) runs ``finalize``
until it returns; only then does the API server remove the object and garbage collection its dependents.

``spec.deletionPolicy``:

- ``keepStable`` (the default, and the policy whenever the spec no longer parses): all traffic moves to
  blue, which serves the stable model, and the finalizer waits until the router confirms it
  (``spec.traffic.confirmDeadline`` at most, counted from the deletion; not at all when blue serves
  nothing). Then blue's Deployment and Service and the builtin router's objects are released from the
  ModelRollout, so garbage collection keeps them (labelled ``modelrollout.dev/orphaned=true``), and
  green's Deployment and Service are deleted. While a promotion hands back to blue (green runs the
  promoted model, blue not yet), the deletion first waits for blue to serve it. The gateway-api provider's
  HTTPRoute stays at 100% blue: a route it created is released like blue, an adopted one is not given its
  old spec back (that may route to an older model; the old spec stays in the annotation
  ``modelrollout.dev/pre-adoption-spec``).
- ``deleteAll``: adopted HTTPRoutes are restored, and garbage collection removes everything else.

Every step leaves an Event. Each step is idempotent: one that must wait raises ``kopf.TemporaryError``
and kopf runs ``finalize`` again with the object as it is then.

Only background cascading deletion (kubectl's default) lets keepStable keep anything: with
``--cascade=foreground`` garbage collection deletes the owned objects before the finalizer can release them.
"""

from __future__ import annotations

import datetime
import enum
from collections.abc import Callable, Mapping
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from modelrollout.api import constants
from modelrollout.api.spec import ModelRolloutSpec, TrafficSpec, serving_revision
from modelrollout.api.status import StableStatus, Weights
from modelrollout.k8s import api, manifests, resources
from modelrollout.routing import factory
from modelrollout.routing.base import AppliedWeights, RolloutRef, format_report
from modelrollout.routing.report import applied_for, report_name

KEEP_STABLE = "keepStable"
DELETE_ALL = "deleteAll"

EventPoster = Callable[[str, str, str], None]
"""Posts an Event on the ModelRollout: (type "Normal" or "Warning", reason, message)."""

RETRY_SECONDS = 1.0
"""How soon a waiting step looks again."""
RETRY_AFTER_ERROR_SECONDS = 5.0
"""How soon a step that failed on an API error tries again."""


def rollout_ref(
    body: Mapping[str, Any],
    router_report: Mapping[str, str] | None = None,
    routers: Callable[[], Mapping[str, bool]] | None = None,
) -> RolloutRef:
    metadata = body["metadata"]
    return RolloutRef(
        namespace=metadata["namespace"],
        name=metadata["name"],
        uid=metadata["uid"],
        body=dict(body),
        router_report=router_report,
        routers=routers,
    )


def spec_of(body: Mapping[str, Any]) -> ModelRolloutSpec | None:
    """The spec, or None when it no longer parses (the policy is then keepStable)."""
    try:
        return ModelRolloutSpec.model_validate(dict(body.get("spec") or {}))
    except ValidationError:
        return None


def policy_of(spec: ModelRolloutSpec | None) -> str:
    return spec.deletion_policy if spec is not None else KEEP_STABLE


def since_deletion(body: Mapping[str, Any], now: datetime.datetime) -> float:
    """Seconds since the object was marked for deletion (0 when it is not)."""
    stamp = body.get("metadata", {}).get("deletionTimestamp")
    if not stamp:
        return 0.0
    began = datetime.datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    return max(0.0, (now - began).total_seconds())


class Confirmation(enum.Enum):
    """Where the move of all traffic to blue stands, before the stable objects are released."""

    CONFIRMED = "confirmed"
    """The router reports 100% blue for the revision that asked for it."""
    BLUE_NOT_SERVING = "blue not serving"
    """Blue has no ready replica: there is nothing to move traffic to, so nothing to wait for."""
    EXPIRED = "expired"
    """No confirmation within spec.traffic.confirmDeadline: go on, traffic may still reach green."""
    WAIT = "wait"


def confirmation(
    *, report: AppliedWeights, revision: int, blue_serving: bool, elapsed: float, deadline: float
) -> Confirmation:
    """Whether to go on with the deletion, and why (a pure function)."""
    if report.confirms(revision=revision, green=0):
        return Confirmation.CONFIRMED
    if not blue_serving:
        return Confirmation.BLUE_NOT_SERVING
    if elapsed >= deadline:
        return Confirmation.EXPIRED
    return Confirmation.WAIT


def finalize(
    body: Mapping[str, Any],
    *,
    post: EventPoster,
    router_report: Mapping[str, str] | None = None,
    routers: Callable[[], Mapping[str, bool]] | None = None,
    now: datetime.datetime | None = None,
) -> None:
    """Carry out spec.deletionPolicy for the ModelRollout ``body`` (as last read), with the builtin router's
    report as last seen (routing.report) and ``routers``, its live Pods (RolloutRef.routers). Returns when the
    object may go; raises ``kopf.TemporaryError`` while a step must wait or retry."""
    rollout = rollout_ref(body, router_report, routers)
    spec = spec_of(body)
    elapsed = since_deletion(body, now or datetime.datetime.now(datetime.UTC))
    deadline = (spec.traffic if spec is not None else TrafficSpec()).confirm_deadline
    if policy_of(spec) == DELETE_ALL:
        if spec is not None and spec.traffic.provider == "gateway-api":
            _finalize_routes(rollout, spec, post=post, elapsed=elapsed, deadline=deadline)
        post(
            "Normal",
            "DeletingAll",
            "deletionPolicy deleteAll: garbage collection removes the model servers, their Services and the router",
        )
        return
    _wait_for_stable_on_blue(rollout, post=post)
    if spec is None:
        post("Warning", "KeepingStable", "the spec no longer parses: deleting with deletionPolicy keepStable")
        factory.all_to_blue_without_spec(rollout)  # HTTPRoutes found by their label; failures are logged
    if spec is not None and spec.traffic.provider == "gateway-api":
        _finalize_routes(rollout, spec, post=post, elapsed=elapsed, deadline=deadline, keep_stable=True)
    else:
        _all_traffic_to_blue(rollout, post=post, elapsed=elapsed, deadline=deadline)
    _keep_stable(rollout, post=post)
    _delete_candidate(rollout, post=post)


def promoted_model_only_on_green(status: Mapping[str, Any], blue_serves: Callable[[StableStatus], bool]) -> str:
    """The version of the promoted model when green has traffic and is the only colour that runs it (a
    promotion still handing back to blue), else "" (a pure function of the status, given whether blue
    serves a model). Moving traffic to blue then would send users back to the older model."""
    stable_raw, weights = status.get("stable"), status.get("weights") or {}
    if status.get("phase") != "Finalizing" or not isinstance(stable_raw, dict) or not weights.get("green"):
        return ""
    stable = StableStatus.model_validate(stable_raw)
    if stable.promoted_at is None or blue_serves(stable):
        return ""
    return stable.model.version


def _wait_for_stable_on_blue(rollout: RolloutRef, *, post: EventPoster) -> None:
    """While a promotion hands back to blue, the deletion waits for blue to run the promoted model (it
    does not wait for a rollout that is not promoting: blue then serves the stable model already)."""

    def blue_serves(stable: StableStatus) -> bool:
        revision = serving_revision(stable.model, stable.server)
        return resources.available(rollout, constants.BLUE, version=stable.model.version, revision=revision)

    version = promoted_model_only_on_green(rollout.body.get("status") or {}, blue_serves)
    if version:
        message = (
            f"green runs the promoted model {version}, blue does not yet: traffic stays on green until blue "
            f"serves it (set spec.deletionPolicy to deleteAll to delete now)"
        )
        post("Warning", "WaitingForStable", message)
        raise kopf.TemporaryError(message, delay=RETRY_AFTER_ERROR_SECONDS)


def _finalize_routes(
    rollout: RolloutRef,
    spec: ModelRolloutSpec,
    *,
    post: EventPoster,
    elapsed: float,
    deadline: float,
    keep_stable: bool = False,
) -> None:
    """The gateway-api provider puts its routes back on blue; keepStable keeps them there (released from
    the ModelRollout), deleteAll restores adopted ones."""
    try:
        factory.router_for("gateway-api").finalize(rollout, spec, keep_stable=keep_stable)
    except ApiException as error:
        problem = f"HTTPRoute {spec.traffic.gateway_api.route_name or rollout.name}: {error.status} {error.reason}"
        if elapsed < deadline:
            post("Warning", "RoutesNotFinalized", f"{problem}; trying again")
            raise kopf.TemporaryError(problem, delay=RETRY_AFTER_ERROR_SECONDS) from error
        post(
            "Warning",
            "RoutesNotFinalized",
            f"{problem}; gave up after confirmDeadline {deadline:g}s: traffic may still reach green",
        )
        return
    if keep_stable:
        post("Normal", "RoutesFinalized", "HTTPRoute traffic on blue, kept serving the stable model")
    else:
        post("Normal", "RoutesFinalized", "HTTPRoute traffic on blue; an adopted route is restored")


def _all_traffic_to_blue(rollout: RolloutRef, *, post: EventPoster, elapsed: float, deadline: float) -> None:
    """The builtin router follows status.weights and reports ``"<revision>/<green>"`` once it serves them."""
    raw = (rollout.body.get("status") or {}).get("weights")
    weights = Weights.model_validate(raw) if isinstance(raw, dict) else None
    if weights is not None and weights.blue == 100 and weights.green == 0:
        revision = weights.revision
    else:
        revision = (weights.revision if weights is not None else 0) + 1
        _patch_status(rollout, {"weights": Weights(blue=100, green=0, revision=revision).model_dump(by_alias=True)})
        post("Normal", "TrafficToStable", f"all traffic to blue (weights revision {revision}) before the deletion")
    report = applied_for(rollout)
    blue = api.read("Deployment", rollout.namespace, f"{rollout.name}-{constants.BLUE}")
    blue_serving = bool(blue and ((blue.get("status") or {}).get("readyReplicas") or 0) > 0)
    outcome = confirmation(
        report=report, revision=revision, blue_serving=blue_serving, elapsed=elapsed, deadline=deadline
    )
    wanted = format_report(revision=revision, green=0)
    if outcome is Confirmation.CONFIRMED:
        post("Normal", "TrafficConfirmed", f"the router serves 100% blue (report {wanted})")
    elif outcome is Confirmation.BLUE_NOT_SERVING:
        post("Warning", "StableNotServing", "blue has no ready replica: not waiting for the router to confirm")
    elif outcome is Confirmation.EXPIRED:
        post(
            "Warning",
            "TrafficUnconfirmed",
            f"the router did not report {wanted} within confirmDeadline {deadline:g}s "
            f"(it reports {_described(report)}): traffic may still reach green, which is deleted now",
        )
    else:
        raise kopf.TemporaryError(
            f"waiting for the router to report {wanted} (it reports {_described(report)})", delay=RETRY_SECONDS
        )


def _described(report: AppliedWeights) -> str:
    if report.revision is None:
        return report.note or "nothing"
    return format_report(revision=report.revision, green=report.green or 0)


def _patch_status(rollout: RolloutRef, status: dict[str, Any]) -> None:
    try:
        api.patch_custom_status(
            constants.GROUP,
            constants.VERSION,
            constants.PLURAL,
            rollout.namespace,
            rollout.name,
            {"status": status},
        )
    except ApiException as error:
        raise kopf.TemporaryError(f"status not written: {error.status} {error.reason}", delay=RETRY_SECONDS) from error


def stable_objects(rollout: str) -> list[tuple[str, str]]:
    """(kind, name) of what keepStable keeps: blue, the builtin router with its account, role, report and
    disruption budget, and the feedback Secret (without it their Pods would refuse feedback once restarted)."""
    blue, router = f"{rollout}-{constants.BLUE}", f"{rollout}-{manifests.ROUTER}"
    return [
        ("Secret", manifests.feedback_secret_name(rollout)),
        ("Deployment", blue),
        ("Service", blue),
        ("Deployment", router),
        ("Service", router),
        ("ServiceAccount", router),
        ("Role", router),
        ("RoleBinding", router),
        ("ConfigMap", report_name(rollout)),
        ("PodDisruptionBudget", router),
    ]


def _keep_stable(rollout: RolloutRef, *, post: EventPoster) -> None:
    kept = []
    for kind, name in stable_objects(rollout.name):
        try:
            live = api.read(kind, rollout.namespace, name)
            patch = manifests.released(live, rollout.uid) if live is not None else None
            if patch is not None:
                api.patch(kind, rollout.namespace, name, patch)
                kept.append(f"{kind}/{name}")
        except ApiException as error:
            problem = f"{kind} {name} not released: {error.status} {error.reason}"
            post("Warning", "StableNotKept", f"{problem}; trying again")
            raise kopf.TemporaryError(problem, delay=RETRY_SECONDS) from error
    if kept:
        post(
            "Normal",
            "StableKept",
            f"deletionPolicy keepStable: {', '.join(kept)} keep serving without the ModelRollout "
            f"(labelled {manifests.LABEL_ORPHANED}=true)",
        )


def _delete_candidate(rollout: RolloutRef, *, post: EventPoster) -> None:
    deleted = []
    for kind in ("Deployment", "Service"):
        name = f"{rollout.name}-{constants.GREEN}"
        try:
            if api.delete(kind, rollout.namespace, name):
                deleted.append(f"{kind}/{name}")
        except ApiException as error:
            problem = f"{kind} {name} not deleted: {error.status} {error.reason}"
            post("Warning", "CandidateNotDeleted", f"{problem}; trying again")
            raise kopf.TemporaryError(problem, delay=RETRY_AFTER_ERROR_SECONDS) from error
    if deleted:
        post("Normal", "CandidateDeleted", f"deleted {', '.join(deleted)}")
