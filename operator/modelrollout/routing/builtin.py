"""The builtin router provider: the operator publishes weights in ``status.weights`` (``blue``, ``green`` and
``revision``, written with the rest of the status); the router applies them and, once its data plane serves
them, reports ``"<revision>/<green>"`` in the annotation ``modelrollout.dev/router-applied`` on the
ModelRollout (see model_server.router.watch)."""

from __future__ import annotations

from modelrollout.api import constants
from modelrollout.api.spec import ModelRolloutSpec
from modelrollout.routing.base import AppliedWeights, RolloutRef, parse_report


class BuiltinRouter:
    def reconcile(self, rollout: RolloutRef, spec: ModelRolloutSpec) -> None:
        """The router Deployment and Service are built with the model servers (k8s.manifests)."""

    def set_weights(self, rollout: RolloutRef, spec: ModelRolloutSpec, *, green: int, revision: int) -> None:
        """Nothing to write here: status.weights (green and revision), patched by the handler, is what the
        router watches."""

    def applied(self, rollout: RolloutRef, spec: ModelRolloutSpec) -> AppliedWeights:
        """The router's report from the ModelRollout as last read; without one, NOT_REPORTED."""
        annotations = rollout.body.get("metadata", {}).get("annotations") or {}
        return parse_report(annotations.get(constants.ANNOTATION_ROUTER_APPLIED))

    def finalize(self, rollout: RolloutRef, spec: ModelRolloutSpec, *, keep_stable: bool = False) -> None:
        """The router is owned by the ModelRollout and goes with it."""
