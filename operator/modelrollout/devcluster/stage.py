"""Everything a rollout needs on this machine, for the e2e drills and the demo.

kwok runs the Deployments' Pods as fakes, so the model servers and the router that those Pods stand for
run here as real processes on loopback, labelled exactly as the Pods would be; Prometheus scrapes them.
The operator runs as ``kopf run``, a separate process that can be killed and restarted.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from modelrollout.api import constants
from modelrollout.devcluster import kubectl, process
from modelrollout.devcluster.modelservers import ModelServer
from modelrollout.devcluster.prometheus import PrometheusServer

REPO = Path(__file__).resolve().parents[3]


def rollout_manifest(
    name: str,
    *,
    models: Path,
    green_model: str,
    green_version: str,
    prometheus_url: str,
    steps: list[dict[str, Any]],
    checks: dict[str, Any] | None = None,
    analysis: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": constants.API_VERSION,
        "kind": constants.KIND,
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "server": {"runtime": "onnx", "replicas": 1},
            "blue": {"model": {"uri": f"file://{models / 'digits-fp32.onnx'}", "version": "v1"}},
            "green": {"model": {"uri": f"file://{models / green_model}", "version": green_version}},
            "traffic": {"provider": "builtin", "steps": steps},
            "analysis": {"prometheus": {"url": prometheus_url}, **(analysis or {}), "checks": checks or {}},
        },
    }


@dataclass
class Served:
    """The processes standing in for one rollout's Pods."""

    blue: ModelServer
    green: ModelServer
    router_url: str
    router: subprocess.Popen[bytes]


@dataclass
class Load:
    """Labelled traffic through a router in the background: inference, then the true labels fed back."""

    url: str
    stream: dict[str, np.ndarray]
    model: str = "digits"
    rows: int = 4
    rate: float = 60.0
    sent: int = 0
    failed: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Load:
        self._thread = threading.Thread(target=self._run, daemon=True, name="load")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        rng = random.Random(7)  # noqa: S311 - picks which test digits to send
        count = len(self.stream["labels"])
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self._stop.is_set():
                begun = time.monotonic()
                start = rng.randrange(0, count - self.rows)
                x, y = (
                    self.stream["inputs"][start : start + self.rows],
                    self.stream["labels"][start : start + self.rows],
                )
                body = {
                    "inputs": [
                        {"name": "input", "shape": [self.rows, 64], "datatype": "FP32", "data": x.ravel().tolist()}
                    ]
                }
                try:
                    answer = client.post(f"/v2/models/{self.model}/infer", json=body)
                    if answer.status_code == 200:
                        client.post(
                            f"/v2/models/{self.model}/feedback", json={"id": answer.json()["id"], "labels": y.tolist()}
                        )
                        self.sent += 1
                    else:
                        self.failed += 1
                except httpx.HTTPError:
                    self.failed += 1
                self._stop.wait(max(0.0, 1 / self.rate - (time.monotonic() - begun)))


@dataclass
class Stage:
    kubeconfig: Path
    models: Path
    prometheus: PrometheusServer = field(default_factory=PrometheusServer)
    operator: subprocess.Popen[bytes] | None = None
    served: list[Served] = field(default_factory=list)
    log_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="stage-")))
    operator_kubeconfig: Path | None = None
    """Credentials the operator runs with (default: ``kubeconfig``, the cluster admin)."""

    def __enter__(self) -> Stage:
        self.prometheus.start()
        kubectl.install_crd(self.kubeconfig)
        self.start_operator()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop_operator()
            for served in list(self.served):
                self.unserve(served)
        finally:
            self.prometheus.stop()

    def unserve(self, served: Served) -> None:
        """Stop the processes of one rollout (Prometheus forgets their targets)."""
        self.served.remove(served)
        try:
            process.stop(served.router.pid)
            served.router.poll()
            for server in (served.blue, served.green):
                self.prometheus.remove_target(server.address)
        finally:
            served.blue.stop()
            served.green.stop()

    def start_operator(self) -> None:
        env = {
            "KUBECONFIG": str(self.operator_kubeconfig or self.kubeconfig),
            "MODELROLLOUT_METRICS_PORT": str(process.free_port()),
            "MODELROLLOUT_METRICS_HOST": process.LOOPBACK,
        }
        self.operator = process.start(
            "operator",
            [str(Path(sys.executable).parent / "kopf"), "run", "--standalone", "-A", "-m", "modelrollout.handlers"],
            log_dir=self.log_dir,
            env=env,
        )

    def kill_operator(self) -> None:
        """SIGKILL: no chance to clean up, as when a node dies."""
        if self.operator is not None:
            self.operator.kill()
            self.operator.wait()
            self.operator = None

    def stop_operator(self) -> None:
        if self.operator is not None:
            process.stop(self.operator.pid)
            self.operator.poll()
            self.operator = None

    def operator_log(self) -> str:
        return (self.log_dir / "operator.log").read_text() if (self.log_dir / "operator.log").exists() else ""

    def serve(
        self, name: str, *, green_model: str, green_version: str, green_env: dict[str, str] | None = None
    ) -> Served:
        """Start blue (digits fp32, v1), green, and a router following rollout ``name``; Prometheus scrapes them."""
        blue = ModelServer(
            self.models / "digits-fp32.onnx",
            version="v1",
            rollout=name,
            colour="blue",
            golden_set=self.models / "digits-fp32.golden.npz",
        )
        green = ModelServer(
            self.models / green_model,
            version=green_version,
            rollout=name,
            colour="green",
            golden_set=self.models / green_model.replace(".onnx", ".golden.npz"),
            env={"MODELSERVER_FAULTS_ENABLED": "true", **(green_env or {})},
        )
        blue.start(wait_ready=False)
        green.start(wait_ready=False)
        blue.wait_ready()
        green.wait_ready()
        for server in (blue, green):
            self.prometheus.add_target(server.address)
        port = process.free_port()
        router = process.start(
            f"router-{name}",
            [
                sys.executable,
                "-m",
                "model_server.router",
                "--rollout",
                name,
                "--namespace",
                "default",
                "--kubeconfig",
                str(self.kubeconfig),
                "--blue-url",
                blue.url,
                "--green-url",
                green.url,
                "--port",
                str(port),
                "--log-format",
                "json",
            ],
            log_dir=self.log_dir,
        )
        url = f"http://{process.LOOPBACK}:{port}"
        process.wait_until(
            lambda: httpx.get(f"{url}/healthz", timeout=1).status_code == 200,
            timeout=30,
            what="router",
            alive=lambda: router.poll() is None,
        )
        served = Served(blue=blue, green=green, router_url=url, router=router)
        self.served.append(served)
        for server in (blue, green):
            self.prometheus.wait_for_target(server.address)
        return served

    def apply(self, manifest: dict[str, Any]) -> None:
        kubectl.run("apply", "-f", "-", kubeconfig=self.kubeconfig, stdin=json.dumps(manifest))

    def get(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(
            kubectl.run("get", "mro", name, "-o", "json", kubeconfig=self.kubeconfig).stdout
        )
        return result

    def wait_for_phase(self, name: str, phases: set[str], *, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        body: dict[str, Any] = {}
        while time.monotonic() < deadline:
            body = self.get(name)
            if (body.get("status") or {}).get("phase") in phases:
                return body
            time.sleep(0.5)
        status = body.get("status") or {}
        raise TimeoutError(
            f"{name} not in {phases} after {timeout}s: phase {status.get('phase')}, "
            f"message {status.get('message')!r}\n--- operator log tail ---\n{self.operator_log()[-3000:]}"
        )

    def command(self, name: str, command: str) -> None:
        kubectl.run(
            "annotate",
            "mro",
            name,
            f"{constants.ANNOTATION_COMMAND}={command}",
            "--overwrite",
            kubeconfig=self.kubeconfig,
        )
