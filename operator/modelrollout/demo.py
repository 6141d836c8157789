"""`make demo`: the whole story on this machine, with no cluster of the user's own.

A local Kubernetes control plane, Prometheus, the operator, and for each rollout a blue and a green model
server and the builtin router, with labelled traffic flowing through the router. Three canaries run in turn:
1. the INT8 digits model, within a point of the FP32 one: promoted;
2. the 2-bit digits model, several points worse: rolled back on the accuracy delta;
3. the INT8 model with 250 ms of injected latency: rolled back on p95 latency.
Every decision is printed as it happens, with its numbers.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np

from modelrollout.devcluster import cluster, kubectl
from modelrollout.devcluster.modelservers import demo_models_dir
from modelrollout.devcluster.stage import Load, Stage, rollout_manifest

STEPS: list[dict[str, Any]] = [
    {"weight": 10, "pause": "5s"},
    {"weight": 25, "pause": "5s"},
    {"weight": 50, "pause": "5s"},
    {"weight": 100},
]
# Demo-sized evidence so that each canary takes about a minute: production keeps the defaults
# (one point of tolerance, 1,000 labelled outcomes per colour).
CHECKS = {
    "accuracy": {"tolerance": 0.02, "minSamples": 300},
    "latency": {"minRequests": 10},
    "errors": {"minRequests": 10},
}
ANALYSIS = {"interval": "2s", "window": "20s", "progressDeadline": "3m"}
SCENARIOS = [
    ("digits-int8", "digits-int8.onnx", "v2-int8", None, "a quantized model within a point of FP32"),
    ("digits-2bit", "digits-2bit.onnx", "v2-2bit", None, "a 2-bit model several points less accurate"),
    (
        "digits-slow",
        "digits-int8.onnx",
        "v2-slow",
        {"MODELSERVER_FAULT_LATENCY_SECONDS": "0.25"},
        "the INT8 model with 250 ms of injected latency",
    ),
]


def say(text: str) -> None:
    print(text, flush=True)


def follow(stage: Stage, name: str, *, begun: float, timeout: float = 240) -> dict[str, Any]:
    """Print each decision of rollout ``name`` as it is recorded, until the rollout settles."""
    shown = 0
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = stage.get(name)
        status = body.get("status") or {}
        history = status.get("history") or []
        for entry in history[shown:]:
            say(
                f"  [{time.monotonic() - begun:6.1f}s] step {entry['stepIndex']}  {entry['greenWeight']:3d}% green  "
                f"{entry['reason']:<26} {entry['message']}"
            )
        shown = len(history)
        if status.get("phase") in ("Promoted", "RolledBack", "Aborted", "Failed"):
            return body
        time.sleep(0.5)
    raise TimeoutError(f"{name} did not settle in {timeout}s")


def run() -> dict[str, str]:
    begun = time.monotonic()
    models = demo_models_dir()
    accuracy = (models / "accuracy.json").read_text()
    stream = dict(np.load(models / "digits-stream.npz"))
    say("=== Demo models (scikit-learn digits, built by model_server.demo_models):")
    say(accuracy)
    say("=== Starting a local Kubernetes control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok)")
    outcomes: dict[str, str] = {}
    with cluster.LocalCluster(nodes=2) as local, Stage(kubeconfig=local.kubeconfig_path, models=models) as stage:
        say(f"=== Prometheus at {stage.prometheus.url}; the operator runs as `kopf run -m modelrollout.handlers`")
        for name, model, version, faults, what in SCENARIOS:
            say(f"\n=== Canary {name}: {what}")
            served = stage.serve(name, green_model=model, green_version=version, green_env=faults)
            load = Load(served.router_url, stream, model=name).start()
            stage.apply(
                rollout_manifest(
                    name,
                    models=models,
                    green_model=model,
                    green_version=version,
                    prometheus_url=stage.prometheus.url,
                    steps=STEPS,
                    checks=CHECKS,
                    analysis=ANALYSIS,
                )
            )
            try:
                body = follow(stage, name, begun=begun)
            finally:
                load.stop()
            outcomes[name] = body["status"]["phase"]
            say(
                f"  => {name}: {body['status']['phase']}; green weight {body['status']['weights']['green']}%; "
                f"{load.sent} labelled requests sent through the router"
            )
        say("\n=== kubectl get modelrollouts")
        say(kubectl.run("get", "modelrollouts", "-o", "wide", kubeconfig=local.kubeconfig_path).stdout)
        say("=== kubectl get events (ModelRollout decisions)")
        events = kubectl.run(
            "get",
            "events",
            "--field-selector",
            "involvedObject.kind=ModelRollout",
            "--sort-by=.lastTimestamp",
            kubeconfig=local.kubeconfig_path,
        ).stdout
        say("\n".join(line[:200] for line in events.splitlines()[-12:]))
    say(f"\n=== Done in {time.monotonic() - begun:.0f}s; every process stopped")
    return outcomes


EXPECTED = {"digits-int8": "Promoted", "digits-2bit": "RolledBack", "digits-slow": "RolledBack"}


def main() -> int:
    try:
        outcomes = run()
    except KeyboardInterrupt:
        return 130
    if outcomes != EXPECTED:
        say(f"unexpected outcomes: {outcomes}, expected {EXPECTED}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
