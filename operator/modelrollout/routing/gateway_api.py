"""The gateway-api provider: an HTTPRoute whose backendRefs weight the blue and green Services.

Works with any Gateway API implementation (Envoy Gateway, Istio, Cilium, NGINX Gateway Fabric...).
The route is created (owned by the ModelRollout) or, when one of that name exists, adopted: its rules
are replaced by one rule with the two weighted backends.
"""

from __future__ import annotations

from typing import Any

from modelrollout.api import constants
from modelrollout.api.spec import ModelRolloutSpec
from modelrollout.k8s import api
from modelrollout.routing.base import RolloutRef

GROUP, VERSION, PLURAL = "gateway.networking.k8s.io", "v1", "httproutes"


def route_name(rollout: RolloutRef, spec: ModelRolloutSpec) -> str:
    return spec.traffic.gateway_api.route_name or rollout.name


def route_labels(rollout: RolloutRef) -> dict[str, str]:
    """On every route the provider writes, adopted ones included: how it finds them without a spec."""
    return {"app.kubernetes.io/managed-by": "modelrollout", constants.LABEL_ROLLOUT: rollout.name}


def build_route(rollout: RolloutRef, spec: ModelRolloutSpec, *, green: int) -> dict[str, Any]:
    """The HTTPRoute for ``green`` percent on green (a pure function)."""
    port = spec.traffic.gateway_api.port
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "HTTPRoute",
        "metadata": {
            "name": route_name(rollout, spec),
            "namespace": rollout.namespace,
            "labels": route_labels(rollout),
            "ownerReferences": [api.owner_reference(rollout)],
        },
        "spec": {
            "parentRefs": spec.traffic.gateway_api.parent_refs,
            "rules": [
                {
                    "backendRefs": [
                        {"name": f"{rollout.name}-blue", "port": port, "weight": 100 - green},
                        {"name": f"{rollout.name}-green", "port": port, "weight": green},
                    ]
                }
            ],
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


def blue_only_rules(route: dict[str, Any], rollout: RolloutRef) -> list[dict[str, Any]]:
    """The route's rules with this rollout's blue backend at 100 and green at 0, all else kept."""
    weights = {f"{rollout.name}-blue": 100, f"{rollout.name}-green": 0}
    return [
        {
            **rule,
            "backendRefs": [
                {**ref, "weight": weights[ref["name"]]} if ref.get("name") in weights else ref
                for ref in rule.get("backendRefs", [])
            ],
        }
        for rule in route.get("spec", {}).get("rules", [])
    ]


def all_to_blue(rollout: RolloutRef) -> None:
    """Every route of this rollout to 100% blue, found by label: for a spec that no longer parses (so its
    route name and port are unknown)."""
    for route in api.list_custom(
        GROUP, VERSION, PLURAL, rollout.namespace, f"{constants.LABEL_ROLLOUT}={rollout.name}"
    ):
        if green_weight_of(route, rollout) != 0:
            rules = blue_only_rules(route, rollout)
            api.patch_custom(
                GROUP, VERSION, PLURAL, rollout.namespace, route["metadata"]["name"], {"spec": {"rules": rules}}
            )


class GatewayApiRouter:
    def reconcile(self, rollout: RolloutRef, spec: ModelRolloutSpec) -> None:
        existing = api.get_custom(GROUP, VERSION, PLURAL, rollout.namespace, route_name(rollout, spec))
        if existing is None:
            api.create_custom(GROUP, VERSION, PLURAL, rollout.namespace, build_route(rollout, spec, green=0))

    def set_weights(self, rollout: RolloutRef, spec: ModelRolloutSpec, *, green: int) -> None:
        wanted = build_route(rollout, spec, green=green)
        existing = api.get_custom(GROUP, VERSION, PLURAL, rollout.namespace, route_name(rollout, spec))
        if existing is None:
            api.create_custom(GROUP, VERSION, PLURAL, rollout.namespace, wanted)
            return
        if green_weight_of(existing, rollout) == green:
            return
        patch: dict[str, Any] = {
            "metadata": {"labels": route_labels(rollout)},
            "spec": {"rules": wanted["spec"]["rules"]},
        }
        if wanted["spec"]["parentRefs"]:
            patch["spec"]["parentRefs"] = wanted["spec"]["parentRefs"]
        api.patch_custom(GROUP, VERSION, PLURAL, rollout.namespace, route_name(rollout, spec), patch)

    def applied_green_weight(self, rollout: RolloutRef, spec: ModelRolloutSpec) -> int | None:
        existing = api.get_custom(GROUP, VERSION, PLURAL, rollout.namespace, route_name(rollout, spec))
        return None if existing is None else green_weight_of(existing, rollout)

    def finalize(self, rollout: RolloutRef, spec: ModelRolloutSpec) -> None:
        self.set_weights(rollout, spec, green=0)
