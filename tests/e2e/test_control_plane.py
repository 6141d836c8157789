"""The local control plane is a real Kubernetes: CRDs apply, custom objects round-trip, Deployments run."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from modelrollout.devcluster import kubectl, process

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
ROLLOUT = """
apiVersion: modelrollout.dev/v1alpha1
kind: ModelRollout
metadata: {name: digits, namespace: default}
spec:
  blue:  {model: {uri: "file:///models/digits-fp32.onnx", version: "v1"}}
  green: {model: {uri: "file:///models/digits-int8.onnx", version: "v2"}}
"""


@pytest.fixture(scope="module")
def crd_installed(kubeconfig: Path) -> None:
    kubectl.install_crd(kubeconfig)


def test_modelrollout_round_trips_through_the_api_server(kubeconfig: Path, crd_installed: None) -> None:
    kubectl.run("apply", "-f", "-", kubeconfig=kubeconfig, stdin=ROLLOUT)
    stored = json.loads(kubectl.run("get", "mro", "digits", "-o", "json", kubeconfig=kubeconfig).stdout)
    assert stored["spec"]["green"]["model"] == {"uri": "file:///models/digits-int8.onnx", "version": "v2"}
    table = kubectl.run("get", "modelrollouts", kubeconfig=kubeconfig).stdout
    header = table.splitlines()[0]
    for column in ("PHASE", "GREEN WEIGHT", "BLUE VERSION", "GREEN VERSION", "AGE"):
        assert column in header
    assert "digits" in table and "v2" in table
    kubectl.run("delete", "mro", "digits", kubeconfig=kubeconfig)


def test_deployment_becomes_available_on_fake_nodes(kubeconfig: Path) -> None:
    apps = client.AppsV1Api(config.new_client_from_config(str(kubeconfig)))
    labels = {"app": "smoke"}
    deployment = client.V1Deployment(
        metadata=client.V1ObjectMeta(name="smoke", labels=labels),
        spec=client.V1DeploymentSpec(
            replicas=2,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[client.V1Container(name="main", image="registry.invalid/smoke:1")]),
            ),
        ),
    )
    apps.create_namespaced_deployment("default", deployment)
    try:
        deadline = time.monotonic() + 90
        available = 0
        while time.monotonic() < deadline:
            status = apps.read_namespaced_deployment_status("smoke", "default").status
            available = status.available_replicas or 0
            if available == 2:
                break
            time.sleep(0.5)
        assert available == 2
        core = client.CoreV1Api(apps.api_client)
        pods = core.list_namespaced_pod("default", label_selector="app=smoke").items
        assert len(pods) == 2
        assert all(p.status.phase == "Running" and p.status.pod_ip for p in pods)
    finally:
        apps.delete_namespaced_deployment("smoke", "default")


def test_the_fake_nodes_heartbeat_well_within_the_node_controllers_grace_period(kubeconfig: Path) -> None:
    """kwok renews each fake node's Lease, so the node controller never marks the nodes NotReady, which would
    make every Pod on them unready for good (kwok's stages make a Pod Ready once: a router Pod stays unready).
    Without Leases kwok wrote a node's status only every 600-610 s, past the 10 minute grace period."""
    coordination = client.CoordinationV1Api(config.new_client_from_config(str(kubeconfig)))
    nodes = json.loads(kubectl.run("get", "nodes", "-l", "type=kwok", "-o", "json", kubeconfig=kubeconfig).stdout)
    names = sorted(node["metadata"]["name"] for node in nodes["items"])
    assert names

    def renewals() -> dict[str, Any]:
        leases = coordination.list_namespaced_lease("kube-node-lease").items
        return {lease.metadata.name: lease.spec.renew_time for lease in leases if lease.metadata.name in names}

    process.wait_until(lambda: sorted(renewals()) == names, timeout=60, what="kwok holding a Lease per node")
    first = renewals()

    # kwok renews every 10 s: 60 s leaves room for a loaded machine
    def all_renewed() -> bool:
        renewed = renewals()
        return all(renewed.get(name) not in (None, first[name]) for name in names)

    process.wait_until(all_renewed, timeout=60, what="the node Leases renewed")
