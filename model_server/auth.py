"""Bearer tokens: the fault-injection endpoint's and the feedback token the model servers and the router share."""

from __future__ import annotations

import hmac


def bearer_matches(token: str | None, authorization: str | None) -> bool:
    """Whether an ``Authorization`` header is ``Bearer <token>`` (compared in constant time). No token
    configured admits nobody: the caller decides whether that means the endpoint is open or closed."""
    if not token or not authorization:
        return False
    scheme, _, presented = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), token.encode())
