"""The TrafficRouter for a provider name."""

from __future__ import annotations

import structlog
from kubernetes.client.exceptions import ApiException

from modelrollout.api import constants
from modelrollout.k8s import api
from modelrollout.routing import gateway_api
from modelrollout.routing.base import NOT_REPORTED, AppliedWeights, RolloutRef, TrafficRouter
from modelrollout.routing.builtin import BuiltinRouter
from modelrollout.routing.gateway_api import GatewayApiRouter
from modelrollout.routing.report import applied_for

PROVIDERS: dict[str, type[BuiltinRouter] | type[GatewayApiRouter]] = {
    "builtin": BuiltinRouter,
    "gateway-api": GatewayApiRouter,
}
log = structlog.get_logger(__name__)


def router_for(provider: str) -> TrafficRouter:
    try:
        return PROVIDERS[provider]()
    except KeyError:
        raise ValueError(f"spec.traffic.provider: unknown provider {provider!r}; valid: {sorted(PROVIDERS)}") from None


def all_to_blue_without_spec(rollout: RolloutRef, *, revision: int | None = None) -> None:
    """Traffic back on blue when the spec no longer parses and the provider is unknown: the builtin router
    follows status.weights (set to 100% blue by the operator); HTTPRoutes are found by their label and
    marked with the weights ``revision``. A failure is logged, not raised: the rejection must still be
    recorded (and the next tick tries again)."""
    try:
        gateway_api.all_to_blue(rollout, revision=revision)
    except Exception as error:  # noqa: BLE001 - any failure (API refusal, connection) is logged, never raised
        log.warning("routes not moved to blue", rollout=f"{rollout.namespace}/{rollout.name}", error=str(error))


def applied_without_spec(rollout: RolloutRef) -> AppliedWeights:
    """What the data plane reports when the spec cannot be read: the builtin router's report, or the one
    HTTPRoute labelled for this rollout (NOT_REPORTED when there are none or several)."""
    provider = ((rollout.body.get("spec") or {}).get("traffic") or {}).get("provider", "builtin")
    if provider != "gateway-api":
        return applied_for(rollout)
    try:
        routes = api.list_custom(
            gateway_api.GROUP,
            gateway_api.VERSION,
            gateway_api.PLURAL,
            rollout.namespace,
            f"{constants.LABEL_ROLLOUT}={rollout.name}",
        )
    except ApiException as error:
        return AppliedWeights(revision=None, green=None, note=f"routes unreadable: {error.reason}")
    return gateway_api.applied_of(routes[0], rollout) if len(routes) == 1 else NOT_REPORTED
