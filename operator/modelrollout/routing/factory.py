"""The TrafficRouter for a provider name."""

from __future__ import annotations

import structlog
from kubernetes.client.exceptions import ApiException

from modelrollout.routing import gateway_api
from modelrollout.routing.base import RolloutRef, TrafficRouter
from modelrollout.routing.builtin import BuiltinRouter
from modelrollout.routing.gateway_api import GatewayApiRouter

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


def all_to_blue_without_spec(rollout: RolloutRef) -> None:
    """Traffic back on blue when the spec no longer parses and the provider is unknown: the builtin router
    follows status.weights (set to 100% blue by the operator); HTTPRoutes are found by their label.
    A failure is logged, not raised: the rollout must still be marked Failed."""
    try:
        gateway_api.all_to_blue(rollout)
    except ApiException as error:
        log.warning("routes not moved to blue", rollout=f"{rollout.namespace}/{rollout.name}", error=str(error))
