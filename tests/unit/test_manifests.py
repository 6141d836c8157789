"""Pure builders: the objects a ModelRollout owns, and the nginx config the router renders; the pure
decisions about owned objects: whether a colour is rolled out, its pods' health, handing fields over to
server-side apply, and what deleting a ModelRollout keeps."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import pytest

from model_server.router.nginx import NginxConfig, render
from modelrollout.api import constants
from modelrollout.api.spec import ModelRef, ModelRolloutSpec, ServerSpec, serving_revision
from modelrollout.api.status import StableStatus
from modelrollout.k8s import api, deletion, manifests, owned, resources
from modelrollout.routing.base import parse_report

SPEC = ModelRolloutSpec.model_validate(
    {
        "server": {"replicas": 2, "settings": {"MODELSERVER_MAX_BATCH_SIZE": "8"}},
        "blue": {"model": {"uri": "file:///models/digits-fp32.onnx", "version": "v1"}},
        "green": {
            "model": {
                "uri": "file:///models/digits-int8.onnx",
                "version": "v2",
                "sha256": "a" * 64,
                "goldenSet": "file:///models/digits-int8.golden.npz",
            }
        },
        "traffic": {"stickyHeader": "x-user"},
    }
)
OWNER = {
    "apiVersion": constants.API_VERSION,
    "kind": constants.KIND,
    "name": "digits",
    "uid": "u1",
    "controller": True,
    "blockOwnerDeletion": True,
}


def env(deployment: dict[str, object]) -> dict[str, str]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]  # type: ignore[index]
    return {item["name"]: item["value"] for item in container["env"] if "value" in item}


def test_green_deployment_runs_the_green_model_with_the_metric_labels() -> None:
    deployment = manifests.model_deployment(
        rollout="digits",
        namespace="ml",
        colour="green",
        model=SPEC.green.model,
        server=SPEC.server,
        owner=OWNER,
        replicas=2,
    )
    assert deployment["metadata"]["name"] == "digits-green"
    assert deployment["metadata"]["ownerReferences"] == [OWNER]
    template = deployment["spec"]["template"]
    assert template["metadata"]["labels"][constants.LABEL_VERSION] == "v2"
    assert template["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    values = env(deployment)
    assert values["MODELSERVER_MODEL_PATH"] == "/models/digits-int8.onnx"
    assert values["MODELSERVER_COLOUR"] == "green" and values["MODELSERVER_ROLLOUT"] == "digits"
    assert values["MODELSERVER_MODEL_SHA256"] == "a" * 64
    assert values["MODELSERVER_GOLDEN_SET"] == "/models/digits-int8.golden.npz"
    assert values["MODELSERVER_MAX_BATCH_SIZE"] == "8"


def test_model_servers_get_minutes_to_load_before_liveness_counts() -> None:
    deployment = manifests.model_deployment(
        rollout="digits",
        namespace="ml",
        colour="blue",
        model=SPEC.blue.model,
        server=SPEC.server,
        owner=OWNER,
        replicas=1,
    )
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    startup = container["startupProbe"]
    assert startup["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert startup["periodSeconds"] * startup["failureThreshold"] == 300  # five minutes to load a model
    # liveness alone would restart a loading server after 3 x 10 s
    assert startup["periodSeconds"] * startup["failureThreshold"] > 10 * container["livenessProbe"]["periodSeconds"]


def test_a_setting_left_out_of_the_spec_is_left_out_of_the_manifest() -> None:
    """With server-side apply, the manifest is the whole truth: what it lacks is removed from the object."""
    plain = SPEC.green.model.model_copy(update={"sha256": None})
    faulty = SPEC.server.model_copy(update={"settings": {"MODELSERVER_FAULT_ERROR_RATE": "0.2"}})
    before = manifests.model_deployment(
        rollout="digits", namespace="ml", colour="green", model=SPEC.green.model, server=faulty, owner=OWNER, replicas=1
    )
    after = manifests.model_deployment(
        rollout="digits", namespace="ml", colour="green", model=plain, server=SPEC.server, owner=OWNER, replicas=1
    )
    assert {"MODELSERVER_MODEL_SHA256", "MODELSERVER_FAULT_ERROR_RATE"} <= env(before).keys()
    assert not {"MODELSERVER_MODEL_SHA256", "MODELSERVER_FAULT_ERROR_RATE"} & env(after).keys()


def test_services_select_their_colour() -> None:
    service = manifests.service(rollout="digits", namespace="ml", colour="blue", owner=OWNER)
    assert service["spec"]["selector"] == {constants.LABEL_ROLLOUT: "digits", constants.LABEL_COLOUR: "blue"}


def test_router_runs_as_its_own_account_bound_to_its_own_role() -> None:
    deployment = manifests.router_deployment(
        rollout="digits", namespace="ml", spec=SPEC, owner=OWNER, image="release:1"
    )
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "digits-router"
    assert env(deployment)["MODELROUTER_STICKY_HEADER"] == "x-user"
    binding = manifests.router_role_binding(rollout="digits", namespace="ml", owner=OWNER)
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "digits-router"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "digits-router", "namespace": "ml"}]


def test_the_routers_role_reads_its_own_rollout_and_writes_only_its_report() -> None:
    role = manifests.router_role(rollout="digits", namespace="ml", owner=OWNER)
    assert role["metadata"]["name"] == "digits-router"
    assert role["rules"] == [
        {
            "apiGroups": [constants.GROUP],
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
    ]
    report = manifests.router_report(rollout="digits", namespace="ml", owner=OWNER)
    assert report["metadata"]["name"] == "digits-router-report" and "data" not in report
    assert report["metadata"]["labels"][constants.LABEL_COLOUR] == manifests.ROUTER  # what the operator watches


def test_feedback_is_authenticated_with_the_rollouts_secret_everywhere() -> None:
    """Both colours and the router read the token from <name>-feedback; the spec never carries it."""
    reference = {"secretKeyRef": {"name": "digits-feedback", "key": "token", "optional": True}}
    router = manifests.router_deployment(rollout="digits", namespace="ml", spec=SPEC, owner=OWNER, image="r:1")
    deployments = {
        "router": (router, "MODELROUTER_FEEDBACK_TOKEN"),
        **{
            colour: (
                manifests.model_deployment(
                    rollout="digits",
                    namespace="ml",
                    colour=colour,
                    model=SPEC.green.model,
                    server=SPEC.server,
                    owner=OWNER,
                    replicas=1,
                ),
                "MODELSERVER_FEEDBACK_TOKEN",
            )
            for colour in constants.COLOURS
        },
    }
    for what, (deployment, variable) in deployments.items():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        found = [item for item in container["env"] if item["name"] == variable]
        assert found == [{"name": variable, "valueFrom": reference}], what
        # without the Secret the Pod still starts (blue never waits on it) and refuses feedback instead
        assert env(deployment)[variable.replace("_TOKEN", "_AUTH")] == "true", what
    assert env(router)["MODELROUTER_FEEDBACK_PER_SECOND"] == "1000"
    secret = manifests.feedback_secret(rollout="digits", namespace="ml", owner=OWNER, token="t0k")
    assert secret["metadata"]["name"] == "digits-feedback" and secret["metadata"]["ownerReferences"] == [OWNER]
    assert secret["stringData"] == {"token": "t0k"} and secret["type"] == "Opaque"


@pytest.mark.parametrize(
    ("name", "value"), [("MODELSERVER_FEEDBACK_TOKEN", "guessable"), ("MODELSERVER_FEEDBACK_AUTH", "false")]
)
def test_feedback_authentication_is_not_a_setting(name: str, value: str) -> None:
    with pytest.raises(ValueError, match=f"{name}: set by the operator"):
        ServerSpec(settings={name: value})


@pytest.mark.parametrize("uri", ["s3://bucket/m.onnx", "gs://bucket/m.onnx"])
def test_model_uris_not_served_yet_are_refused_with_the_reason(uri: str) -> None:
    with pytest.raises(ValueError, match="only paths inside the image, http"):
        manifests.model_path(uri)


@pytest.mark.parametrize(
    ("uri", "path"),
    [
        ("https://store.example/models/llama-q4.gguf?sig=a/b", "/mnt/models/llama-q4.gguf"),
        ("http://store.example:8080/m/digits int8.onnx", "/mnt/models/digits_int8.onnx"),
        ("https://store.example/m/", "/mnt/models/model"),
        ("https://store.example/..", "/mnt/models/model"),
        ("file:///models/m.onnx", "/models/m.onnx"),
    ],
)
def test_a_fetched_model_lands_in_the_emptydir_under_its_urls_last_segment(uri: str, path: str) -> None:
    assert manifests.model_path(uri) == path


def test_a_model_over_https_gets_an_init_container_that_fetches_and_checks_it() -> None:
    sha = "a" * 64
    model = ModelRef(uri="https://store.example/m/digits.onnx", version="v2", sha256=sha)
    server = ServerSpec(image="example/server:1")
    body = manifests.model_deployment(
        rollout="digits", namespace="ml", colour="green", model=model, server=server, owner={}, replicas=1
    )
    pod_spec = body["spec"]["template"]["spec"]
    (fetch,) = pod_spec["initContainers"]
    assert fetch["image"] == "example/server:1"
    assert fetch["args"] == [
        "python", "-m", "model_server.fetch", "https://store.example/m/digits.onnx", "/mnt/models/digits.onnx",
        "--sha256", sha,
    ]  # fmt: skip
    assert fetch["securityContext"] == manifests.CONTAINER_SECURITY
    assert fetch["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert {"name": "models", "mountPath": "/mnt/models"} in fetch["volumeMounts"]
    (container,) = pod_spec["containers"]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["MODELSERVER_MODEL_PATH"] == "/mnt/models/digits.onnx"
    assert env["MODELSERVER_MODEL_URI"] == "https://store.example/m/digits.onnx"
    assert env["MODELSERVER_MODEL_SHA256"] == sha  # checked again when the server loads it
    assert {"name": "models", "mountPath": "/mnt/models", "readOnly": True} in container["volumeMounts"]
    assert {"name": "models", "emptyDir": {}} in pod_spec["volumes"]


def test_a_model_in_the_image_gets_no_init_container() -> None:
    body = manifests.model_deployment(
        rollout="digits", namespace="ml", colour="green", model=ModelRef(uri="/models/m.onnx", version="v2"),
        server=ServerSpec(), owner={}, replicas=1,
    )  # fmt: skip
    assert "initContainers" not in body["spec"]["template"]["spec"]
    assert body["spec"]["template"]["spec"]["volumes"] == [manifests.SCRATCH_VOLUME]


def test_what_a_deployment_of_a_fetched_model_serves_is_read_back_with_its_url() -> None:
    model = ModelRef(uri="https://store.example/m/digits.onnx", version="v2")
    server = ServerSpec()
    body = manifests.model_deployment(
        rollout="digits", namespace="ml", colour="blue", model=model, server=server, owner={}, replicas=1
    )
    other = (ModelRef(uri="/models/other.onnx", version="v3"), server)
    served = manifests.served_by(body, rollout="digits", namespace="ml", candidate=other)
    assert served is not None
    assert served[0].uri == "https://store.example/m/digits.onnx"
    assert "MODELSERVER_MODEL_URI" not in served[1].settings


def test_a_model_on_a_claim_is_served_from_the_claim_mounted_read_only() -> None:
    model = ModelRef(uri="pvc://model-store/digits/v2/digits-int8.onnx", version="v2")
    body = manifests.model_deployment(
        rollout="digits", namespace="ml", colour="green", model=model, server=ServerSpec(), owner={}, replicas=1
    )
    pod_spec = body["spec"]["template"]["spec"]
    assert "initContainers" not in pod_spec
    assert {"name": "model-claim", "persistentVolumeClaim": {"claimName": "model-store", "readOnly": True}} in (
        pod_spec["volumes"]
    )
    (container,) = pod_spec["containers"]
    assert {"name": "model-claim", "mountPath": "/mnt/model-claim", "readOnly": True} in container["volumeMounts"]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["MODELSERVER_MODEL_PATH"] == "/mnt/model-claim/digits/v2/digits-int8.onnx"
    assert env["MODELSERVER_MODEL_URI"] == "pvc://model-store/digits/v2/digits-int8.onnx"
    served = manifests.served_by(
        body, rollout="digits", namespace="ml", candidate=(ModelRef(uri="/models/o.onnx", version="v3"), ServerSpec())
    )
    assert served is not None and served[0].uri == model.uri  # status.stable recovers the claim, not a path


def test_why_pods_cannot_start_names_the_schedulers_reason_first() -> None:
    unplaced = pod(ready=False, init_failure="model not fetched: HTTP 404", init_restarts=(1,))
    unplaced["metadata"]["name"] = "digits-green-1"
    reason = '0/2 nodes are available: persistentvolumeclaim "model-store" not found.'
    unplaced["status"]["conditions"].append({"type": "PodScheduled", "status": "False", "message": reason})
    kept = owned.trimmed_pod(unplaced)  # what the operator's watch keeps of it
    assert resources.start_failure([kept], revision="r2") == f"pod digits-green-1 is not scheduled: {reason}"
    placed = pod(ready=False)
    placed["status"]["conditions"].append({"type": "PodScheduled", "status": "True"})
    assert resources.start_failure([owned.trimmed_pod(placed)], revision="r2") == ""
    gated = pod(ready=False)  # held back on purpose (schedulingGates): nothing has failed
    gated["status"]["conditions"].append(
        {"type": "PodScheduled", "status": "False", "reason": "SchedulingGated", "message": "Scheduling is blocked"}
    )
    assert resources.start_failure([owned.trimmed_pod(gated)], revision="r2") == ""


def test_why_pods_cannot_start_comes_from_a_failed_containers_termination_message() -> None:
    failing = pod(ready=False, init_restarts=(2,), init_failure="model not fetched: https://s/m.onnx: HTTP 404")
    failing["metadata"]["name"] = "digits-green-1"
    assert resources.start_failure([pod(), failing], revision="r2") == (
        "container fetch-model of pod digits-green-1: model not fetched: https://s/m.onnx: HTTP 404"
    )
    assert resources.start_failure([failing], revision="r1") == ""  # another revision's pod
    assert resources.start_failure([pod(ready=False, init_restarts=(2,))], revision="r2") == ""  # nothing said


def nginx(**overrides: object) -> str:
    fields: dict[str, object] = {
        "listen": "127.0.0.1:80",
        "blue": "127.0.0.1:1",
        "green": "127.0.0.1:2",
        "control": "127.0.0.1:3",
        "green_weight": 25,
        "mirror_percent": 0,
        "sticky_header": None,
        "version": 7,
        "directory": Path("/tmp/x"),
    }
    return render(NginxConfig(**{**fields, **overrides}))  # type: ignore[arg-type]


def test_nginx_split_follows_the_weight() -> None:
    assert 'split_clients "$split_key" $colour { 25% green; * blue; }' in nginx()
    assert 'split_clients "$split_key" $colour { * blue; }' in nginx(green_weight=0)
    assert 'split_clients "$split_key" $colour { * green; }' in nginx(green_weight=100)
    assert "return 200 '7'" in nginx()  # the config version the router waits for after a reload


def test_nginx_sticky_header_keys_the_split() -> None:
    assert 'map $http_x_user $split_key { "" $request_id; default $http_x_user; }' in nginx(sticky_header="X-User")


def test_nginx_mirrors_only_when_asked() -> None:
    assert "mirror /_mirror;" not in nginx()
    assert "mirror /_mirror;" in nginx(mirror_percent=10)


def test_an_http_route_goes_back_to_blue_without_its_spec() -> None:
    from modelrollout.routing.base import RolloutRef
    from modelrollout.routing.gateway_api import blue_only_rules, build_route, green_weight_of

    rollout = RolloutRef(namespace="default", name="digits", uid="u", body={})
    route = build_route(rollout, SPEC, green=40)
    other = {"name": "static-site", "port": 80, "weight": 5}
    route["spec"]["rules"].append({"matches": [{"path": {"value": "/docs"}}], "backendRefs": [other]})
    assert green_weight_of(route, rollout) == 40
    rules = blue_only_rules(route, rollout)
    assert green_weight_of({"spec": {"rules": rules}}, rollout) == 0
    assert rules[0]["backendRefs"][0] == {"name": "digits-blue", "port": 8080, "weight": 100}
    assert rules[1] == route["spec"]["rules"][1]  # what is not ours is left alone


# --- is a colour rolled out, and how healthy are its pods -------------------------------------------------


def deployment(
    *, version: str = "v2", revision: str = "r2", replicas: int = 2, available: int = 2, updated: int = 2
) -> dict[str, Any]:
    template_labels = {constants.LABEL_VERSION: version, constants.LABEL_REVISION: revision}
    return {
        "metadata": {"name": "digits-green", "generation": 3},
        "spec": {"replicas": replicas, "template": {"metadata": {"labels": template_labels}}},
        "status": {"observedGeneration": 3, "updatedReplicas": updated, "availableReplicas": available},
    }


def pod(
    version: str = "v2",
    *,
    revision: str = "r2",
    ready: bool = True,
    terminating: bool = False,
    phase: str = "Running",
    restarts: tuple[int, ...] = (0,),
    init_restarts: tuple[int, ...] = (),
    init_failure: str = "",
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"labels": {constants.LABEL_VERSION: version, constants.LABEL_REVISION: revision}}
    if terminating:
        metadata["deletionTimestamp"] = "2026-11-23T04:00:00Z"
    return {
        "metadata": metadata,
        "status": {
            "phase": phase,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [{"restartCount": count} for count in restarts],
            "initContainerStatuses": [
                {
                    "name": "fetch-model",
                    "restartCount": count,
                    **(
                        {"lastState": {"terminated": {"exitCode": 1, "message": init_failure, "reason": "Error"}}}
                        if init_failure
                        else {}
                    ),
                }
                for count in init_restarts
            ],
        },
    }


def test_a_colour_is_rolled_out_when_its_deployment_and_all_its_pods_run_the_version() -> None:
    assert resources.rolled_out(deployment(), [pod(), pod()], version="v2", revision="r2")


@pytest.mark.parametrize(
    ("why", "found", "pods"),
    [
        ("no Deployment", None, [pod(), pod()]),
        ("template runs another version", deployment(version="v1"), [pod(), pod()]),
        ("template runs the version with other settings", deployment(revision="r1"), [pod(), pod()]),
        ("a pod runs the version with other settings", deployment(), [pod(), pod(revision="r1")]),
        ("replicas not yet available", deployment(available=1), [pod(), pod(ready=False)]),
        ("replicas not yet updated", deployment(updated=1), [pod(), pod()]),
        ("an old pod still serves", deployment(), [pod(), pod(), pod("v1")]),
        ("an old pod is terminating", deployment(), [pod(), pod(), pod("v1", terminating=True)]),
        ("a pod of the version is terminating", deployment(), [pod(), pod(), pod(terminating=True)]),
        ("a pod lost its readiness", deployment(), [pod(), pod(ready=False)]),
    ],
)
def test_a_colour_is_not_rolled_out(why: str, found: dict[str, Any] | None, pods: list[dict[str, Any]]) -> None:
    assert not resources.rolled_out(found, pods, version="v2", revision="r2"), why


def test_a_finished_pod_of_an_old_version_does_not_hold_a_colour_back() -> None:
    evicted = pod("v1", ready=False, phase="Failed")
    assert resources.rolled_out(deployment(), [pod(), pod(), evicted], version="v2", revision="r2")


def test_a_deployment_observed_at_an_older_generation_is_not_rolled_out() -> None:
    stale = deployment()
    stale["status"]["observedGeneration"] = 2
    assert not resources.rolled_out(stale, [pod(), pod()], version="v2", revision="r2")


def test_pod_health_counts_pods_readiness_and_restarts_of_the_revision_only() -> None:
    pods = [
        pod(restarts=(2, 1), init_restarts=(1,)),
        pod(ready=False, restarts=(3,)),
        pod(terminating=True, restarts=(1,)),  # not counted as a pod, its restarts are
        pod(phase="Failed", ready=False, restarts=(4,)),  # a crash before an eviction counts too
        pod("v1", revision="r1", restarts=(50,)),  # another version's restarts are not green's
        pod(revision="r2-other-settings", restarts=(40,)),  # nor those of the same version run otherwise
    ]
    assert resources.health_of(pods, revision="r2") == resources.PodHealth(pods=2, ready=1, restarts=12)
    assert resources.health_of([], revision="r2") == resources.PodHealth(pods=0, ready=0, restarts=0)


def test_the_colour_selector_matches_what_the_deployment_selects() -> None:
    selected = manifests.model_deployment(
        rollout="digits",
        namespace="ml",
        colour="green",
        model=SPEC.green.model,
        server=SPEC.server,
        owner=OWNER,
        replicas=1,
    )["spec"]["selector"]["matchLabels"]
    assert resources.selector("digits", "green") == ",".join(f"{k}={v}" for k, v in selected.items())


# --- fields written by earlier operator versions are handed over to server-side apply ---------------------


def managed(manager: str, operation: str, fields: dict[str, Any], subresource: str = "") -> dict[str, Any]:
    entry: dict[str, Any] = {"manager": manager, "operation": operation, "apiVersion": "apps/v1"}
    entry |= {"fieldsType": "FieldsV1", "fieldsV1": fields}
    if subresource:
        entry["subresource"] = subresource
    return entry


def test_fields_of_the_earlier_operator_become_ours_so_that_apply_can_remove_them() -> None:
    legacy = managed("OpenAPI-Generator", "Update", {"f:spec": {"f:template": {"f:env": {'k:{"name":"OLD"}': {}}}}})
    ours = managed(api.FIELD_MANAGER, "Apply", {"f:spec": {"f:replicas": {}}})
    controller = managed("kube-controller-manager", "Update", {"f:status": {}}, subresource="status")
    result = resources.handed_over([legacy, ours, controller])
    assert result is not None
    assert controller in result and not [e for e in result if e["manager"] == "OpenAPI-Generator"]
    (merged,) = [e for e in result if e["manager"] == api.FIELD_MANAGER]
    assert merged["operation"] == "Apply"
    assert merged["fieldsV1"] == {
        "f:spec": {"f:replicas": {}, "f:template": {"f:env": {'k:{"name":"OLD"}': {}}}},
    }


def test_nothing_is_handed_over_once_done_or_from_other_managers() -> None:
    ours = managed(api.FIELD_MANAGER, "Apply", {"f:spec": {}})
    assert resources.handed_over([ours]) is None
    assert resources.handed_over([ours, managed("kubectl-edit", "Update", {"f:spec": {}})]) is None
    assert resources.handed_over([managed("OpenAPI-Generator", "Update", {"f:status": {}}, "status")]) is None


def test_without_an_apply_entry_the_legacy_fields_start_one() -> None:
    result = resources.handed_over([managed("OpenAPI-Generator", "Update", {"f:spec": {"f:replicas": {}}})])
    assert result == [
        {
            "manager": api.FIELD_MANAGER,
            "operation": "Apply",
            "apiVersion": "apps/v1",
            "fieldsType": "FieldsV1",
            "time": None,
            "fieldsV1": {"f:spec": {"f:replicas": {}}},
        }
    ]


# --- deleting a ModelRollout --------------------------------------------------------------------------------


def confirmation(report: str | None, *, blue_serving: bool = True, elapsed: float = 5) -> deletion.Confirmation:
    return deletion.confirmation(
        report=parse_report(report), revision=8, blue_serving=blue_serving, elapsed=elapsed, deadline=60
    )


def test_deletion_goes_on_once_the_router_confirms_all_traffic_on_blue() -> None:
    assert confirmation("8/0") is deletion.Confirmation.CONFIRMED
    assert confirmation("8/0", blue_serving=False, elapsed=100) is deletion.Confirmation.CONFIRMED


@pytest.mark.parametrize("report", [None, "7/0", "8/25", "9/0", "garbage"])
def test_deletion_waits_for_the_router_to_confirm_this_revision(report: str | None) -> None:
    assert confirmation(report) is deletion.Confirmation.WAIT


def test_deletion_stops_waiting_at_the_confirm_deadline_or_when_blue_serves_nothing() -> None:
    assert confirmation("7/0", elapsed=60) is deletion.Confirmation.EXPIRED
    assert confirmation(None, blue_serving=False) is deletion.Confirmation.BLUE_NOT_SERVING


def test_the_deadline_counts_from_the_deletion_timestamp() -> None:
    now = datetime.datetime(2026, 11, 23, 4, 1, 0, tzinfo=datetime.UTC)
    assert deletion.since_deletion({"metadata": {"deletionTimestamp": "2026-11-23T04:00:30Z"}}, now) == 30
    assert deletion.since_deletion({"metadata": {}}, now) == 0


def test_the_policy_is_keep_stable_by_default_and_when_the_spec_no_longer_parses() -> None:
    body = {"spec": SPEC.to_api()}
    assert deletion.policy_of(deletion.spec_of(body)) == deletion.KEEP_STABLE
    body["spec"]["deletionPolicy"] = "deleteAll"
    assert deletion.policy_of(deletion.spec_of(body)) == deletion.DELETE_ALL
    broken = {"spec": {**body["spec"], "traffic": {"steps": []}}}
    assert deletion.spec_of(broken) is None
    assert deletion.policy_of(None) == deletion.KEEP_STABLE


def test_keep_stable_keeps_blue_the_router_and_their_feedback_secret_only() -> None:
    kept = deletion.stable_objects("digits")
    assert ("Deployment", "digits-blue") in kept and ("Service", "digits-blue") in kept
    assert ("Secret", "digits-feedback") in kept  # blue's and the router's Pods read it when they start
    assert {name for _, name in kept} == {"digits-blue", "digits-router", "digits-router-report", "digits-feedback"}
    assert ("ConfigMap", "digits-router-report") in kept  # a kept router reads its trip back when it restarts
    assert {kind for kind, name in kept if name == "digits-router"} == {
        "Deployment",
        "Service",
        "ServiceAccount",
        "Role",
        "PodDisruptionBudget",
        "RoleBinding",
    }


def test_releasing_drops_only_our_owner_reference_and_labels_the_object() -> None:
    other = {"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "u9"}
    live = {"metadata": {"resourceVersion": "41", "ownerReferences": [OWNER, other], "labels": {"a": "b"}}}
    assert manifests.released(live, "u1") == {
        "metadata": {"resourceVersion": "41", "ownerReferences": [other], "labels": {manifests.LABEL_ORPHANED: "true"}}
    }
    alone = {"metadata": {"resourceVersion": "41", "ownerReferences": [OWNER]}}
    assert manifests.released(alone, "u1")["metadata"]["ownerReferences"] is None  # type: ignore[index]
    done = {"metadata": {"resourceVersion": "42", "labels": {manifests.LABEL_ORPHANED: "true"}}}
    assert manifests.released(done, "u1") is None


def test_the_router_is_ready_only_once_it_serves_its_rollouts_weights() -> None:
    router = manifests.router_deployment(rollout="digits", namespace="ml", spec=SPEC, owner=OWNER, image="release:1")
    [container] = router["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"


# --- blue's record of the stable model, and what a Deployment runs


def test_blue_records_the_stable_model_and_the_record_reads_back() -> None:
    stable = StableStatus(
        model=SPEC.green.model,
        server=SPEC.server,
        revision="r2",
        promoted_at=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
    )
    blue = manifests.model_deployment(
        rollout="digits",
        namespace="ns",
        colour=constants.BLUE,
        model=stable.model,
        server=stable.server,
        owner=OWNER,
        replicas=2,
        annotations=manifests.stable_annotation(stable),
    )
    assert manifests.recorded_stable(blue) == stable
    assert manifests.recorded_stable(None) is None
    # a record written by a later operator version, with a field this one does not know, still reads
    newer = json.loads(blue["metadata"]["annotations"][manifests.ANNOTATION_STABLE])
    newer["model"]["quantization"] = "int4"
    blue["metadata"]["annotations"][manifests.ANNOTATION_STABLE] = json.dumps(newer)
    assert manifests.recorded_stable(blue) == stable
    # one that cannot be read is not "no record" (that would make spec.blue the stable model)
    blue["metadata"]["annotations"][manifests.ANNOTATION_STABLE] = "{not json"
    with pytest.raises(ValueError, match="cannot be read"):
        manifests.recorded_stable(blue)
    # blue's record never goes backwards
    older = stable.model_copy(update={"promoted_at": datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)})
    blue["metadata"]["annotations"] = manifests.stable_annotation(stable)
    with pytest.raises(resources.StaleStable):
        resources.refuse_older(blue, older)
    resources.refuse_older(blue, stable)
    resources.refuse_older(None, older)


def green_of(model: ModelRef, server: ServerSpec) -> dict[str, Any]:
    return manifests.model_deployment(
        rollout="digits", namespace="ns", colour=constants.GREEN, model=model, server=server, owner=OWNER, replicas=2
    )


def test_a_deployment_running_the_spec_is_read_as_the_spec_itself() -> None:
    candidate = (SPEC.green.model, SPEC.server)
    found = manifests.served_by(green_of(*candidate), rollout="digits", namespace="ns", candidate=candidate)
    assert found is not None and found[0] is SPEC.green.model and found[1] is SPEC.server


def test_a_deployment_running_something_else_is_read_from_its_template() -> None:
    running = ModelRef(uri="file:///models/old.onnx", version="v0", sha256="b" * 64, golden_set="/models/g.npz")
    server = ServerSpec(image="img:1", runtime="onnx", settings={"MODELSERVER_MAX_BATCH_SIZE": "4"})
    found = manifests.served_by(
        green_of(running, server), rollout="digits", namespace="ns", candidate=(SPEC.green.model, SPEC.server)
    )
    assert found is not None
    model, read_server = found
    assert (model.uri, model.version, model.sha256, model.golden_set) == (
        "file:///models/old.onnx",
        "v0",
        "b" * 64,
        "file:///models/g.npz",
    )
    assert read_server.image == "img:1" and read_server.settings["MODELSERVER_MAX_BATCH_SIZE"] == "4"
    # what was read runs exactly as what was running
    assert env(green_of(model, read_server)) == env(green_of(running, server))
    assert read_server.replicas == SPEC.server.replicas
    assert (
        manifests.served_by(None, rollout="digits", namespace="ns", candidate=(SPEC.green.model, SPEC.server)) is None
    )


def test_a_deletion_while_a_promotion_hands_back_waits_for_blue_to_run_the_promoted_model() -> None:
    stable = StableStatus(
        model=SPEC.green.model,
        server=SPEC.server,
        revision="r2",
        promoted_at=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
    ).model_dump(by_alias=True, mode="json")
    finalizing = {"phase": "Finalizing", "stable": stable, "weights": {"blue": 0, "green": 100, "revision": 7}}
    assert deletion.promoted_model_only_on_green(finalizing, lambda _: False) == "v2"
    assert deletion.promoted_model_only_on_green(finalizing, lambda s: s.model.version == "v2") == ""
    handed_back = {**finalizing, "weights": {"blue": 100, "green": 0, "revision": 8}}
    assert deletion.promoted_model_only_on_green(handed_back, lambda _: False) == ""
    # a canary, even after an earlier promotion: green runs the candidate, blue the stable model
    for promoted_at in (None, stable["promotedAt"]):
        canary = {
            "phase": "Progressing",
            "stable": {**stable, "promotedAt": promoted_at},
            "weights": finalizing["weights"],
        }
        assert deletion.promoted_model_only_on_green(canary, lambda _: False) == ""
    assert deletion.promoted_model_only_on_green({}, lambda _: False) == ""


def test_a_colour_runs_only_a_revision_when_its_template_and_every_live_pod_carry_it() -> None:
    assert resources.runs_only(deployment(), [pod(), pod(ready=False)], revision="r2")  # readiness aside
    assert resources.runs_only(deployment(), [pod(), pod("v1", revision="r1", phase="Failed")], revision="r2")
    assert not resources.runs_only(deployment(), [pod(), pod("v1", revision="r1")], revision="r2")  # rolling
    assert not resources.runs_only(deployment(), [pod()], revision="r3")
    assert not resources.runs_only(None, [], revision="r2")


def test_the_template_revision_is_what_a_deployment_runs_whatever_the_uri_spelling() -> None:
    plain = SPEC.green.model.model_copy(update={"uri": "/models/digits-int8.onnx"})
    built = green_of(plain, SPEC.server)
    assert manifests.template_revision(built) == serving_revision(plain, SPEC.server)
    assert manifests.template_revision(None) is None
