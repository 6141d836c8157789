"""The gateway-api provider: an HTTPRoute whose backendRefs weight the blue and green Services.

Works with any Gateway API implementation (Envoy Gateway, Istio, Cilium, NGINX Gateway Fabric...).
The route is created (owned by the ModelRollout) or, when one of that name exists, adopted: its original
``spec`` is saved as JSON in the annotation ``modelrollout.dev/adopted-spec``, then its rules are replaced
by one rule with the two weighted backends. ``finalize`` leaves every route at 100% blue; with the
deletion policy deleteAll an adopted route is put back as it was and a created one goes with the
ModelRollout, with keepStable both keep serving the stable model (see ``kept_patch``).

Confirmation. ``set_weights`` writes the weights and, in the annotation ``modelrollout.dev/weights-revision``,
the ``status.weights.revision`` they are for. ``applied`` reads the route back (``applied_of``, a pure
function): when a Gateway controller reports on the route (``status.parents``), the weights count only once
every parent has Accepted=True and ResolvedRefs=True with ``observedGeneration`` at the route's current
``metadata.generation``. When no controller sets any route status, the write is all there is to confirm:
``applied`` returns the written revision and weight with the note "the Gateway reports no route status".
"""

from __future__ import annotations

import json
from typing import Any

from modelrollout.api import constants
from modelrollout.api.spec import ModelRolloutSpec
from modelrollout.k8s import api, manifests
from modelrollout.routing.base import AppliedWeights, RolloutRef

GROUP, VERSION, PLURAL = "gateway.networking.k8s.io", "v1", "httproutes"

ANNOTATION_ADOPTED_SPEC = f"{constants.GROUP}/adopted-spec"
"""On a route the provider adopted (did not create): the route's ``spec`` before it was adopted, as JSON."""
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "modelrollout"
REQUIRED_CONDITIONS = ("Accepted", "ResolvedRefs")
NO_ROUTE_STATUS = "the Gateway reports no route status"


def route_name(rollout: RolloutRef, spec: ModelRolloutSpec) -> str:
    return spec.traffic.gateway_api.route_name or rollout.name


def route_labels(rollout: RolloutRef) -> dict[str, str]:
    """On every route the provider writes, adopted ones included: how it finds them without a spec."""
    return {LABEL_MANAGED_BY: MANAGED_BY, constants.LABEL_ROLLOUT: rollout.name}


FAULTS_PATH = "/v2/faults"
NOT_FORWARDED_RULE: dict[str, Any] = {"matches": [{"path": {"type": "PathPrefix", "value": FAULTS_PATH}}]}
"""A rule without backendRefs: the Gateway answers it itself (500 in the Gateway API's conformance) and
forwards nothing, so fault injection is never reachable through the Gateway, as through the builtin router.
A longer path match wins over the weighted rule's default ``/`` whatever the order of the rules."""


def weighted_rules(rollout: RolloutRef, spec: ModelRolloutSpec, *, green: int) -> list[dict[str, Any]]:
    port = spec.traffic.gateway_api.port
    return [
        {
            "backendRefs": [
                {"name": f"{rollout.name}-blue", "port": port, "weight": 100 - green},
                {"name": f"{rollout.name}-green", "port": port, "weight": green},
            ]
        },
        NOT_FORWARDED_RULE,
    ]


def build_route(
    rollout: RolloutRef, spec: ModelRolloutSpec, *, green: int, revision: int | None = None
) -> dict[str, Any]:
    """The HTTPRoute for ``green`` percent on green, asked for by weights revision ``revision`` (a pure
    function; without a revision the route claims none)."""
    metadata: dict[str, Any] = {
        "name": route_name(rollout, spec),
        "namespace": rollout.namespace,
        "labels": route_labels(rollout),
        "ownerReferences": [api.owner_reference(rollout)],
    }
    if revision is not None:
        metadata["annotations"] = {constants.ANNOTATION_WEIGHTS_REVISION: str(revision)}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "HTTPRoute",
        "metadata": metadata,
        "spec": {
            "parentRefs": spec.traffic.gateway_api.parent_refs,
            "rules": weighted_rules(rollout, spec, green=green),
        },
    }


def green_weight_of(route: dict[str, Any], rollout: RolloutRef) -> int | None:
    """Green's share in percent, from the route's backendRefs (None when they are not ours)."""
    weights = {
        ref.get("name"): int(ref.get("weight", 1))
        for rule in route.get("spec", {}).get("rules", [])
        for ref in rule.get("backendRefs", [])
    }
    blue, green = weights.get(f"{rollout.name}-blue"), weights.get(f"{rollout.name}-green")
    if blue is None or green is None:
        return None
    total = blue + green
    return round(100 * green / total) if total else None


def revision_of(route: dict[str, Any]) -> int | None:
    """The weights revision written on the route (None when missing or unreadable)."""
    text = (route.get("metadata", {}).get("annotations") or {}).get(constants.ANNOTATION_WEIGHTS_REVISION)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def created_by(route: dict[str, Any], rollout: RolloutRef) -> bool:
    """True for a route this rollout created (it owns it); False for one it adopted or has not touched."""
    return any(
        owner.get("kind") == constants.KIND and owner.get("name") == rollout.name
        for owner in route.get("metadata", {}).get("ownerReferences") or []
    )


def _parent_name(parent: dict[str, Any]) -> str:
    ref = parent.get("parentRef") or {}
    name = ref.get("name", "?")
    return f"{ref['namespace']}/{name}" if ref.get("namespace") else str(name)


def _parent_gaps(parent: dict[str, Any], generation: int | None) -> list[str]:
    """What keeps one parent's status from confirming the route at ``generation`` (empty: nothing)."""
    conditions = {c.get("type"): c for c in parent.get("conditions") or []}
    gaps = []
    for kind in REQUIRED_CONDITIONS:
        condition = conditions.get(kind)
        if condition is None:
            gaps.append(f"no {kind} condition")
        elif condition.get("status") != "True":
            reason = ": ".join(str(part) for part in (condition.get("reason"), condition.get("message")) if part)
            gaps.append(f"{kind}={condition.get('status')}" + (f" ({reason})" if reason else ""))
        else:
            observed = condition.get("observedGeneration")
            if generation is None or not isinstance(observed, int) or observed < generation:
                gaps.append(f"{kind} is for generation {observed}, the route is at generation {generation}")
    return gaps


def applied_of(route: dict[str, Any] | None, rollout: RolloutRef) -> AppliedWeights:
    """What an HTTPRoute confirms (a pure function of the route as read); see the module docstring."""
    if route is None:
        return AppliedWeights(revision=None, green=None, note="the HTTPRoute does not exist")
    green = green_weight_of(route, rollout)
    if green is None:
        return AppliedWeights(
            revision=None, green=None, note=f"the HTTPRoute has no backendRefs {rollout.name}-blue and -green"
        )
    revision = revision_of(route)
    if revision is None:
        return AppliedWeights(
            revision=None, green=None, note=f"the HTTPRoute has no {constants.ANNOTATION_WEIGHTS_REVISION} annotation"
        )
    parents = (route.get("status") or {}).get("parents") or []
    if not parents:
        return AppliedWeights(revision=revision, green=green, note=NO_ROUTE_STATUS)
    generation = route.get("metadata", {}).get("generation")
    gaps = [f"parent {_parent_name(parent)}: {gap}" for parent in parents for gap in _parent_gaps(parent, generation)]
    if gaps:
        return AppliedWeights(
            revision=None, green=None, note="the Gateway has not accepted the route: " + "; ".join(gaps)
        )
    return AppliedWeights(revision=revision, green=green, note=f"accepted by {len(parents)} Gateway parent(s)")


def blue_only_rules(route: dict[str, Any], rollout: RolloutRef) -> list[dict[str, Any]]:
    """The route's rules with this rollout's blue backend at 100 and green at 0, all else kept."""
    weights = {f"{rollout.name}-blue": 100, f"{rollout.name}-green": 0}
    return [
        {
            **rule,
            "backendRefs": [
                {**ref, "weight": weights[ref["name"]]} if ref.get("name") in weights else ref
                for ref in rule["backendRefs"]
            ],
        }
        if "backendRefs" in rule
        else rule
        for rule in route.get("spec", {}).get("rules", [])
    ]


def all_to_blue(rollout: RolloutRef, *, revision: int | None = None) -> None:
    """Every route of this rollout to 100% blue, found by label: for a spec that no longer parses (so its
    route name and port are unknown). With ``revision`` the routes say which weights revision asked for
    it; without, a route whose weights change claims no revision any more (its old one was for other
    weights)."""
    for route in api.list_custom(
        GROUP, VERSION, PLURAL, rollout.namespace, f"{constants.LABEL_ROLLOUT}={rollout.name}"
    ):
        if green_weight_of(route, rollout) == 0 and (revision is None or revision_of(route) == revision):
            continue
        patch = {
            "metadata": {
                "annotations": {constants.ANNOTATION_WEIGHTS_REVISION: None if revision is None else str(revision)}
            },
            "spec": {"rules": blue_only_rules(route, rollout)},
        }
        api.patch_custom(GROUP, VERSION, PLURAL, rollout.namespace, route["metadata"]["name"], patch)


def weights_patch(
    route: dict[str, Any], rollout: RolloutRef, spec: ModelRolloutSpec, *, green: int, revision: int
) -> dict[str, Any] | None:
    """The merge patch that gives an existing route these weights and this revision (a pure function;
    None when it already has them). A route this rollout did not create is adopted: its spec is saved
    first, and an existing managed-by label is kept (finalize restores the rest)."""
    labels = route.get("metadata", {}).get("labels") or {}
    annotations = route.get("metadata", {}).get("annotations") or {}
    adopting = not created_by(route, rollout) and ANNOTATION_ADOPTED_SPEC not in annotations
    wanted_labels = {
        key: value for key, value in route_labels(rollout).items() if key != LABEL_MANAGED_BY or key not in labels
    }
    rules = weighted_rules(rollout, spec, green=green)
    if (
        not adopting
        and green_weight_of(route, rollout) == green
        and revision_of(route) == revision
        and all(labels.get(key) == value for key, value in wanted_labels.items())
    ):
        return None
    metadata: dict[str, Any] = {
        "labels": wanted_labels,
        "annotations": {constants.ANNOTATION_WEIGHTS_REVISION: str(revision)},
    }
    if adopting:
        metadata["annotations"][ANNOTATION_ADOPTED_SPEC] = json.dumps(route.get("spec") or {}, sort_keys=True)
    patch: dict[str, Any] = {"metadata": metadata}
    if green_weight_of(route, rollout) != green or adopting:
        patch["spec"] = {"rules": rules}
        if spec.traffic.gateway_api.parent_refs:
            patch["spec"]["parentRefs"] = spec.traffic.gateway_api.parent_refs
    return patch


def restore_patch(route: dict[str, Any], rollout: RolloutRef) -> list[dict[str, Any]]:
    """The JSON patch that puts an adopted route back: its saved spec, its labels and annotations without
    ours; guarded by the route's resourceVersion (a pure function)."""
    metadata = route.get("metadata", {})
    original = json.loads(metadata["annotations"][ANNOTATION_ADOPTED_SPEC])
    ours = {ANNOTATION_ADOPTED_SPEC, constants.ANNOTATION_WEIGHTS_REVISION}
    annotations = {key: value for key, value in (metadata.get("annotations") or {}).items() if key not in ours}
    labels = {
        key: value
        for key, value in (metadata.get("labels") or {}).items()
        if key != constants.LABEL_ROLLOUT and not (key == LABEL_MANAGED_BY and value == MANAGED_BY)
    }
    return [
        {"op": "test", "path": "/metadata/resourceVersion", "value": metadata["resourceVersion"]},
        {"op": "add", "path": "/metadata/labels", "value": labels},
        {"op": "add", "path": "/metadata/annotations", "value": annotations},
        {"op": "add", "path": "/spec", "value": original},
    ]


ANNOTATION_PRE_ADOPTION_SPEC = f"{constants.GROUP}/pre-adoption-spec"
"""On an adopted route a keepStable deletion left on blue: the route's spec before it was adopted."""


def kept_patch(route: dict[str, Any], rollout: RolloutRef) -> dict[str, Any] | None:
    """The merge patch that leaves a route serving the stable model without the ModelRollout (a pure
    function; None when that is done): 100% blue, no weights revision, not owned by the rollout but
    labelled orphaned; an adopted route keeps its old spec as a record only, since it may send traffic
    to a model older than the stable one. Guarded by the route's resourceVersion."""
    metadata = route.get("metadata", {})
    annotations = metadata.get("annotations") or {}
    adopted = annotations.get(ANNOTATION_ADOPTED_SPEC)
    owners = metadata.get("ownerReferences") or []
    remaining = [owner for owner in owners if owner.get("uid") != rollout.uid]
    on_blue = green_weight_of(route, rollout) in (0, None)
    labelled = (metadata.get("labels") or {}).get(manifests.LABEL_ORPHANED) == "true"
    if (
        on_blue
        and adopted is None
        and constants.ANNOTATION_WEIGHTS_REVISION not in annotations
        and labelled
        and (len(remaining) == len(owners))
    ):
        return None
    new_annotations: dict[str, str | None] = {constants.ANNOTATION_WEIGHTS_REVISION: None}
    if adopted is not None:
        new_annotations |= {ANNOTATION_ADOPTED_SPEC: None, ANNOTATION_PRE_ADOPTION_SPEC: adopted}
    patch: dict[str, Any] = {
        "metadata": {
            "resourceVersion": metadata.get("resourceVersion"),
            "annotations": new_annotations,
            "labels": {manifests.LABEL_ORPHANED: "true"},
            "ownerReferences": remaining or None,
        }
    }
    if not on_blue:
        patch["spec"] = {"rules": blue_only_rules(route, rollout)}
    return patch


class GatewayApiRouter:
    def reconcile(self, rollout: RolloutRef, spec: ModelRolloutSpec) -> None:
        """Create the route at 100% blue when there is none (it claims no weights revision until
        set_weights writes one); an existing route is adopted by set_weights."""
        existing = api.get_custom(GROUP, VERSION, PLURAL, rollout.namespace, route_name(rollout, spec))
        if existing is None:
            route = build_route(rollout, spec, green=0, revision=None)
            api.create_custom(GROUP, VERSION, PLURAL, rollout.namespace, route)

    def set_weights(self, rollout: RolloutRef, spec: ModelRolloutSpec, *, green: int, revision: int) -> None:
        name = route_name(rollout, spec)
        existing = api.get_custom(GROUP, VERSION, PLURAL, rollout.namespace, name)
        if existing is None:
            route = build_route(rollout, spec, green=green, revision=revision)
            api.create_custom(GROUP, VERSION, PLURAL, rollout.namespace, route)
            return
        patch = weights_patch(existing, rollout, spec, green=green, revision=revision)
        if patch is not None:
            api.patch_custom(GROUP, VERSION, PLURAL, rollout.namespace, name, patch)

    def applied(self, rollout: RolloutRef, spec: ModelRolloutSpec) -> AppliedWeights:
        route = api.get_custom(GROUP, VERSION, PLURAL, rollout.namespace, route_name(rollout, spec))
        return applied_of(route, rollout)

    def finalize(self, rollout: RolloutRef, spec: ModelRolloutSpec, *, keep_stable: bool = False) -> None:
        """Without ``keep_stable`` (deleteAll) an adopted route gets its original spec back, without our
        labels and annotations, and a route this rollout created is left at 100% blue (it is deleted with
        the ModelRollout). With ``keep_stable`` every route stays at 100% blue and serving: a created one
        is released from the ModelRollout, an adopted one keeps its original spec only as a record
        (``kept_patch``). A route changed meanwhile makes the patch fail with 409/422 (raised: retry)."""
        name = route_name(rollout, spec)
        route = api.get_custom(GROUP, VERSION, PLURAL, rollout.namespace, name)
        if route is None:
            return
        if keep_stable:
            patch = kept_patch(route, rollout)
            if patch is not None:
                api.patch_custom(GROUP, VERSION, PLURAL, rollout.namespace, name, patch)
            return
        if ANNOTATION_ADOPTED_SPEC in (route.get("metadata", {}).get("annotations") or {}):
            api.custom().patch_namespaced_custom_object(
                GROUP,
                VERSION,
                rollout.namespace,
                PLURAL,
                name,
                restore_patch(route, rollout),
                _content_type="application/json-patch+json",
            )
            return
        if not created_by(route, rollout):
            return  # never adopted (no weights were set): nothing of ours on it
        if green_weight_of(route, rollout) != 0:
            patch = {
                "metadata": {"annotations": {constants.ANNOTATION_WEIGHTS_REVISION: None}},
                "spec": {"rules": blue_only_rules(route, rollout)},
            }
            api.patch_custom(GROUP, VERSION, PLURAL, rollout.namespace, name, patch)
