"""The objects a ModelRollout owns, whole: what the API server is given (with server-side apply, a field the
manifest lacks is removed from the object), and how the model server and router read their environment."""

from __future__ import annotations

import datetime
import json
from typing import Any

import yaml

from model_server.settings import ServerSettings
from modelrollout.api import constants
from modelrollout.api.spec import ModelRef, ModelRolloutSpec, ServerSpec, serving_revision
from modelrollout.api.status import StableStatus
from modelrollout.k8s import manifests

OWNER = {"apiVersion": constants.API_VERSION, "kind": constants.KIND, "name": "digits", "uid": "u1"}
GREEN = ModelRef(
    uri="file:///models/digits-int8.onnx",
    version="v2",
    sha256="a" * 64,
    golden_set="file:///models/digits-int8.golden.npz",
)
SERVER = ServerSpec(
    image="registry.example/model-server:1.2",
    runtime="onnx",
    replicas=3,
    resources={"limits": {"cpu": "1"}},
    settings={"MODELSERVER_MAX_BATCH_SIZE": "8"},
)
REVISION = serving_revision(GREEN, SERVER)

PROBE_PATHS = {"ready": "/v2/health/ready", "live": "/v2/health/live"}


def green_deployment(**overrides: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "rollout": "digits",
        "namespace": "ml",
        "colour": "green",
        "model": GREEN,
        "server": SERVER,
        "owner": OWNER,
        "replicas": 3,
        "annotations": {"note": "kept"},
        **overrides,
    }
    return manifests.model_deployment(**arguments)


def test_a_model_server_deployment_is_exactly_this() -> None:
    expected = yaml.safe_load(
        f"""
        apiVersion: apps/v1
        kind: Deployment
        metadata:
          name: digits-green
          namespace: ml
          labels: &labels
            app.kubernetes.io/name: model-server
            app.kubernetes.io/managed-by: modelrollout
            {constants.LABEL_ROLLOUT}: digits
            {constants.LABEL_COLOUR}: green
            {constants.LABEL_VERSION}: v2
            {constants.LABEL_REVISION}: {REVISION}
          ownerReferences: [{json.dumps(OWNER)}]
          annotations: {{note: kept}}
        spec:
          replicas: 3
          selector:
            matchLabels: {{{constants.LABEL_ROLLOUT}: digits, {constants.LABEL_COLOUR}: green}}
          template:
            metadata:
              labels: *labels
              annotations:
                prometheus.io/scrape: "true"
                prometheus.io/port: "8080"
                prometheus.io/path: /metrics
            spec:
              automountServiceAccountToken: false
              securityContext: {{runAsNonRoot: true, seccompProfile: {{type: RuntimeDefault}}}}
              volumes: [{{name: tmp, emptyDir: {{sizeLimit: 1Gi}}}}]
              containers:
              - name: model-server
                image: registry.example/model-server:1.2
                args: [python, -m, model_server]
                env:
                - {{name: MODELSERVER_COLOUR, value: green}}
                - {{name: MODELSERVER_FEEDBACK_AUTH, value: "true"}}
                - {{name: MODELSERVER_GOLDEN_SET, value: /models/digits-int8.golden.npz}}
                - {{name: MODELSERVER_HOST, value: 0.0.0.0}}
                - {{name: MODELSERVER_LOG_FORMAT, value: json}}
                - {{name: MODELSERVER_MAX_BATCH_SIZE, value: "8"}}
                - {{name: MODELSERVER_MODEL_NAME, value: digits}}
                - {{name: MODELSERVER_MODEL_PATH, value: /models/digits-int8.onnx}}
                - {{name: MODELSERVER_MODEL_SHA256, value: {"a" * 64}}}
                - {{name: MODELSERVER_MODEL_VERSION, value: v2}}
                - {{name: MODELSERVER_PORT, value: "8080"}}
                - {{name: MODELSERVER_ROLLOUT, value: digits}}
                - {{name: MODELSERVER_RUNTIME, value: onnx}}
                - name: MODELSERVER_FEEDBACK_TOKEN
                  valueFrom: {{secretKeyRef: {{name: digits-feedback, key: token, optional: true}}}}
                ports: [{{name: http, containerPort: 8080}}]
                startupProbe:
                  httpGet: {{path: /v2/health/ready, port: http}}
                  periodSeconds: 5
                  failureThreshold: 60
                readinessProbe:
                  httpGet: {{path: /v2/health/ready, port: http}}
                  periodSeconds: 2
                livenessProbe:
                  httpGet: {{path: /v2/health/live, port: http}}
                  periodSeconds: 10
                resources: {{limits: {{cpu: "1"}}}}
                securityContext:
                  allowPrivilegeEscalation: false
                  readOnlyRootFilesystem: true
                  capabilities: {{drop: [ALL]}}
                volumeMounts: [{{name: tmp, mountPath: /tmp}}]
        """
    )
    assert green_deployment() == expected


def test_without_resources_or_annotations_the_deployment_has_none() -> None:
    plain = green_deployment(server=SERVER.model_copy(update={"resources": None}), annotations=None)
    assert "annotations" not in plain["metadata"]
    assert "resources" not in plain["spec"]["template"]["spec"]["containers"][0]


def test_the_model_server_reads_its_deployments_environment_as_meant() -> None:
    container = green_deployment()["spec"]["template"]["spec"]["containers"][0]
    settings = ServerSettings(
        **{
            item["name"].removeprefix("MODELSERVER_").lower(): item["value"]
            for item in container["env"]
            if "value" in item
        }
    )
    assert str(settings.model_path) == "/models/digits-int8.onnx"
    assert (settings.model_name, settings.model_version, settings.model_sha256) == ("digits", "v2", "a" * 64)
    assert (settings.rollout, settings.colour, settings.runtime) == ("digits", "green", "onnx")
    assert (settings.host, settings.port, settings.log_format) == ("0.0.0.0", 8080, "json")
    assert settings.max_batch_size == 8
    assert str(settings.golden_set) == "/models/digits-int8.golden.npz"
    # the port Prometheus scrapes and the probes use is the one the server listens on
    [port] = container["ports"]
    assert port["containerPort"] == settings.port


def test_services_account_and_binding_are_exactly_these() -> None:
    labels = {
        "app.kubernetes.io/name": "model-server",
        "app.kubernetes.io/managed-by": "modelrollout",
        constants.LABEL_ROLLOUT: "digits",
        constants.LABEL_COLOUR: "blue",
    }
    assert manifests.service(rollout="digits", namespace="ml", colour="blue", owner=OWNER) == {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "digits-blue", "namespace": "ml", "labels": labels, "ownerReferences": [OWNER]},
        "spec": {
            "selector": {constants.LABEL_ROLLOUT: "digits", constants.LABEL_COLOUR: "blue"},
            "ports": [{"name": "http", "port": 8080, "targetPort": "http"}],
        },
    }
    router_labels = {**labels, "app.kubernetes.io/name": "model-router", constants.LABEL_COLOUR: "router"}
    router_metadata = {"name": "digits-router", "namespace": "ml", "labels": router_labels, "ownerReferences": [OWNER]}
    assert manifests.router_service_account(rollout="digits", namespace="ml", owner=OWNER) == {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": router_metadata,
    }
    assert manifests.router_role_binding(rollout="digits", namespace="ml", owner=OWNER) == {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": router_metadata,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "digits-router"},
        "subjects": [{"kind": "ServiceAccount", "name": "digits-router", "namespace": "ml"}],
    }
    assert manifests.router_role(rollout="digits", namespace="ml", owner=OWNER) == {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": router_metadata,
        "rules": [
            {
                "apiGroups": ["modelrollout.dev"],
                "resources": ["modelrollouts"],
                "resourceNames": ["digits"],
                "verbs": ["get", "list", "watch"],
            },
            {
                "apiGroups": [""],
                "resources": ["configmaps"],
                "resourceNames": ["digits-router-report"],
                "verbs": ["get", "patch"],
            },
        ],
    }
    assert manifests.router_report(rollout="digits", namespace="ml", owner=OWNER) == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {**router_metadata, "name": "digits-router-report"},
    }
    assert manifests.feedback_secret(rollout="digits", namespace="ml", owner=OWNER, token="t0ken") == {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {**router_metadata, "name": "digits-feedback"},
        "type": "Opaque",
        "stringData": {"token": "t0ken"},
    }


def rollout_spec(**traffic: Any) -> ModelRolloutSpec:
    return ModelRolloutSpec.model_validate(
        {
            "blue": {"model": {"uri": "file:///v1.onnx", "version": "v1"}},
            "green": {"model": {"uri": "file:///v2.onnx", "version": "v2"}},
            "traffic": traffic,
        }
    )


def test_the_router_deployment_is_exactly_this() -> None:
    router = manifests.router_deployment(
        rollout="digits",
        namespace="ml",
        spec=rollout_spec(stickyHeader="x-user"),
        owner=OWNER,
        image="release:1",
        replicas=2,
    )
    labels = {
        "app.kubernetes.io/name": "model-router",
        "app.kubernetes.io/managed-by": "modelrollout",
        constants.LABEL_ROLLOUT: "digits",
        constants.LABEL_COLOUR: "router",
    }
    assert router == yaml.safe_load(
        f"""
        apiVersion: apps/v1
        kind: Deployment
        metadata:
          name: digits-router
          namespace: ml
          labels: {json.dumps(labels)}
          ownerReferences: [{json.dumps(OWNER)}]
        spec:
          replicas: 2
          selector:
            matchLabels: {{{constants.LABEL_ROLLOUT}: digits, {constants.LABEL_COLOUR}: router}}
          template:
            metadata:
              labels: {json.dumps(labels)}
              annotations: {{prometheus.io/scrape: "true", prometheus.io/port: "8080"}}
            spec:
              serviceAccountName: digits-router
              securityContext: {{runAsNonRoot: true, seccompProfile: {{type: RuntimeDefault}}}}
              topologySpreadConstraints:
              - maxSkew: 1
                topologyKey: kubernetes.io/hostname
                whenUnsatisfiable: ScheduleAnyway
                labelSelector:
                  matchLabels: {{{constants.LABEL_ROLLOUT}: digits, {constants.LABEL_COLOUR}: router}}
              volumes: [{{name: tmp, emptyDir: {{sizeLimit: 1Gi}}}}]
              containers:
              - name: router
                image: release:1
                args: [python, -m, model_server.router]
                env:
                - {{name: MODELROUTER_DATA_PLANE, value: nginx}}
                - {{name: MODELROUTER_FEEDBACK_AUTH, value: "true"}}
                - {{name: MODELROUTER_FEEDBACK_PER_SECOND, value: "1000"}}
                - {{name: MODELROUTER_HOST, value: 0.0.0.0}}
                - {{name: MODELROUTER_IN_CLUSTER, value: "true"}}
                - {{name: MODELROUTER_LOG_FORMAT, value: json}}
                - {{name: MODELROUTER_NAMESPACE, value: ml}}
                - {{name: MODELROUTER_PORT, value: "8080"}}
                - {{name: MODELROUTER_REPLICAS, value: "2"}}
                - {{name: MODELROUTER_ROLLOUT, value: digits}}
                - {{name: MODELROUTER_STATE_FILE, value: /tmp/modelrouter-weights.json}}
                - {{name: MODELROUTER_STICKY_HEADER, value: x-user}}
                - name: MODELROUTER_FEEDBACK_TOKEN
                  valueFrom: {{secretKeyRef: {{name: digits-feedback, key: token, optional: true}}}}
                - name: MODELROUTER_REPLICA
                  valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}
                ports: [{{name: http, containerPort: 8080}}]
                readinessProbe:
                  httpGet: {{path: /readyz, port: http}}
                  periodSeconds: 2
                livenessProbe:
                  httpGet: {{path: /healthz, port: http}}
                  periodSeconds: 10
                  timeoutSeconds: 5
                  failureThreshold: 6
                resources: {{requests: {{cpu: 100m, memory: 128Mi}}, limits: {{memory: 512Mi}}}}
                securityContext:
                  allowPrivilegeEscalation: false
                  readOnlyRootFilesystem: true
                  capabilities: {{drop: [ALL]}}
                volumeMounts: [{{name: tmp, mountPath: /tmp}}]
        """
    )
    unsticky = manifests.router_deployment(
        rollout="digits", namespace="ml", spec=rollout_spec(), owner=OWNER, image="release:1"
    )
    names = [item["name"] for item in unsticky["spec"]["template"]["spec"]["containers"][0]["env"]]
    assert "MODELROUTER_STICKY_HEADER" not in names


def test_the_routers_disruption_budget_lets_a_drain_take_one_replica_at_a_time() -> None:
    budget = manifests.router_disruption_budget(rollout="digits", namespace="ml", owner=OWNER)
    assert budget["kind"] == "PodDisruptionBudget" and budget["metadata"]["name"] == "digits-router"
    assert budget["spec"] == {
        "maxUnavailable": 1,  # never minAvailable: 1, which would block every drain of a single replica
        "selector": {"matchLabels": {constants.LABEL_ROLLOUT: "digits", constants.LABEL_COLOUR: "router"}},
    }
    assert budget["metadata"]["ownerReferences"] == [OWNER]


def test_the_stable_record_is_camel_case_json_without_empty_fields() -> None:
    """What ``kubectl get deploy -o yaml`` shows, in the CRD's own spelling; an older reader ignores nothing."""
    stable = StableStatus(
        model=ModelRef(uri="file:///v2.onnx", version="v2"),
        server=ServerSpec(),
        revision="r2",
        promoted_at=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
    )
    record = json.loads(manifests.stable_annotation(stable)[manifests.ANNOTATION_STABLE])
    assert record["promotedAt"] == "2026-01-01T00:00:00Z"
    assert "promoted_at" not in record
    assert "sha256" not in record["model"] and "goldenSet" not in record["model"]  # None is left out
    assert "resources" not in record["server"]


def test_an_object_labelled_orphaned_but_still_owned_is_released() -> None:
    live = {
        "metadata": {"resourceVersion": "7", "ownerReferences": [OWNER], "labels": {manifests.LABEL_ORPHANED: "true"}}
    }
    assert manifests.released(live, "u1") == {
        "metadata": {"resourceVersion": "7", "ownerReferences": None, "labels": {manifests.LABEL_ORPHANED: "true"}}
    }
    unlabelled = {"metadata": {"resourceVersion": "8"}}
    assert manifests.released(unlabelled, "u1") is not None  # not owned, but the label is missing


CANDIDATE = (ModelRef(uri="file:///models/v9.onnx", version="v9"), ServerSpec())


def container_with(env: dict[str, str], **fields: Any) -> dict[str, Any]:
    container = {"name": "model-server", "env": [{"name": k, "value": v} for k, v in env.items()], **fields}
    return {"spec": {"template": {"spec": {"containers": [container]}}}}


def read(deployment: dict[str, Any]) -> tuple[ModelRef, ServerSpec] | None:
    return manifests.served_by(deployment, rollout="digits", namespace="ml", candidate=CANDIDATE)


def test_a_deployment_without_a_model_path_or_version_is_not_a_model_server() -> None:
    assert read(container_with({"MODELSERVER_MODEL_VERSION": "v1"})) is None
    assert read(container_with({"MODELSERVER_MODEL_PATH": "/m.onnx"})) is None
    assert read(container_with({"MODELSERVER_MODEL_PATH": "/m.onnx", "MODELSERVER_MODEL_VERSION": ""})) is None
    assert read({"spec": {"template": {"spec": {"containers": []}}}}) is None


def test_what_a_foreign_deployment_leaves_out_comes_from_the_candidates_server() -> None:
    found = read(container_with({"MODELSERVER_MODEL_PATH": "/m.onnx", "MODELSERVER_MODEL_VERSION": "v1"}))
    assert found is not None
    model, server = found
    assert (model.uri, model.version, model.sha256, model.golden_set) == ("file:///m.onnx", "v1", None, None)
    assert (server.image, server.runtime, server.resources) == (ServerSpec().image, "onnx", None)
    assert server.settings == {}


def test_a_foreign_deployment_is_read_with_its_image_runtime_and_resources() -> None:
    env = {
        "MODELSERVER_MODEL_PATH": "/m.gguf",
        "MODELSERVER_MODEL_VERSION": "v1",
        "MODELSERVER_RUNTIME": "gguf",
        "MODELSERVER_COLOUR": "blue",
        "MODELSERVER_THREADS": "4",
    }
    found = read(container_with(env, image="img:7", resources={"limits": {"memory": "1Gi"}}))
    assert found is not None
    server = found[1]
    assert (server.image, server.runtime, server.resources) == ("img:7", "gguf", {"limits": {"memory": "1Gi"}})
    assert server.settings == {"MODELSERVER_THREADS": "4"}  # identity variables are not settings


def test_a_blue_deployment_running_the_candidate_is_read_as_the_candidate() -> None:
    model, server = CANDIDATE
    blue = manifests.model_deployment(
        rollout="digits", namespace="ml", colour="blue", model=model, server=server, owner=OWNER, replicas=4
    )
    found = read(blue)
    assert found is not None and found[0] is model and found[1] is server
    other_image = ServerSpec(image="other:1")
    moved = manifests.model_deployment(
        rollout="digits", namespace="ml", colour="blue", model=model, server=other_image, owner=OWNER, replicas=4
    )
    found = read(moved)
    assert found is not None and found[0] is not model and found[1].image == "other:1"
    resourced = ServerSpec(resources={"limits": {"cpu": "2"}})
    found = read(
        manifests.model_deployment(
            rollout="digits", namespace="ml", colour="blue", model=model, server=resourced, owner=OWNER, replicas=4
        )
    )
    assert found is not None and found[1] is not server and found[1].resources == {"limits": {"cpu": "2"}}


def test_environment_from_a_reference_reads_as_empty() -> None:
    """A variable set with valueFrom has no value in the template: it is not this model's path, nor a setting's
    value the operator could write back."""
    from_secret = container_with({"MODELSERVER_MODEL_VERSION": "v1"})
    from_secret["spec"]["template"]["spec"]["containers"][0]["env"].append(
        {"name": "MODELSERVER_MODEL_PATH", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
    )
    assert read(from_secret) is None
    setting = container_with({"MODELSERVER_MODEL_PATH": "/m.onnx", "MODELSERVER_MODEL_VERSION": "v1"})
    setting["spec"]["template"]["spec"]["containers"][0]["env"].append(
        {"name": "MODELSERVER_THREADS", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}
    )
    found = read(setting)
    assert found is not None and found[1].settings == {"MODELSERVER_THREADS": ""}


def test_a_deployment_with_the_candidates_image_but_another_model_is_read_from_its_template() -> None:
    model, server = CANDIDATE
    older = ModelRef(uri="file:///models/v8.onnx", version="v8")
    found = read(
        manifests.model_deployment(
            rollout="digits", namespace="ml", colour="green", model=older, server=server, owner=OWNER, replicas=1
        )
    )
    assert found is not None and found[0] is not model and found[0].version == "v8"
