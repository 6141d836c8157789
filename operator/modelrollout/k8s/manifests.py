"""Pure builders of the objects a ModelRollout owns: per colour a model-server Deployment and Service,
and for the builtin provider the router's Deployment and Service."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from modelrollout.api import constants
from modelrollout.api.spec import RESERVED_SETTINGS, ModelRef, ModelRolloutSpec, ServerSpec, serving_revision
from modelrollout.api.status import StableStatus
from modelrollout.routing.report import report_name

SERVER_PORT = 8080
ROUTER = constants.ROUTER
LABEL_ORPHANED = f"{constants.GROUP}/orphaned"
"""``"true"`` on objects a deleted ModelRollout left serving (deletionPolicy keepStable); an apply by a
rollout of the same name adopts them again and removes it."""

ANNOTATION_STABLE = f"{constants.GROUP}/stable"
"""On blue's Deployment: ``status.stable`` as JSON, a durable copy of what blue serves. A status that is
lost (restored from a backup without it, written by an older operator) is recovered from it, so that the
operator never falls back to spec.blue's older model."""
IDENTITY_ENV = RESERVED_SETTINGS | {"MODELSERVER_LOG_FORMAT"}
"""Environment variables the operator sets itself; the others come from ``server.settings``."""

STARTUP_PERIOD_SECONDS = 5
STARTUP_FAILURE_THRESHOLD = 60
"""The model server's startup probe allows 5 s x 60 = 5 minutes to load (and verify) its model before
the kubelet restarts it; liveness only counts once it has started, so a slow load never crash-loops."""


FETCHED_DIR = "/mnt/models"
"""Where the init container puts a model fetched over http(s): an emptyDir shared with the server."""
FETCH_CONTAINER = "fetch-model"
FETCH_RESOURCES: dict[str, Any] = {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}}
"""The fetch streams the body to disk a MiB at a time: little memory, whatever the model's size."""
FETCHED_VOLUME: dict[str, Any] = {"name": "models", "emptyDir": {}}


CLAIM_DIR = "/mnt/model-claim"
"""Where the PersistentVolumeClaim of a ``pvc://CLAIM/path`` model is mounted, read-only."""
CLAIM_VOLUME = "model-claim"


def fetched(uri: str) -> bool:
    """Whether the model at ``uri`` is fetched by the init container (http, https) rather than in the image."""
    return urlsplit(uri).scheme in ("http", "https")


def claimed(uri: str) -> tuple[str, str] | None:
    """The claim and the path on it of a ``pvc://CLAIM/path`` model (the path as written, not URL-decoded), or
    None for another scheme."""
    if not uri.startswith("pvc://"):
        return None
    claim, _, path = uri[len("pvc://") :].partition("/")
    return claim, path


def model_path(uri: str) -> str:
    """The path the model server loads: ``file:///models/x.onnx`` and ``/models/x.onnx`` give ``/models/x.onnx``;
    ``https://host/dir/x.onnx`` gives ``/mnt/models/x.onnx``, where the init container puts it (the name keeps
    the URL's last segment, so that its extension still picks the runtime); ``pvc://claim/dir/x.onnx`` gives
    ``/mnt/model-claim/dir/x.onnx``, where the claim is mounted."""
    on_claim = claimed(uri)
    if on_claim is not None:
        return f"{CLAIM_DIR}/{on_claim[1]}"
    parts = urlsplit(uri)
    if parts.scheme in ("", "file"):
        return parts.path
    if fetched(uri):
        name = re.sub(r"[^A-Za-z0-9._-]", "_", parts.path.rsplit("/", 1)[-1]).lstrip(".") or "model"
        return f"{FETCHED_DIR}/{name}"
    raise ValueError(f"model uri {uri!r}: only paths inside the image, http(s) URLs and pvc:// claims are served")


def fetch_container(model: ModelRef, server: ServerSpec) -> dict[str, Any]:
    """The init container that fetches an http(s) model into the emptyDir (``model_server.fetch``): retried,
    size-capped, checked against ``sha256`` when given; on failure its reason is the container's termination
    message, which the operator reports."""
    args = ["python", "-m", "model_server.fetch", model.uri, model_path(model.uri)]
    if model.sha256:
        args += ["--sha256", model.sha256]
    return {
        "name": FETCH_CONTAINER,
        "image": server.image,
        "args": args,
        "resources": FETCH_RESOURCES,
        "securityContext": CONTAINER_SECURITY,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": FETCHED_VOLUME["name"], "mountPath": FETCHED_DIR}, SCRATCH_MOUNT],
    }


def labels(rollout: str, colour: str, model: ModelRef | None = None) -> dict[str, str]:
    result = {
        "app.kubernetes.io/name": "model-server" if colour in constants.COLOURS else "model-router",
        "app.kubernetes.io/managed-by": "modelrollout",
        constants.LABEL_ROLLOUT: rollout,
        constants.LABEL_COLOUR: colour,
    }
    if model is not None:
        result[constants.LABEL_VERSION] = model.version
    return result


def _metadata(name: str, namespace: str, owner: dict[str, Any], object_labels: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": object_labels, "ownerReferences": [owner]}


POD_SECURITY: dict[str, Any] = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
"""Every Pod the operator creates meets the "restricted" Pod Security Standard: a non-root user (the image's
numeric USER) under the runtime's default seccomp profile..."""
CONTAINER_SECURITY: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}
"""...no privilege escalation, no capabilities, and a read-only root filesystem: what a process writes goes
to the Pod's own ``/tmp`` (SCRATCH)."""
SCRATCH_VOLUME: dict[str, Any] = {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}
SCRATCH_MOUNT: dict[str, Any] = {"name": "tmp", "mountPath": "/tmp"}  # noqa: S108 - the Pod's own emptyDir
ROUTER_STATE_FILE = "/tmp/modelrouter-weights.json"  # noqa: S108 - on the Pod's own emptyDir (SCRATCH)
ROUTER_RESOURCES: dict[str, Any] = {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}
"""The router's: every user request passes through it, so no CPU limit (throttling would add latency)."""


def model_deployment(
    *,
    rollout: str,
    namespace: str,
    colour: str,
    model: ModelRef,
    server: ServerSpec,
    owner: dict[str, Any],
    replicas: int,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One colour's model server: blue runs the stable model (status.stable), green the candidate."""
    selector = {constants.LABEL_ROLLOUT: rollout, constants.LABEL_COLOUR: colour}
    env = {
        "MODELSERVER_MODEL_PATH": model_path(model.uri),
        "MODELSERVER_MODEL_NAME": rollout,
        "MODELSERVER_MODEL_VERSION": model.version,
        "MODELSERVER_RUNTIME": server.runtime,
        "MODELSERVER_ROLLOUT": rollout,
        "MODELSERVER_COLOUR": colour,
        "MODELSERVER_HOST": "0.0.0.0",  # noqa: S104
        "MODELSERVER_PORT": str(SERVER_PORT),
        "MODELSERVER_LOG_FORMAT": "json",
        "MODELSERVER_FEEDBACK_AUTH": "true",
        **server.settings,
    }
    if model.sha256:
        env["MODELSERVER_MODEL_SHA256"] = model.sha256
    if fetched(model.uri) or claimed(model.uri):  # what status.stable is recovered from (served_by)
        env["MODELSERVER_MODEL_URI"] = model.uri
    if model.golden_set:
        env["MODELSERVER_GOLDEN_SET"] = model_path(model.golden_set)
    container: dict[str, Any] = {
        "name": "model-server",
        "image": server.image,
        "args": ["python", "-m", "model_server"],
        "env": [
            *({"name": k, "value": v} for k, v in sorted(env.items())),
            feedback_token_env("MODELSERVER_FEEDBACK_TOKEN", rollout),
        ],
        "ports": [{"name": "http", "containerPort": SERVER_PORT}],
        "startupProbe": {
            "httpGet": {"path": "/v2/health/ready", "port": "http"},
            "periodSeconds": STARTUP_PERIOD_SECONDS,
            "failureThreshold": STARTUP_FAILURE_THRESHOLD,
        },
        "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": "http"}, "periodSeconds": 2},
        "livenessProbe": {"httpGet": {"path": "/v2/health/live", "port": "http"}, "periodSeconds": 10},
        "securityContext": CONTAINER_SECURITY,
        "volumeMounts": [SCRATCH_MOUNT],
    }
    if server.resources:
        container["resources"] = server.resources
    pod_spec: dict[str, Any] = {
        # a model server never calls the Kubernetes API: no token in its Pods
        "automountServiceAccountToken": False,
        "securityContext": POD_SECURITY,
        "containers": [container],
        "volumes": [SCRATCH_VOLUME],
    }
    if fetched(model.uri):
        pod_spec["initContainers"] = [fetch_container(model, server)]
        pod_spec["volumes"].append(FETCHED_VOLUME)
        container["volumeMounts"].append({"name": FETCHED_VOLUME["name"], "mountPath": FETCHED_DIR, "readOnly": True})
    on_claim = claimed(model.uri)
    if on_claim is not None:
        pod_spec["volumes"].append(
            {"name": CLAIM_VOLUME, "persistentVolumeClaim": {"claimName": on_claim[0], "readOnly": True}}
        )
        container["volumeMounts"].append({"name": CLAIM_VOLUME, "mountPath": CLAIM_DIR, "readOnly": True})
    pod_labels = {**labels(rollout, colour, model), constants.LABEL_REVISION: serving_revision(model, server)}
    metadata = _metadata(f"{rollout}-{colour}", namespace, owner, pod_labels)
    if annotations:
        metadata["annotations"] = annotations
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {
                    "labels": pod_labels,
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(SERVER_PORT),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": pod_spec,
            },
        },
    }


def released(live: dict[str, Any], owner_uid: str) -> dict[str, Any] | None:
    """The JSON merge patch that frees ``live`` from the owner ``owner_uid`` and labels it orphaned, or
    None when that is done (a pure function). It carries the resourceVersion it was computed from, so
    that it fails rather than drop an owner reference added meanwhile."""
    metadata = live["metadata"]
    owners = metadata.get("ownerReferences") or []
    remaining = [owner for owner in owners if owner.get("uid") != owner_uid]
    orphaned = (metadata.get("labels") or {}).get(LABEL_ORPHANED) == "true"
    if len(remaining) == len(owners) and orphaned:
        return None
    return {
        "metadata": {
            "resourceVersion": metadata["resourceVersion"],
            "ownerReferences": remaining or None,
            "labels": {LABEL_ORPHANED: "true"},
        }
    }


def stable_annotation(stable: StableStatus) -> dict[str, str]:
    """The annotations of blue's Deployment: its durable copy of status.stable."""
    return {ANNOTATION_STABLE: stable.model_dump_json(by_alias=True, exclude_none=True)}


def recorded_stable(deployment: dict[str, Any] | None) -> StableStatus | None:
    """status.stable as recorded on blue's Deployment (None when there is no record). A record that cannot
    be read raises ValueError: it is not the same as none (that would make spec.blue the stable model)."""
    text = ((deployment or {}).get("metadata", {}).get("annotations") or {}).get(ANNOTATION_STABLE)
    if not text:
        return None
    try:
        return StableStatus.model_validate_json(text)
    except ValueError as error:
        raise ValueError(f"the stable model recorded on blue ({ANNOTATION_STABLE}) cannot be read: {error}") from None


def template_revision(deployment: dict[str, Any] | None) -> str | None:
    """The ``modelrollout.dev/revision`` label of a model-server Deployment's pod template (None: none)."""
    template = ((deployment or {}).get("spec") or {}).get("template") or {}
    labels_: dict[str, str] = (template.get("metadata") or {}).get("labels") or {}
    return labels_.get(constants.LABEL_REVISION)


def served_by(
    deployment: dict[str, Any] | None, *, rollout: str, namespace: str, candidate: tuple[ModelRef, ServerSpec]
) -> tuple[ModelRef, ServerSpec] | None:
    """The model and server settings a model-server Deployment runs (a pure function of its template; None
    when it is not one of ours). ``candidate`` is returned itself when the Deployment runs exactly it, so
    that the spec's own spelling (of URIs, for example) is kept."""
    containers = (((deployment or {}).get("spec") or {}).get("template") or {}).get("spec", {}).get("containers")
    if not containers:
        return None
    container = containers[0]
    env = {item.get("name"): item.get("value", "") for item in container.get("env") or []}
    if not env.get("MODELSERVER_MODEL_PATH") or not env.get("MODELSERVER_MODEL_VERSION"):
        return None
    model, server = candidate
    colour = env.get("MODELSERVER_COLOUR", constants.GREEN)
    built = model_deployment(
        rollout=rollout, namespace=namespace, colour=colour, model=model, server=server, owner={}, replicas=1
    )["spec"]["template"]["spec"]["containers"][0]
    if all(built.get(key) == container.get(key) for key in ("image", "env", "resources")):
        return candidate
    golden = env.get("MODELSERVER_GOLDEN_SET")
    served = ModelRef(
        uri=env.get("MODELSERVER_MODEL_URI") or f"file://{env['MODELSERVER_MODEL_PATH']}",
        version=env["MODELSERVER_MODEL_VERSION"],
        sha256=env.get("MODELSERVER_MODEL_SHA256") or None,
        golden_set=f"file://{golden}" if golden else None,
    )
    settings = {name: value for name, value in env.items() if name and name not in IDENTITY_ENV}
    return served, ServerSpec(
        image=container.get("image", server.image),
        runtime=env.get("MODELSERVER_RUNTIME", server.runtime),
        replicas=server.replicas,
        resources=container.get("resources") or None,
        settings=settings,
    )


def service(*, rollout: str, namespace: str, colour: str, owner: dict[str, Any]) -> dict[str, Any]:
    """``<rollout>-blue``, ``<rollout>-green`` or ``<rollout>-router``."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(f"{rollout}-{colour}", namespace, owner, labels(rollout, colour)),
        "spec": {
            "selector": {constants.LABEL_ROLLOUT: rollout, constants.LABEL_COLOUR: colour},
            "ports": [{"name": "http", "port": SERVER_PORT, "targetPort": "http"}],
        },
    }


def router_service_account(*, rollout: str, namespace: str, owner: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _metadata(f"{rollout}-router", namespace, owner, labels(rollout, ROUTER)),
    }


def router_role(*, rollout: str, namespace: str, owner: dict[str, Any]) -> dict[str, Any]:
    """All the router may do: read its own ModelRollout (get, and list/watch with a ``metadata.name`` field
    selector) and patch its own report (routing.report). Never a spec, a status or another rollout."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _metadata(f"{rollout}-router", namespace, owner, labels(rollout, ROUTER)),
        "rules": [
            {
                "apiGroups": [constants.GROUP],
                "resources": [constants.PLURAL],
                "resourceNames": [rollout],
                "verbs": ["get", "list", "watch"],
            },
            {
                "apiGroups": [""],
                "resources": ["configmaps"],
                "resourceNames": [report_name(rollout)],
                "verbs": ["get", "patch"],
            },
        ],
    }


def router_role_binding(*, rollout: str, namespace: str, owner: dict[str, Any]) -> dict[str, Any]:
    """Binds ``router_role`` to the router's ServiceAccount."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _metadata(f"{rollout}-router", namespace, owner, labels(rollout, ROUTER)),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": f"{rollout}-router"},
        "subjects": [{"kind": "ServiceAccount", "name": f"{rollout}-router", "namespace": namespace}],
    }


def router_report(*, rollout: str, namespace: str, owner: dict[str, Any]) -> dict[str, Any]:
    """The router's report (routing.report), applied without ``data``: the operator owns its metadata, the
    router alone writes its data, which an apply of this never touches."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(report_name(rollout), namespace, owner, labels(rollout, ROUTER)),
    }


FEEDBACK_TOKEN_KEY = "token"  # noqa: S105 - the key's name in the Secret, not a token


def feedback_secret_name(rollout: str) -> str:
    """``<rollout>-feedback``: the token that feedback must carry, shared by the router and both colours."""
    return f"{rollout}-feedback"


def router_disruption_budget(*, rollout: str, namespace: str, owner: dict[str, Any]) -> dict[str, Any]:
    """A voluntary disruption (a node drain, a cluster upgrade) takes one router at a time: with two replicas
    or more one always serves (every request of the rollout passes through one), and a single replica never
    blocks a drain (as ``minAvailable: 1`` would)."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(f"{rollout}-router", namespace, owner, labels(rollout, ROUTER)),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": {constants.LABEL_ROLLOUT: rollout, constants.LABEL_COLOUR: ROUTER}},
        },
    }


def feedback_token_env(name: str, rollout: str) -> dict[str, Any]:
    """An env entry read from the rollout's feedback Secret. Optional: a Pod started while the Secret is
    missing still serves (blue must never wait on it); with ``*_FEEDBACK_AUTH`` it then refuses feedback."""
    return {
        "name": name,
        "valueFrom": {
            "secretKeyRef": {"name": feedback_secret_name(rollout), "key": FEEDBACK_TOKEN_KEY, "optional": True}
        },
    }


def feedback_secret(*, rollout: str, namespace: str, owner: dict[str, Any], token: str) -> dict[str, Any]:
    """The rollout's feedback token, created once with a random ``token`` when missing and never rewritten
    (a user may create it first with a token of their own, or rotate it: Pods read it when they start)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(feedback_secret_name(rollout), namespace, owner, labels(rollout, ROUTER)),
        "type": "Opaque",
        "stringData": {FEEDBACK_TOKEN_KEY: token},
    }


def router_deployment(
    *, rollout: str, namespace: str, spec: ModelRolloutSpec, owner: dict[str, Any], image: str, replicas: int = 1
) -> dict[str, Any]:
    """The builtin router, ``replicas`` of it, running as ``<rollout>-router`` (see router_role_binding), from
    ``image``: the operator's own release or the stable model's server image, never a candidate's (all traffic
    passes through the router, and a candidate's image is not vetted yet). Each replica reports under its Pod's
    name (routing.report), and they are spread over nodes where they can be."""
    env = {
        "MODELROUTER_ROLLOUT": rollout,
        "MODELROUTER_NAMESPACE": namespace,
        "MODELROUTER_IN_CLUSTER": "true",
        "MODELROUTER_HOST": "0.0.0.0",  # noqa: S104 - a container listens on all its interfaces
        "MODELROUTER_PORT": str(SERVER_PORT),
        "MODELROUTER_LOG_FORMAT": "json",
        "MODELROUTER_DATA_PLANE": "nginx",
        "MODELROUTER_FEEDBACK_PER_SECOND": str(spec.traffic.feedback_per_second),
        "MODELROUTER_FEEDBACK_AUTH": "true",
        # on the Pod's emptyDir: a restarted container serves what it served, even with no API server
        "MODELROUTER_STATE_FILE": ROUTER_STATE_FILE,
        "MODELROUTER_REPLICAS": str(replicas),
    }
    if spec.traffic.sticky_header:
        env["MODELROUTER_STICKY_HEADER"] = spec.traffic.sticky_header
    selector = {constants.LABEL_ROLLOUT: rollout, constants.LABEL_COLOUR: ROUTER}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(f"{rollout}-router", namespace, owner, labels(rollout, ROUTER)),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {
                    "labels": labels(rollout, ROUTER),
                    "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": str(SERVER_PORT)},
                },
                "spec": {
                    "serviceAccountName": f"{rollout}-router",  # it reads its rollout and reports on it
                    "securityContext": POD_SECURITY,
                    "topologySpreadConstraints": [
                        {
                            "maxSkew": 1,
                            "topologyKey": "kubernetes.io/hostname",
                            "whenUnsatisfiable": "ScheduleAnyway",
                            "labelSelector": {"matchLabels": selector},
                        }
                    ],
                    "volumes": [SCRATCH_VOLUME],  # nginx's config, temp files and pid
                    "containers": [
                        {
                            "name": "router",
                            "image": image,
                            "args": ["python", "-m", "model_server.router"],
                            "env": [
                                *({"name": k, "value": v} for k, v in sorted(env.items())),
                                feedback_token_env("MODELROUTER_FEEDBACK_TOKEN", rollout),
                                {  # its entry in the report
                                    "name": "MODELROUTER_REPLICA",
                                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                                },
                            ],
                            "ports": [{"name": "http", "containerPort": SERVER_PORT}],
                            "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 2},
                            # /healthz passes through nginx to the router process: either one gone for a
                            # minute restarts it (generous: a busy router must not be killed under load)
                            "livenessProbe": {
                                "httpGet": {"path": "/healthz", "port": "http"},
                                "periodSeconds": 10,
                                "timeoutSeconds": 5,
                                "failureThreshold": 6,
                            },
                            "resources": ROUTER_RESOURCES,
                            "securityContext": CONTAINER_SECURITY,
                            "volumeMounts": [SCRATCH_MOUNT],
                        }
                    ],
                },
            },
        },
    }
