"""Traffic routing on the real control plane: the builtin router follows the ModelRollout's weights, keeps
them when the API server is gone, keeps sticky keys, mirrors; gateway-api writes HTTPRoute weights."""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from modelrollout.api import constants
from modelrollout.api.spec import ModelRolloutSpec
from modelrollout.devcluster import binaries, cluster, kubectl, process
from modelrollout.devcluster.modelservers import ModelServer
from modelrollout.k8s import api
from modelrollout.routing.base import RolloutRef
from modelrollout.routing.gateway_api import GatewayApiRouter

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def rollout_body(name: str, **traffic: Any) -> dict[str, Any]:
    return {
        "apiVersion": constants.API_VERSION,
        "kind": constants.KIND,
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "blue": {"model": {"uri": "file:///b.onnx", "version": "v1"}},
            "green": {"model": {"uri": "file:///g.onnx", "version": "v2"}},
            "traffic": {"steps": [{"weight": 10}, {"weight": 25}, {"weight": 50}, {"weight": 100}], **traffic},
        },
    }


def publish_weight(kubeconfig: Path, name: str, green: int) -> None:
    """What the operator does: status.weights through the status subresource."""
    patch = json.dumps({"status": {"weights": {"blue": 100 - green, "green": green}}})
    kubectl.run("patch", "mro", name, "--subresource=status", "--type=merge", "-p", patch, kubeconfig=kubeconfig)


DATA_PLANES = pytest.mark.parametrize("data_plane", ["python", "nginx"])


class RouterProcess:
    def __init__(self, *, blue: ModelServer, green: ModelServer, args: list[str], data_plane: str = "python") -> None:
        self.port = process.free_port()
        self.url = f"http://{process.LOOPBACK}:{self.port}"
        self.logs = Path(blue.log_dir)
        self._process = process.start(
            f"router-{self.port}",
            [
                sys.executable,
                "-m",
                "model_server.router",
                "--blue-url",
                blue.url,
                "--green-url",
                green.url,
                "--port",
                str(self.port),
                "--log-format",
                "json",
                *args,
            ],
            log_dir=self.logs,
        )
        process.wait_until(
            lambda: httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200,
            timeout=30,
            what="router",
            alive=lambda: self._process.poll() is None,
        )

    def state(self) -> dict[str, Any]:
        result: dict[str, Any] = httpx.get(f"{self.url}/router/state", timeout=2).json()
        return result

    def stop(self) -> None:
        process.stop(self._process.pid)
        self._process.poll()


@pytest.fixture(scope="module")
def servers(demo_models: Path) -> Iterator[tuple[ModelServer, ModelServer]]:
    with (
        ModelServer(demo_models / "digits-fp32.onnx", colour="blue") as blue,
        ModelServer(demo_models / "digits-2bit.onnx", version="v2", colour="green") as green,
    ):
        yield blue, green


@pytest.fixture(scope="module")
def stream(demo_models: Path) -> dict[str, np.ndarray]:
    return dict(np.load(demo_models / "digits-stream.npz"))


def send(
    router: RouterProcess,
    stream: dict[str, np.ndarray],
    count: int,
    *,
    headers: dict[str, str] | None = None,
    feedback: bool = False,
) -> dict[str, int]:
    """Inference through the router; returns how many each model version answered."""
    answered: dict[str, int] = {}
    with httpx.Client(base_url=router.url, timeout=10) as client:
        for index in range(count):
            x = stream["inputs"][index % 10_000]
            body = {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": x.tolist()}]}
            response = client.post("/v2/models/digits/infer", json=body, headers=headers)
            assert response.status_code == 200, response.text
            answer = response.json()
            answered[answer["model_version"]] = answered.get(answer["model_version"], 0) + 1
            if feedback:
                fed = client.post(
                    "/v2/models/digits/feedback",
                    json={"id": answer["id"], "label": int(stream["labels"][index % 10_000])},
                )
                assert fed.status_code == 200, fed.text
    return answered


@pytest.fixture(scope="module")
def crd(kubeconfig: Path) -> None:
    kubectl.install_crd(kubeconfig)


@DATA_PLANES
def test_router_follows_the_rollout_weights(
    kubeconfig: Path,
    crd: None,
    servers: tuple[ModelServer, ModelServer],
    stream: dict[str, np.ndarray],
    data_plane: str,
) -> None:
    name = f"split-{data_plane}"
    blue, green = servers
    kubectl.run("apply", "-f", "-", kubeconfig=kubeconfig, stdin=json.dumps(rollout_body(name)))
    router = RouterProcess(
        data_plane=data_plane, blue=blue, green=green, args=["--rollout", name, "--kubeconfig", str(kubeconfig)]
    )
    try:
        assert router.state()["greenWeight"] == 0  # no weights published yet: all blue
        assert send(router, stream, 50) == {"v1": 50}
        requests = 1500
        for weight in (10, 25, 50):
            begun = time.monotonic()
            publish_weight(kubeconfig, name, weight)
            process.wait_until(
                lambda w=weight: router.state()["greenWeight"] == w,
                timeout=1.0,
                interval=0.02,
                what=f"router applying {weight}%",
            )
            applied_within = time.monotonic() - begun
            assert applied_within < 1.0
            answered = send(router, stream, requests, feedback=weight == 25)
            share = answered.get("v2", 0) / requests
            # binomial standard error; 4 sigma keeps this test from flaking while still catching a wrong split
            tolerance = 4 * math.sqrt(weight / 100 * (1 - weight / 100) / requests)
            assert abs(share - weight / 100) < tolerance, (weight, share)
        stored = json.loads(kubectl.run("get", "mro", name, "-o", "json", kubeconfig=kubeconfig).stdout)
        process.wait_until(
            lambda: (
                json.loads(kubectl.run("get", "mro", name, "-o", "json", kubeconfig=kubeconfig).stdout)["metadata"][
                    "annotations"
                ].get(constants.ANNOTATION_APPLIED_WEIGHT)
                == "50"
            ),
            timeout=5,
            what="applied weight reported",
        )
        assert stored["status"]["weights"]["green"] == 50
    finally:
        router.stop()


@DATA_PLANES
def test_sticky_key_keeps_its_colour(
    kubeconfig: Path,
    crd: None,
    servers: tuple[ModelServer, ModelServer],
    stream: dict[str, np.ndarray],
    data_plane: str,
) -> None:
    blue, green = servers
    router = RouterProcess(
        data_plane=data_plane, blue=blue, green=green, args=["--weight", "50", "--sticky-header", "x-user"]
    )
    try:
        for user in ("alice", "bob", "carol", "dave"):
            answered = send(router, stream, 30, headers={"x-user": user})
            assert len(answered) == 1, (user, answered)
    finally:
        router.stop()


@DATA_PLANES
def test_mirroring_a_degraded_green_counts_disagreements(
    servers: tuple[ModelServer, ModelServer], stream: dict[str, np.ndarray], data_plane: str
) -> None:
    blue, green = servers
    router = RouterProcess(
        data_plane=data_plane, blue=blue, green=green, args=["--weight", "0", "--mirror-percent", "100"]
    )
    try:
        assert send(router, stream, 400) == {"v1": 400}  # mirrored answers are discarded
        time.sleep(0.5)
        metrics = httpx.get(f"{router.url}/metrics").text
        values = {
            line.split("{")[0]: float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith("modelrouter_mirror")
        }
        assert values["modelrouter_mirror_comparisons_total"] >= 390
        rate = values["modelrouter_mirror_disagreements_total"] / values["modelrouter_mirror_comparisons_total"]
        assert 0.02 < rate < 0.2  # the 2-bit model disagrees with fp32 on several percent of digits
    finally:
        router.stop()


@DATA_PLANES
def test_router_keeps_last_weights_when_the_api_server_is_gone(
    demo_models: Path, servers: tuple[ModelServer, ModelServer], stream: dict[str, np.ndarray], data_plane: str
) -> None:
    blue, green = servers
    with cluster.LocalCluster(nodes=1) as local:
        config_path = local.kubeconfig_path
        kubectl.install_crd(config_path)
        kubectl.run("apply", "-f", "-", kubeconfig=config_path, stdin=json.dumps(rollout_body("outage")))
        publish_weight(config_path, "outage", 100)
        router = RouterProcess(
            data_plane=data_plane,
            blue=blue,
            green=green,
            args=["--rollout", "outage", "--kubeconfig", str(config_path)],
        )
        try:
            process.wait_until(lambda: router.state()["greenWeight"] == 100, timeout=5, what="router at 100%")
            assert local.state is not None
            process.stop(local.state.pids["kube-apiserver"])
            time.sleep(2)
            assert send(router, stream, 100) == {"v2": 100}
        finally:
            router.stop()


def test_gateway_api_weights_are_written_and_read_back(kubeconfig: Path, crd: None) -> None:
    kubectl.install_crd(kubeconfig, binaries.gateway_api_crds() / "gateway.networking.k8s.io_httproutes.yaml")
    body = rollout_body(
        "gw", provider="gateway-api", gatewayApi={"parentRefs": [{"name": "public-gateway"}], "port": 8080}
    )
    kubectl.run("apply", "-f", "-", kubeconfig=kubeconfig, stdin=json.dumps(body))
    stored = json.loads(kubectl.run("get", "mro", "gw", "-o", "json", kubeconfig=kubeconfig).stdout)
    api.configure(str(kubeconfig))
    ref = RolloutRef(namespace="default", name="gw", uid=stored["metadata"]["uid"], body=stored)
    spec = ModelRolloutSpec.model_validate(stored["spec"])
    router = GatewayApiRouter()
    router.reconcile(ref, spec)
    assert router.applied_green_weight(ref, spec) == 0
    for weight in (10, 50, 100, 0):
        router.set_weights(ref, spec, green=weight)
        assert router.applied_green_weight(ref, spec) == weight
    route = yaml.safe_load(kubectl.run("get", "httproute", "gw", "-o", "yaml", kubeconfig=kubeconfig).stdout)
    assert route["spec"]["parentRefs"][0]["name"] == "public-gateway"
    assert [ref["name"] for ref in route["spec"]["rules"][0]["backendRefs"]] == ["gw-blue", "gw-green"]
    assert route["metadata"]["ownerReferences"][0]["kind"] == "ModelRollout"
