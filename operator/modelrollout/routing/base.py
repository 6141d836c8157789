"""The TrafficRouter interface: one implementation per routing technology, chosen by spec.traffic.provider.

Like Flagger's router interface: reconcile the routing objects, set and read the weights, finalize.
Weights are asked for with a revision (``status.weights.revision``, raised whenever the wanted weights
change) and count as applied only when the provider reports that same revision and weight back from
the data plane, so a stale or half-done report can never confirm a step, a promotion or a rollback.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
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
    router_report: Mapping[str, str] | None = None
    """The builtin router's report (the data of its ConfigMap, routing.report) as last seen; None: none."""
    routers: Callable[[], Mapping[str, bool]] | None = None
    """The builtin router's Pods that serve or may serve once their container is back (not terminating, not
    finished), by name, with whether each is Ready; read when called, from the watches. None: not known, and
    then every router with an entry in the report must agree."""


@dataclass(frozen=True)
class AppliedWeights:
    """What the data plane reports it serves: the revision of the weights and green's percent.

    ``revision`` None means nothing usable was reported (no report yet, a report of another format, a
    route whose Gateway has not accepted it): never a confirmation.
    """

    revision: int | None
    green: int | None
    note: str = ""
    """How the report was obtained, for status messages (e.g. "the Gateway sets no route status")."""

    def confirms(self, *, revision: int, green: int) -> bool:
        return self.revision == revision and self.green == green


NOT_REPORTED = AppliedWeights(revision=None, green=None, note="no report from the router")


def parse_report(text: str | None) -> AppliedWeights:
    """``"<revision>/<green>"`` (the builtin router's report) -> AppliedWeights; anything else is
    NOT_REPORTED."""
    if not text:
        return NOT_REPORTED
    revision, _, green = text.partition("/")
    try:
        return AppliedWeights(revision=int(revision), green=int(green))
    except ValueError:
        return AppliedWeights(revision=None, green=None, note=f"unreadable router report {text!r}")


def format_report(*, revision: int, green: int) -> str:
    return f"{revision}/{green}"


class TrafficRouter(Protocol):
    def reconcile(self, rollout: RolloutRef, spec: ModelRolloutSpec) -> None:
        """Create or adopt whatever routes traffic for this rollout (idempotent)."""
        ...

    def set_weights(self, rollout: RolloutRef, spec: ModelRolloutSpec, *, green: int, revision: int) -> None:
        """Ask for ``green`` percent of traffic on green, the rest on blue, as weights revision
        ``revision`` (idempotent)."""
        ...

    def applied(self, rollout: RolloutRef, spec: ModelRolloutSpec) -> AppliedWeights:
        """What the data plane reports it serves (NOT_REPORTED when it reports nothing usable)."""
        ...

    def finalize(self, rollout: RolloutRef, spec: ModelRolloutSpec, *, keep_stable: bool = False) -> None:
        """Leave traffic on the stable model; with ``keep_stable`` keep what routes it serving without the
        ModelRollout, else restore what reconcile adopted (what it created goes with the rollout)."""
        ...
