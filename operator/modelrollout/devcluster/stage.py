"""Everything a rollout needs on this machine, for the e2e drills and the demo.

kwok runs the Deployments' Pods as fakes, so the model servers and the router that those Pods stand for
run here as real processes on loopback. The model servers follow the Deployments through a kubelet
stand-in (``devcluster.kubelet``): a process per Pod, with the Pod's model, restarted when it dies, its
readiness and restarts reported on the Pod. Prometheus scrapes them and the router. The operator runs as
``kopf run``, a separate process that can be killed and restarted.
"""

from __future__ import annotations

import base64
import json
import random
import secrets
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
from modelrollout.devcluster import kubectl, kubelet, process
from modelrollout.devcluster.kubelet import Kubelet
from modelrollout.devcluster.prometheus import PrometheusServer
from modelrollout.k8s import manifests
from modelrollout.routing.report import report_name

REPO = Path(__file__).resolve().parents[3]


DRILL_STEPS = [{"weight": 25, "pause": "3s"}, {"weight": 50, "pause": "3s"}, {"weight": 100}]
"""A short canary: two 3-second steps, then promotion."""
DRILL_CHECKS = {
    "accuracy": {"tolerance": 0.02, "minSamples": 300},
    "latency": {"minRequests": 30},
    "errors": {"minRequests": 10},
}
"""Demo-sized evidence: two points of tolerance and 300 labelled outcomes per colour keep a drill short. A p95
needs more requests than an error rate: over ten, one slow request on a loaded machine is the p95, and green's
p95 against blue's swung from 1.8x to 5.6x at the first step; over 30 (two seconds of green's share of the
drill load at 25%) it takes two."""


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
    traffic: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A ModelRollout of the demo's models; ``traffic`` adds to spec.traffic (its guard, for example)."""
    return {
        "apiVersion": constants.API_VERSION,
        "kind": constants.KIND,
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "server": {"runtime": "onnx", "replicas": 1},
            "blue": {"model": {"uri": f"file://{models / 'digits-fp32.onnx'}", "version": "v1"}},
            "green": {"model": {"uri": f"file://{models / green_model}", "version": green_version}},
            "traffic": {"provider": "builtin", "steps": steps, **(traffic or {})},
            "analysis": {"prometheus": {"url": prometheus_url}, **(analysis or {}), "checks": checks or {}},
        },
    }


@dataclass(frozen=True)
class Endpoint:
    """One colour of a served rollout as the router reaches it: an address that never changes (a Service)."""

    kubelet: Kubelet
    colour: str

    @property
    def address(self) -> str:
        return self.kubelet.address(self.colour)

    @property
    def url(self) -> str:
        return self.kubelet.url(self.colour)

    def log(self) -> str:
        """The output of every model-server process this colour has had."""
        return self.kubelet.log(self.colour)

    def inject_faults(self, **values: float) -> dict[str, Any]:
        """``POST /v2/faults`` on this colour's model server with the token its Pods' env gives it (as an SRE
        holding the Secret would, on the server's own port: the router refuses that path)."""
        token = self.kubelet.env.get(self.colour, {}).get("MODELSERVER_FAULTS_TOKEN", "")
        answer = httpx.post(f"{self.url}/v2/faults", json=values, headers={"authorization": f"Bearer {token}"})
        answer.raise_for_status()
        result: dict[str, Any] = answer.json()
        return result


@dataclass
class Served:
    """The processes standing in for one rollout's Pods: the model servers (``kubelet``) and the router."""

    name: str
    kubelet: Kubelet
    """Drills act on the model servers through it: ``kill``, ``hold_dead``/``release``, ``chaos``."""
    router_url: str
    router: subprocess.Popen[bytes]
    data_plane: str

    @property
    def blue(self) -> Endpoint:
        return Endpoint(self.kubelet, constants.BLUE)

    @property
    def green(self) -> Endpoint:
        return Endpoint(self.kubelet, constants.GREEN)

    @property
    def router_address(self) -> str:
        return self.router_url.removeprefix("http://")


_ROLLOUT_OF_ROUTER: dict[str, str] = {}
"""Router URL -> rollout name, for the routers Stages serve (Load's default model name)."""
_FEEDBACK_TOKEN_OF_ROUTER: dict[str, str] = {}
"""Router URL -> the rollout's feedback token (what Load's feedback carries)."""


def feedback_headers(router_url: str) -> dict[str, str]:
    """The Authorization header feedback through a Stage's router must carry (none for another router)."""
    token = _FEEDBACK_TOKEN_OF_ROUTER.get(router_url)
    return {"authorization": f"Bearer {token}"} if token else {}


@dataclass
class Load:
    """Labelled traffic through a router in the background: inference, then the true labels fed back."""

    url: str
    stream: dict[str, np.ndarray]
    model: str | None = None
    """The model's name in the URL; by default the rollout's, when ``url`` is a router that a Stage serves
    (a Pod serves its rollout's name), else ``digits``."""
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
        model = self.model or _ROLLOUT_OF_ROUTER.get(self.url, "digits")
        feedback = feedback_headers(self.url)
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
                    answer = client.post(f"/v2/models/{model}/infer", json=body)
                    if answer.status_code == 200:
                        client.post(
                            f"/v2/models/{model}/feedback",
                            json={"id": answer.json()["id"], "labels": y.tolist()},
                            headers=feedback,
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
    data_plane: str = "python"
    """The routers' data plane unless ``serve`` names one: ``python`` or ``nginx`` (the in-cluster default)."""
    operator_env: dict[str, str] = field(default_factory=dict)
    """More env for the operator processes (leader election, for one)."""
    standbys: list[subprocess.Popen[bytes]] = field(default_factory=list)
    """Operators started besides ``operator`` (``start_standby``), stopped with the stage."""

    def __enter__(self) -> Stage:
        self.prometheus.start()
        try:
            kubectl.install_crd(self.kubeconfig)
            self.start_operator()
        except BaseException:
            self.prometheus.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            for standby in self.standbys:
                process.stop(standby.pid)
                standby.poll()
            self.stop_operator()
            for served in list(self.served):
                self.unserve(served)
        finally:
            self.prometheus.stop()

    def unserve(self, served: Served) -> None:
        """Stop the processes of one rollout (Prometheus forgets their targets)."""
        self.served.remove(served)
        _ROLLOUT_OF_ROUTER.pop(served.router_url, None)
        _FEEDBACK_TOKEN_OF_ROUTER.pop(served.router_url, None)
        try:
            process.stop(served.router.pid)
            served.router.poll()
            kubelet.remove_target(self.prometheus, served.router_address)
        finally:
            served.kubelet.stop()

    def start_operator(self) -> None:
        self.operator = self._operator_process("operator")

    def start_standby(self) -> subprocess.Popen[bytes]:
        """One more operator process (log ``operator-standby-N.log``): with leader election in
        ``operator_env`` it waits for the Lease."""
        standby = self._operator_process(f"operator-standby-{len(self.standbys) + 1}")
        self.standbys.append(standby)
        return standby

    def _operator_process(self, name: str) -> subprocess.Popen[bytes]:
        env = {
            "KUBECONFIG": str(self.operator_kubeconfig or self.kubeconfig),
            "MODELROLLOUT_METRICS_PORT": str(process.free_port()),
            "MODELROLLOUT_METRICS_HOST": process.LOOPBACK,
            # one router process per rollout stands in for its router's Pods (it reports under no Pod's name)
            "MODELROLLOUT_ROUTER_REPLICAS": "1",
            **self.operator_env,
        }
        return process.start(
            name,
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
        self,
        name: str,
        *,
        green_model: str | None = None,
        green_version: str | None = None,
        green_env: dict[str, str] | None = None,
        blue_env: dict[str, str] | None = None,
        data_plane: str | None = None,
    ) -> Served:
        """Stand in for rollout ``name``'s Pods: its model servers follow its Deployments, a router follows it.

        Call it before applying the rollout: it returns at once with the router's URL (the model servers
        start when the operator's Deployments get Pods; ``apply`` waits for them). ``green_env`` and
        ``blue_env`` go over the Pods' env (green may always take faults: ``served.green.inject_faults``);
        ``data_plane`` is the router's (``python`` or ``nginx``; by default the stage's). ``green_model`` and
        ``green_version`` are what the caller is going to apply: the processes run what the Deployments say.
        """
        del green_model, green_version  # the Deployments decide
        data_plane = data_plane or self.data_plane
        token = self.feedback_token(name)
        stand_in = Kubelet(
            kubeconfig=self.kubeconfig,
            rollout=name,
            prometheus=self.prometheus,
            env={
                constants.BLUE: blue_env or {},
                constants.GREEN: {
                    "MODELSERVER_FAULTS_ENABLED": "true",
                    "MODELSERVER_FAULTS_TOKEN": secrets.token_hex(16),
                    **(green_env or {}),
                },
            },
            log_dir=self.log_dir,
        )
        stand_in.start()
        port = process.free_port()
        try:
            # the router runs as its own ServiceAccount, with only the rights of the Role the operator gives it
            router_config = kubectl.account_kubeconfig(
                self.kubeconfig, f"{name}-router", "default", self.log_dir / f"router-{name}.kubeconfig"
            )
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
                    str(router_config),
                    "--blue-url",
                    stand_in.url(constants.BLUE),
                    "--green-url",
                    stand_in.url(constants.GREEN),
                    "--port",
                    str(port),
                    "--data-plane",
                    data_plane,
                    "--log-format",
                    "json",
                ],
                log_dir=self.log_dir,
                env={"MODELROUTER_FEEDBACK_TOKEN": token},
            )
        except BaseException:
            stand_in.stop()
            raise
        served = Served(
            name=name,
            kubelet=stand_in,
            router_url=f"http://{process.LOOPBACK}:{port}",
            router=router,
            data_plane=data_plane,
        )
        self.served.append(served)
        _ROLLOUT_OF_ROUTER[served.router_url] = name
        _FEEDBACK_TOKEN_OF_ROUTER[served.router_url] = token
        process.wait_until(
            lambda: httpx.get(f"{served.router_url}/healthz", timeout=1).status_code == 200,
            timeout=30,
            what="router",
            alive=lambda: router.poll() is None,
        )
        kubelet.add_target(
            self.prometheus, served.router_address, {"namespace": "default", "service": f"{name}-router"}
        )
        self.prometheus.wait_for_target(served.router_address)
        return served

    def feedback_token(self, name: str) -> str:
        """Rollout ``name``'s feedback token: its ``<name>-feedback`` Secret, created first here as a user may
        (with a token of their own; the operator then keeps it) when there is none yet."""
        secret, key = manifests.feedback_secret_name(name), manifests.FEEDBACK_TOKEN_KEY
        created = f"--from-literal={key}={secrets.token_urlsafe(24)}"
        kubectl.run("create", "secret", "generic", secret, created, kubeconfig=self.kubeconfig, check=False)
        encoded = kubectl.run("get", "secret", secret, "-o", f"jsonpath={{.data.{key}}}", kubeconfig=self.kubeconfig)
        return base64.b64decode(encoded.stdout).decode()

    def canary(
        self,
        name: str,
        *,
        steps: list[dict[str, Any]],
        green_model: str = "digits-int8.onnx",
        green_version: str = "v2",
        checks: dict[str, Any] | None = None,
        analysis: dict[str, Any] | None = None,
        green_env: dict[str, str] | None = None,
        data_plane: str | None = None,
        traffic: dict[str, Any] | None = None,
    ) -> Served:
        """Serve rollout ``name`` (see ``serve``) and apply it: blue the demo's fp32 model (v1), green
        ``green_model`` as ``green_version``, analysed by this stage's Prometheus; ``traffic`` adds to
        spec.traffic."""
        served = self.serve(
            name, green_model=green_model, green_version=green_version, green_env=green_env, data_plane=data_plane
        )
        self.apply(
            rollout_manifest(
                name,
                models=self.models,
                green_model=green_model,
                green_version=green_version,
                prometheus_url=self.prometheus.url,
                steps=steps,
                checks=checks,
                analysis=analysis,
                traffic=traffic,
            )
        )
        return served

    def served_as(self, name: str) -> Served | None:
        return next((served for served in self.served if served.name == name), None)

    def apply(self, manifest: dict[str, Any], *, wait: bool = True, timeout: float = 120.0) -> None:
        """``kubectl apply``; for a rollout served here, then wait until its blue and green Deployments exist and
        are rolled out (as ``kubectl rollout status`` would say), so that traffic sent next finds their model
        servers ready."""
        kubectl.run("apply", "-f", "-", kubeconfig=self.kubeconfig, stdin=json.dumps(manifest))
        name = manifest["metadata"]["name"]
        served = self.served_as(name) if manifest.get("kind") == constants.KIND else None
        if served is None or not wait:
            return
        try:
            process.wait_until(
                lambda: self.rolled_out(name), timeout=timeout, what=f"{name}'s model servers", interval=0.5
            )
        except TimeoutError as error:
            raise TimeoutError(
                f"{error}\n--- operator log tail ---\n{self.operator_log()[-3000:]}"
                f"\n--- model server log tail ---\n{served.kubelet.log()[-3000:]}"
            ) from error

    def rolled_out(self, name: str) -> bool:
        """Whether ``<name>-blue`` and ``<name>-green`` exist and every replica they want is updated and ready."""
        found = kubectl.run(
            "get",
            "deployments",
            "-l",
            f"{constants.LABEL_ROLLOUT}={name},app.kubernetes.io/name=model-server",
            "-o",
            "json",
            kubeconfig=self.kubeconfig,
        )
        deployments = {item["metadata"]["name"]: item for item in json.loads(found.stdout)["items"]}
        for colour in constants.COLOURS:
            deployment = deployments.get(f"{name}-{colour}")
            if deployment is None:
                return False
            wanted = deployment["spec"].get("replicas", 1)
            status = deployment.get("status") or {}
            if (status.get("observedGeneration") or 0) < deployment["metadata"]["generation"]:
                return False
            if (status.get("updatedReplicas") or 0) < wanted or (status.get("readyReplicas") or 0) < wanted:
                return False
        return True

    def get(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(
            kubectl.run("get", "mro", name, "-o", "json", kubeconfig=self.kubeconfig).stdout
        )
        return result

    def router_report(self, name: str) -> dict[str, str]:
        """The data of rollout ``name``'s router report (routing.report); empty when there is none yet."""
        found = kubectl.run(
            "get", "configmap", report_name(name), "-o", "json", kubeconfig=self.kubeconfig, check=False
        )
        if found.returncode != 0:
            return {}
        data: dict[str, str] = json.loads(found.stdout).get("data") or {}
        return data

    def applied_report(self, name: str) -> str | None:
        """What rollout ``name``'s router reports it serves: ``"<revision>/<green>"``, or None."""
        return self.router_report(name).get(constants.REPORT_APPLIED)

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
