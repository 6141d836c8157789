"""The builtin router provider: the operator publishes weights in ``status.weights`` (written with the
rest of the status), the router applies them and reports back in an annotation on the ModelRollout."""

from __future__ import annotations

from modelrollout.api import constants
from modelrollout.api.spec import ModelRolloutSpec
from modelrollout.routing.base import RolloutRef


class BuiltinRouter:
    def reconcile(self, rollout: RolloutRef, spec: ModelRolloutSpec) -> None:
        """The router Deployment and Service are built with the model servers (k8s.manifests)."""

    def set_weights(self, rollout: RolloutRef, spec: ModelRolloutSpec, *, green: int) -> None:
        """Nothing to write here: status.weights, patched by the handler, is what the router watches."""

    def applied_green_weight(self, rollout: RolloutRef, spec: ModelRolloutSpec) -> int | None:
        annotations = rollout.body.get("metadata", {}).get("annotations") or {}
        reported = annotations.get(constants.ANNOTATION_APPLIED_WEIGHT)
        try:
            return int(reported) if reported is not None else None
        except ValueError:
            return None

    def finalize(self, rollout: RolloutRef, spec: ModelRolloutSpec) -> None:
        """The router is owned by the ModelRollout and goes with it."""
