"""The builtin router provider: the operator publishes weights in ``status.weights`` (``blue``, ``green`` and
``revision``, written with the rest of the status); the router applies them and, once its data plane serves
them, reports ``"<revision>/<green>"`` in its own ConfigMap ``<rollout>-router-report`` (routing.report, written
by model_server.router.watch)."""

from __future__ import annotations

from modelrollout.api.spec import ModelRolloutSpec
from modelrollout.routing.base import AppliedWeights, RolloutRef
from modelrollout.routing.report import applied_for


class BuiltinRouter:
    def reconcile(self, rollout: RolloutRef, spec: ModelRolloutSpec) -> None:
        """The router Deployment and Service are built with the model servers (k8s.manifests)."""

    def set_weights(self, rollout: RolloutRef, spec: ModelRolloutSpec, *, green: int, revision: int) -> None:
        """Nothing to write here: status.weights (green and revision), patched by the handler, is what the
        router watches."""

    def applied(self, rollout: RolloutRef, spec: ModelRolloutSpec) -> AppliedWeights:
        """The routers' report as last seen (every router Pod that may be sent traffic must report the
        weights); without one, NOT_REPORTED."""
        return applied_for(rollout)

    def finalize(self, rollout: RolloutRef, spec: ModelRolloutSpec, *, keep_stable: bool = False) -> None:
        """The router is owned by the ModelRollout and goes with it."""
