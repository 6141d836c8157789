"""The kubelet stand-in on the real control plane: model-server processes follow their Deployments' Pods, keep
one address per colour through a model change without failing a request, come back after a SIGKILL (and the
Pod says so), stay dead when a drill holds them dead (and the Pod is not Ready), and are scraped by Prometheus
with target labels that leave the series' own labels alone."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from modelrollout.api import constants
from modelrollout.devcluster import kubectl, process
from modelrollout.devcluster import kubelet as kubelet_module
from modelrollout.devcluster.kubelet import Kubelet
from modelrollout.devcluster.prometheus import PrometheusServer
from modelrollout.devcluster.stage import Load, Stage, rollout_manifest

pytestmark = pytest.mark.e2e


def deployment(
    rollout: str, colour: str, *, models: Path, model: str, version: str, replicas: int = 1
) -> dict[str, Any]:
    """A model-server Deployment shaped like the operator's (k8s.manifests.model_deployment), owned by nothing."""
    labels = {
        "app.kubernetes.io/name": "model-server",
        constants.LABEL_ROLLOUT: rollout,
        constants.LABEL_COLOUR: colour,
        constants.LABEL_VERSION: version,
    }
    env = {
        "MODELSERVER_MODEL_PATH": str(models / model),
        "MODELSERVER_MODEL_NAME": "digits",
        "MODELSERVER_MODEL_VERSION": version,
        "MODELSERVER_RUNTIME": "onnx",
        "MODELSERVER_ROLLOUT": rollout,
        "MODELSERVER_COLOUR": colour,
        "MODELSERVER_HOST": "0.0.0.0",  # what a container gets; the stand-in uses loopback
        "MODELSERVER_PORT": "8080",
        "MODELSERVER_LOG_FORMAT": "json",
        "MODELSERVER_GOLDEN_SET": str(models / model.replace(".onnx", ".golden.npz")),
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": f"{rollout}-{colour}", "namespace": "default", "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {constants.LABEL_ROLLOUT: rollout, constants.LABEL_COLOUR: colour}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "model-server",
                            "image": "modelrollout/model-server:dev",
                            "env": [{"name": k, "value": v} for k, v in sorted(env.items())],
                            "ports": [{"name": "http", "containerPort": 8080}],
                            "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": "http"}},
                        }
                    ]
                },
            },
        },
    }


@dataclass
class Deployments:
    kubeconfig: Path
    models: Path
    rollout: str

    def apply(self, colour: str = "green", **kwargs: Any) -> None:
        body = deployment(self.rollout, colour, models=self.models, **kwargs)
        kubectl.run("apply", "-f", "-", kubeconfig=self.kubeconfig, stdin=json.dumps(body))

    def pod(self, colour: str = "green") -> dict[str, Any]:
        """The colour's only Pod, as the API server has it."""
        found = kubectl.run(
            "get",
            "pods",
            "-l",
            f"{constants.LABEL_ROLLOUT}={self.rollout},{constants.LABEL_COLOUR}={colour}",
            "-o",
            "json",
            kubeconfig=self.kubeconfig,
        )
        items: list[dict[str, Any]] = json.loads(found.stdout)["items"]
        assert len(items) == 1, [item["metadata"]["name"] for item in items]
        return items[0]

    def delete(self) -> None:
        for colour in constants.COLOURS:
            kubectl.run(
                "delete", "deployment", f"{self.rollout}-{colour}", "--ignore-not-found", kubeconfig=self.kubeconfig
            )


def ready_condition(pod: dict[str, Any]) -> str:
    return next(c["status"] for c in pod["status"]["conditions"] if c["type"] == "Ready")


def container_status(pod: dict[str, Any]) -> dict[str, Any]:
    status: dict[str, Any] = pod["status"]["containerStatuses"][0]
    return status


@pytest.fixture
def stand_in(
    request: pytest.FixtureRequest, kubeconfig: Path, demo_models: Path, prometheus_server: PrometheusServer
) -> Iterator[tuple[Kubelet, Deployments]]:
    rollout = request.node.name.removeprefix("test_").replace("_", "-")[:40].rstrip("-").lower()
    rollout = "".join(ch if ch.isalnum() or ch == "-" else "-" for ch in rollout)
    deployments = Deployments(kubeconfig, demo_models, rollout)
    with Kubelet(kubeconfig=kubeconfig, rollout=rollout, prometheus=prometheus_server) as kubelet:
        try:
            yield kubelet, deployments
        finally:
            deployments.delete()


@dataclass
class Traffic:
    """Light inference traffic in the background, counting failures and the versions that answered."""

    url: str
    inputs: np.ndarray
    rate: float = 40.0
    versions: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Traffic:
        self._thread = threading.Thread(target=self._run, daemon=True, name="traffic")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    @property
    def sent(self) -> int:
        return sum(self.versions.values()) + len(self.failures)

    def _run(self) -> None:
        body = {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": self.inputs[0].tolist()}]}
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self._stop.is_set():
                try:
                    answer = client.post("/v2/models/digits/infer", json=body)
                    if answer.status_code == 200:
                        self.versions[answer.json()["model_version"]] += 1
                    else:
                        self.failures.append(f"{answer.status_code} {answer.text[:200]}")
                except httpx.HTTPError as error:
                    self.failures.append(f"{type(error).__name__}: {error}")
                self._stop.wait(1 / self.rate)


def start_router(*, blue: str, green: str, data_plane: str, log_dir: Path) -> tuple[Any, str]:
    """The builtin router with a fixed weight (all traffic to green): no rollout to follow."""
    port = process.free_port()
    router = process.start(
        f"router-{port}",
        [
            sys.executable,
            "-m",
            "model_server.router",
            "--blue-url",
            blue,
            "--green-url",
            green,
            "--weight",
            "100",
            "--port",
            str(port),
            "--data-plane",
            data_plane,
            "--log-format",
            "json",
        ],
        log_dir=log_dir,
    )
    url = f"http://{process.LOOPBACK}:{port}"
    process.wait_until(
        lambda: httpx.get(f"{url}/healthz", timeout=1).status_code == 200,
        timeout=30,
        what="router",
        alive=lambda: router.poll() is None,
    )
    return router, url


@pytest.mark.parametrize("data_plane", ["python", "nginx"])
def test_follows_a_model_change_on_one_address_without_failing_a_request(
    stand_in: tuple[Kubelet, Deployments], demo_models: Path, data_plane: str
) -> None:
    kubelet, deployments = stand_in
    deployments.apply(model="digits-fp32.onnx", version="v1")
    first = kubelet.wait_ready("green", version="v1")
    address = kubelet.address("green")
    inputs = np.load(demo_models / "digits-stream.npz")["inputs"][:1]
    router, url = start_router(
        blue=kubelet.url("blue"), green=kubelet.url("green"), data_plane=data_plane, log_dir=kubelet.log_dir
    )
    try:
        with Traffic(url, inputs) as traffic, Traffic(kubelet.url("green"), inputs) as direct:

            def answered_by(version: str) -> bool:
                return all(seen.versions[version] >= 20 for seen in (traffic, direct))

            process.wait_until(lambda: answered_by("v1"), timeout=60, what="20 answers from v1 on both paths")
            deployments.apply(model="digits-int8.onnx", version="v2")
            kubelet.wait_ready("green", version="v2")
            process.wait_until(
                lambda: [p.version for p in kubelet.pods("green")] == ["v2"], timeout=60, what="the v1 pod gone"
            )
            process.wait_until(lambda: answered_by("v2"), timeout=60, what="20 answers from v2 on both paths")
    finally:
        process.stop(router.pid)
        router.poll()
    assert kubelet.address("green") == address  # the router's upstream never changed
    for seen in (traffic, direct):  # through the router, and straight to the colour's address
        assert seen.failures == [], seen.failures[:5]
        assert seen.versions["v1"] > 0 and seen.versions["v2"] > 0, seen.versions
    (second,) = kubelet.pods("green")
    assert second.name != first.name and second.pid != first.pid
    pod = deployments.pod("green")
    assert ready_condition(pod) == "True"
    assert container_status(pod)["ready"] is True and container_status(pod)["restartCount"] == 0


def test_a_killed_process_is_restarted_counted_and_reported_on_the_pod(
    stand_in: tuple[Kubelet, Deployments], prometheus_server: PrometheusServer
) -> None:
    kubelet, deployments = stand_in
    deployments.apply(model="digits-int8.onnx", version="v2")
    before = kubelet.wait_ready("green")
    assert kubelet.kill("green") == 1
    process.wait_until(
        lambda: any(p.ready and p.pid not in (None, before.pid) for p in kubelet.pods("green")),
        timeout=30,
        what="a new process, ready",
    )
    assert kubelet.restarts("green") == 1
    process.wait_until(
        lambda: (
            container_status(deployments.pod()).get("restartCount") == 1
            and ready_condition(deployments.pod()) == "True"
        ),
        timeout=60,
        what="restartCount 1 and Ready on the pod",
    )
    status = container_status(deployments.pod())
    assert status["lastState"]["terminated"]["exitCode"] == 137  # SIGKILL, as a container runtime reports it
    assert status["ready"] is True and "running" in status["state"]
    # a Pod keeps its address across restarts (like its Pod IP): Prometheus scrapes it again
    process.wait_until(
        lambda: [r["value"][1] for r in prometheus_server.query(f'up{{pod="{before.name}"}}')] == ["1"],
        timeout=60,
        what="the restarted pod scraped",
    )

    with kubelet.chaos("green", every=1.5):
        process.wait_until(lambda: kubelet.restarts("green") >= 2, timeout=60, what="two restarts under chaos")
    kubelet.wait_ready("green", timeout=60)  # chaos over: it comes back


def test_a_process_held_dead_stays_dead_and_its_pod_is_not_ready(
    stand_in: tuple[Kubelet, Deployments], prometheus_server: PrometheusServer, demo_models: Path
) -> None:
    kubelet, deployments = stand_in
    deployments.apply(model="digits-int8.onnx", version="v2")
    kubelet.wait_ready("green")
    process.wait_until(lambda: ready_condition(deployments.pod()) == "True", timeout=60, what="the pod Ready")
    router, url = start_router(
        blue=kubelet.url("blue"), green=kubelet.url("green"), data_plane="python", log_dir=kubelet.log_dir
    )
    inputs = np.load(demo_models / "digits-stream.npz")["inputs"][:1]
    try:
        assert kubelet.hold_dead("green") == 1
        process.wait_until(lambda: ready_condition(deployments.pod()) == "False", timeout=60, what="the pod not Ready")
        with Traffic(url, inputs, rate=20) as traffic:
            time.sleep(kubelet.max_backoff + 2)  # longer than any back-off: a held process is not restarted
        assert [p.pid for p in kubelet.pods("green")] == [None]
        assert kubelet.restarts("green") == 0
        pod = deployments.pod()
        status = container_status(pod)
        assert ready_condition(pod) == "False" and status["ready"] is False
        assert status["state"]["waiting"]["reason"] == "CrashLoopBackOff"
        assert status["lastState"]["terminated"]["exitCode"] == 137
        with pytest.raises(httpx.ConnectError):  # refused at once, like a Service without ready endpoints
            httpx.get(f"{kubelet.url('green')}/v2/health/ready", timeout=2)
        # the router's clients saw the errors, and Prometheus has them from the router
        assert traffic.sent > 0 and len(traffic.failures) == traffic.sent
        router_address = url.removeprefix("http://")
        kubelet_module.add_target(prometheus_server, router_address, {"namespace": "default", "service": "router"})
        process.wait_until(
            lambda: any(
                float(r["value"][1]) >= traffic.sent
                for r in prometheus_server.query(f'modelrouter_upstream_errors_total{{instance="{router_address}"}}')
                if r["metric"].get("colour") == "green"
            ),
            timeout=60,
            what="upstream errors of green in Prometheus",
        )
        kubelet_module.remove_target(prometheus_server, router_address)
        deployment_status = json.loads(
            kubectl.run(
                "get", "deployment", f"{deployments.rollout}-green", "-o", "json", kubeconfig=deployments.kubeconfig
            ).stdout
        )["status"]
        assert not deployment_status.get("readyReplicas")  # the Deployment controller saw it too

        kubelet.release("green")
        kubelet.wait_ready("green", timeout=30)
        assert kubelet.restarts("green") == 1
        process.wait_until(lambda: ready_condition(deployments.pod()) == "True", timeout=60, what="the pod Ready")
    finally:
        process.stop(router.pid)
        router.poll()


def test_prometheus_target_labels_leave_the_series_labels_alone(
    stand_in: tuple[Kubelet, Deployments], prometheus_server: PrometheusServer
) -> None:
    kubelet, deployments = stand_in
    deployments.apply(model="digits-int8.onnx", version="v2")
    pod = kubelet.wait_ready("green")
    query = f'{{__name__=~"modelserver_.+", pod="{pod.name}"}}'
    process.wait_until(lambda: bool(prometheus_server.query(query)), timeout=60, what="the pod's series")
    labels = prometheus_server.query(query)[0]["metric"]
    assert labels["rollout"] == deployments.rollout and labels["colour"] == "green" and labels["version"] == "v2"
    assert labels["namespace"] == "default" and labels["service"] == f"{deployments.rollout}-green"
    assert not [name for name in labels if name.startswith("exported_")]


def test_scaled_to_zero_means_no_process_and_a_refused_address(stand_in: tuple[Kubelet, Deployments]) -> None:
    kubelet, deployments = stand_in
    deployments.apply(model="digits-int8.onnx", version="v2")
    kubelet.wait_ready("green")
    deployments.apply(model="digits-int8.onnx", version="v2", replicas=0)
    kubelet.wait_no_pods("green", timeout=30)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{kubelet.url('green')}/v2/health/ready", timeout=2)
    deployments.apply(model="digits-int8.onnx", version="v2", replicas=1)
    kubelet.wait_ready("green", timeout=60)
    httpx.get(f"{kubelet.url('green')}/v2/health/ready", timeout=2).raise_for_status()


def test_stage_serves_a_rollout_through_the_nginx_router_and_prometheus_scrapes_the_router(
    kubeconfig: Path, demo_models: Path
) -> None:
    name = "staged"
    stream = dict(np.load(demo_models / "digits-stream.npz"))
    with Stage(kubeconfig=kubeconfig, models=demo_models) as stage:
        served = stage.serve(name, data_plane="nginx")
        stage.apply(  # returns once both colours' Deployments are rolled out
            rollout_manifest(
                name,
                models=demo_models,
                green_model="digits-int8.onnx",
                green_version="v2",
                prometheus_url=stage.prometheus.url,
                steps=[{"weight": 50, "pause": "manual"}, {"weight": 100}],
            )
        )
        assert {p.version for p in served.kubelet.pods()} == {"v1", "v2"}
        assert all(p.ready for p in served.kubelet.pods())
        process.wait_until(
            lambda: httpx.get(f"{served.router_url}/router/state").json()["greenWeight"] == 50,
            timeout=60,
            what="the router at 50% green",
        )
        load = Load(served.router_url, stream).start()  # addresses the model by the rollout's name
        try:
            query = f'modelrouter_requests_total{{rollout="{name}", namespace="default", service="{name}-router"}}'
            process.wait_until(
                lambda: (
                    {r["metric"]["colour"] for r in stage.prometheus.query(query) if float(r["value"][1]) > 0}
                    == {"blue", "green"}
                ),
                timeout=30,
                what="the router's requests by colour in Prometheus",
            )
        finally:
            load.stop()
        assert load.sent > 0 and load.failed == 0
        stage.command(name, "abort")
        stage.wait_for_phase(name, {"Aborted"}, timeout=30)
        kubectl.run("delete", "mro", name, kubeconfig=kubeconfig)
