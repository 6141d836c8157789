"""Pure builders: the objects a ModelRollout owns, and the nginx config the router renders."""

from __future__ import annotations

from pathlib import Path

import pytest

from model_server.router.nginx import NginxConfig, render
from modelrollout.api import constants
from modelrollout.api.spec import ModelRolloutSpec
from modelrollout.k8s import manifests

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
    return {item["name"]: item["value"] for item in container["env"]}


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


def test_services_select_their_colour() -> None:
    service = manifests.service(rollout="digits", namespace="ml", colour="blue", owner=OWNER)
    assert service["spec"]["selector"] == {constants.LABEL_ROLLOUT: "digits", constants.LABEL_COLOUR: "blue"}


def test_router_runs_as_its_own_account_bound_to_the_router_role() -> None:
    deployment = manifests.router_deployment(rollout="digits", namespace="ml", spec=SPEC, owner=OWNER)
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "digits-router"
    assert env(deployment)["MODELROUTER_STICKY_HEADER"] == "x-user"
    binding = manifests.router_role_binding(rollout="digits", namespace="ml", owner=OWNER)
    assert binding["roleRef"]["name"] == manifests.ROUTER_CLUSTER_ROLE
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "digits-router", "namespace": "ml"}]


@pytest.mark.parametrize("uri", ["https://example.invalid/m.onnx", "s3://bucket/m.onnx"])
def test_remote_model_uris_are_refused_with_the_reason(uri: str) -> None:
    with pytest.raises(ValueError, match="only file://"):
        manifests.model_path(uri)


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
