"""Names shared by the operator, the router and the model server: API group, labels, annotations."""

from __future__ import annotations

GROUP = "modelrollout.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ModelRollout"
PLURAL = "modelrollouts"
SHORT_NAME = "mro"

BLUE = "blue"
GREEN = "green"
COLOURS = (BLUE, GREEN)
ROUTER = "router"
"""The colour label of the builtin router's objects (``<rollout>-router``)."""
OWNED_COLOURS = (BLUE, GREEN, ROUTER)
"""Whose Deployments and pods a reconcile reads (k8s.owned): the model servers' and the builtin router's."""

LABEL_ROLLOUT = f"{GROUP}/rollout"
LABEL_COLOUR = f"{GROUP}/colour"
LABEL_MODEL = f"{GROUP}/model"
LABEL_VERSION = f"{GROUP}/version"
LABEL_REVISION = f"{GROUP}/revision"
"""On model-server pods: a hash of the model and server settings they run (see spec.serving_revision), so
readiness means "runs this exactly", also when only settings changed and the version did not."""

ANNOTATION_COMMAND = f"{GROUP}/command"
"""Manual control: ``kubectl annotate mro NAME modelrollout.dev/command=promote`` (see rollout.commands)."""
ANNOTATION_COMMAND_ID = f"{GROUP}/command-id"
"""Optional unique id of a command, so that the same command can be given twice."""

REPORT_APPLIED = "applied"
"""In the router's report (ConfigMap ``<rollout>-router-report``, see routing.report): written by the builtin
router once its data plane serves the weights, ``"<revision>/<green>"``, where revision is the
``status.weights.revision`` that asked for them. The operator counts a weight as applied only when both match
what it asked for (see routing.base.AppliedWeights)."""
REPORT_GUARD = "guard"
"""In the router's report: written with the applied weights when the router's guard tripped, a JSON record of
green's failures that made it send green 0% (see routing.guard)."""
ROUTER_FIELD_MANAGER = "modelrollout-router"
"""The field manager of the router's writes to its report: its own, so that the operator's server-side apply
of the report's metadata never takes its data over (the operator takes over the Python client's default
manager, which earlier operator versions wrote with)."""
REPORT_ROLLOUT_UID = "rollout-uid"
"""In the router's report: the uid of the ModelRollout it was written for (a report left by an earlier
rollout of the same name is no report)."""
ANNOTATION_WEIGHTS_REVISION = f"{GROUP}/weights-revision"
"""On an HTTPRoute the gateway-api provider writes: the ``status.weights.revision`` its weights are for."""
