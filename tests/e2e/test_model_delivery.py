"""A model delivered over HTTP: the Pod's init container fetches it into an emptyDir before the server starts,
and a model that cannot be fetched is named, with the reason, in the rollout's status. The init container runs
as a real process (the kubelet stand-in runs init containers first) against a real HTTP server on loopback."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelrollout.devcluster import kubectl, process
from modelrollout.devcluster.stage import DRILL_STEPS, Stage, rollout_manifest
from modelrollout.k8s import manifests
from tests.e2e.conftest import clear_rollouts


class _Quiet(http.server.SimpleHTTPRequestHandler):
    fetched: list[str]

    def do_GET(self) -> None:
        self.fetched.append(self.path)
        super().do_GET()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def model_store(demo_models: Path) -> Iterator[tuple[str, list[str]]]:
    """The demo's models over HTTP on loopback: the base URL, and the paths asked for."""
    fetched: list[str] = []
    handler = type("Handler", (_Quiet,), {"fetched": fetched})
    server = http.server.ThreadingHTTPServer(
        (process.LOOPBACK, 0), functools.partial(handler, directory=str(demo_models))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://{process.LOOPBACK}:{server.server_address[1]}", fetched
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def stage(kubeconfig: Path, demo_models: Path) -> Iterator[Stage]:
    try:
        with Stage(kubeconfig=kubeconfig, models=demo_models) as running:
            yield running
    finally:
        clear_rollouts(kubeconfig)


def _pods(kubeconfig: Path, name: str, colour: str) -> list[dict[str, Any]]:
    found = kubectl.run(
        "get",
        "pods",
        "-l",
        f"modelrollout.dev/rollout={name},modelrollout.dev/colour={colour}",
        "-o",
        "json",
        kubeconfig=kubeconfig,
    )
    items: list[dict[str, Any]] = json.loads(found.stdout)["items"]
    return items


def _green_from(stage: Stage, name: str, models: Path, model: dict[str, str]) -> dict[str, Any]:
    """A drill rollout of the demo's models whose green is ``model`` (spec.green.model)."""
    manifest = rollout_manifest(
        name,
        models=models,
        green_model="digits-int8.onnx",
        green_version="v2",
        prometheus_url=stage.prometheus.url,
        steps=DRILL_STEPS,
    )
    manifest["spec"]["green"]["model"] = model
    return manifest


def test_a_green_model_over_http_is_fetched_by_the_init_container_and_served(
    stage: Stage, model_store: tuple[str, list[str]], demo_models: Path
) -> None:
    base, fetched = model_store
    served = stage.serve("fetched")
    sha256 = hashlib.sha256((demo_models / "digits-int8.onnx").read_bytes()).hexdigest()
    model = {"uri": f"{base}/digits-int8.onnx?sig=abc", "version": "v2", "sha256": sha256}
    stage.apply(
        _green_from(stage, "fetched", demo_models, model)
    )  # waits until green's Pod is Ready: fetched, checked and loaded

    assert fetched == ["/digits-int8.onnx?sig=abc"]
    (pod,) = _pods(stage.kubeconfig, "fetched", "green")
    (init,) = pod["status"]["initContainerStatuses"]
    assert init["name"] == manifests.FETCH_CONTAINER
    assert init["state"]["terminated"]["exitCode"] == 0
    assert pod["spec"]["initContainers"][0]["args"][-2:] == ["--sha256", sha256]
    model = httpx.get(f"{served.green.url}/v2/models/fetched", timeout=5).json()
    assert model["versions"] == ["v2"]
    body = stage.wait_for_phase("fetched", {"Progressing"}, timeout=60)
    assert body["status"]["weights"]["green"] == DRILL_STEPS[0]["weight"]


def test_a_model_that_cannot_be_fetched_is_named_with_the_reason_in_the_status(
    stage: Stage, model_store: tuple[str, list[str]], demo_models: Path
) -> None:
    base, fetched = model_store
    stage.serve("unfetched")
    model = {"uri": f"{base}/no-such-model.onnx", "version": "v2"}
    stage.apply(_green_from(stage, "unfetched", demo_models, model), wait=False)

    def reported() -> bool:
        return "HTTP 404" in (stage.get("unfetched").get("status") or {}).get("message", "")

    process.wait_until(reported, timeout=90, what="the fetch failure in the status", interval=0.5)
    status = stage.get("unfetched")["status"]
    assert status["phase"] == "Pending"
    assert status["message"].startswith(
        "waiting for the blue and green model servers to be ready: green: container fetch-model of pod unfetched-green-"
    )
    assert f"model not fetched: {base}/no-such-model.onnx: HTTP 404" in status["message"]
    assert "/no-such-model.onnx" in fetched
    assert not [c for c in status.get("conditions", []) if c["type"] == "Ready" and c["status"] == "True"]


@pytest.fixture
def model_claim(kubeconfig: Path, demo_models: Path) -> Iterator[str]:
    """A PersistentVolumeClaim in the drills' namespace, bound to a hostPath PersistentVolume that holds the
    demo's models (the kubelet stand-in serves a claim from its volume's directory)."""
    claim, volume = "model-store", "model-store-volume"
    manifests_ = [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": volume},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadOnlyMany"],
                "storageClassName": "",
                "hostPath": {"path": str(demo_models), "type": "Directory"},
                "claimRef": {"namespace": "default", "name": claim},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": claim, "namespace": "default"},
            "spec": {
                "accessModes": ["ReadOnlyMany"],
                "storageClassName": "",
                "volumeName": volume,
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    ]
    kubectl.run(
        "apply",
        "-f",
        "-",
        kubeconfig=kubeconfig,
        stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests_}),
    )

    def bound() -> bool:
        found = kubectl.run("get", "pvc", claim, "-n", "default", "-o", "json", kubeconfig=kubeconfig)
        return bool(json.loads(found.stdout).get("status", {}).get("phase") == "Bound")

    try:
        process.wait_until(bound, timeout=60, what="the claim bound to its volume", interval=0.5)
        yield claim
    finally:
        kubectl.run("delete", "pvc", claim, "-n", "default", "--wait=false", kubeconfig=kubeconfig, check=False)
        kubectl.run("delete", "pv", volume, "--wait=false", kubeconfig=kubeconfig, check=False)


def test_a_green_model_on_a_claim_is_served_from_the_claims_volume(
    stage: Stage, model_claim: str, demo_models: Path
) -> None:
    served = stage.serve("claimed")
    sha256 = hashlib.sha256((demo_models / "digits-int8.onnx").read_bytes()).hexdigest()
    model = {"uri": f"pvc://{model_claim}/digits-int8.onnx", "version": "v2", "sha256": sha256}
    stage.apply(_green_from(stage, "claimed", demo_models, model))  # waits until green's Pod is Ready

    (pod,) = _pods(stage.kubeconfig, "claimed", "green")
    assert {"name": manifests.CLAIM_VOLUME, "persistentVolumeClaim": {"claimName": model_claim, "readOnly": True}} in (
        pod["spec"]["volumes"]
    )
    model_info = httpx.get(f"{served.green.url}/v2/models/claimed", timeout=5).json()
    assert model_info["versions"] == ["v2"]
    body = stage.wait_for_phase("claimed", {"Progressing"}, timeout=60)
    assert body["status"]["weights"]["green"] == DRILL_STEPS[0]["weight"]


def test_a_model_on_a_claim_that_does_not_exist_is_named_with_the_reason_in_the_status(
    stage: Stage, demo_models: Path
) -> None:
    stage.serve("unclaimed")
    model = {"uri": "pvc://no-such-claim/digits-int8.onnx", "version": "v2"}
    stage.apply(_green_from(stage, "unclaimed", demo_models, model), wait=False)

    def reported() -> bool:
        return "no-such-claim" in (stage.get("unclaimed").get("status") or {}).get("message", "")

    process.wait_until(reported, timeout=90, what="the missing claim in the status", interval=0.5)
    status = stage.get("unclaimed")["status"]
    assert status["phase"] == "Pending"
    assert status["message"].startswith(
        "waiting for the blue and green model servers to be ready: green: pod unclaimed-green-"
    )
    assert (
        'is not scheduled: 0/2 nodes are available: persistentvolumeclaim "no-such-claim" not found'
        in (status["message"])
    )
