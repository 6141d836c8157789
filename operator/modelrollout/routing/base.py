"""The TrafficRouter interface: one implementation per routing technology, chosen by spec.traffic.provider.

Like Flagger's router interface: reconcile the routing objects, set and read the weights, finalize.
Reading returns None where a provider cannot tell what is applied ("unknown", as in Argo Rollouts);
the state machine then does not wait for a confirmation it can never get.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from modelrollout.api.spec import ModelRolloutSpec


@dataclass(frozen=True)
class RolloutRef:
    namespace: str
    name: str
    uid: str
    body: dict[str, Any]
    """The ModelRollout as last read (metadata, spec, status)."""


class TrafficRouter(Protocol):
    def reconcile(self, rollout: RolloutRef, spec: ModelRolloutSpec) -> None:
        """Create or adopt whatever routes traffic for this rollout (idempotent)."""
        ...

    def set_weights(self, rollout: RolloutRef, spec: ModelRolloutSpec, *, green: int) -> None:
        """Ask for ``green`` percent of traffic on green, the rest on blue (idempotent)."""
        ...

    def applied_green_weight(self, rollout: RolloutRef, spec: ModelRolloutSpec) -> int | None:
        """The green weight in effect, or None when this provider cannot tell."""
        ...

    def finalize(self, rollout: RolloutRef, spec: ModelRolloutSpec) -> None:
        """Leave traffic on blue and release what reconcile created (owner references do the rest)."""
        ...
