"""Bearer tokens: the fault-injection endpoint's and the feedback token the model servers and the router share."""

from __future__ import annotations

import hmac


def bearer_matches(token: str | None, authorization: str | None) -> bool:
    """Whether an ``Authorization`` header is ``Bearer <token>`` (compared in constant time). No token
    configured admits nobody: the caller decides whether that means the endpoint is open or closed."""
    expected = (token or "").strip()  # a Secret made from a file often ends in a newline
    if not expected or not authorization:
        return False
    scheme, _, presented = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), expected.encode())


def feedback_refusal(*, required: bool, token: str | None, authorization: str | None) -> tuple[int, str] | None:
    """Why feedback is refused, as (status, message), or None when it is taken (a pure function).

    ``required``: the operator asked for a token. Without one (its Secret was missing when the process
    started, or holds an empty token) feedback is refused with 503 rather than taken from anyone: labels
    decide the accuracy gate. Inference never depends on it."""
    if not required and not token:
        return None
    if not (token or "").strip():
        return 503, "feedback is closed: no feedback token was configured (the rollout's Secret <name>-feedback)"
    if not bearer_matches(token, authorization):
        return 401, "feedback needs Authorization: Bearer <the rollout's feedback token>"
    return None
