"""The TrafficRouter for a provider name."""

from __future__ import annotations

from modelrollout.routing.base import TrafficRouter
from modelrollout.routing.builtin import BuiltinRouter
from modelrollout.routing.gateway_api import GatewayApiRouter

PROVIDERS: dict[str, type[BuiltinRouter] | type[GatewayApiRouter]] = {
    "builtin": BuiltinRouter,
    "gateway-api": GatewayApiRouter,
}


def router_for(provider: str) -> TrafficRouter:
    try:
        return PROVIDERS[provider]()
    except KeyError:
        raise ValueError(f"spec.traffic.provider: unknown provider {provider!r}; valid: {sorted(PROVIDERS)}") from None
