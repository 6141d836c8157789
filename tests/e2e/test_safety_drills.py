"""Safety drills end to end: what an SRE would try to break. Real control plane, the operator as its own
process, model servers that follow their Deployments (devcluster.kubelet), the router, real Prometheus.

Outcomes asserted here do not depend on machine speed: each drill waits for a condition with a generous
timeout and checks *why* the rollout ended where it did (the times are measured in benchmarks/safety.py).
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import numpy as np
import pytest

from modelrollout.api import constants
from modelrollout.devcluster import kubectl
from modelrollout.devcluster.stage import DRILL_CHECKS, DRILL_STEPS, Load, Served, Stage, rollout_manifest

pytestmark = pytest.mark.e2e

HOLD_STEPS = [{"weight": 25, "pause": "10m"}, {"weight": 100}]
"""A canary that stays at 25% for as long as a drill needs (its analysis keeps running)."""
ANALYSIS = {"interval": "2s", "window": "20s", "progressDeadline": "15m"}
"""A progress deadline far beyond every drill: a rollback here is always a detection, never the deadline."""
WITHOUT_GUARD = {"guard": {"enabled": False}}
"""For drills of the Prometheus path: the router's guard would roll these faults back first."""


def begin(
    stage: Stage,
    stream: dict[str, np.ndarray],
    name: str,
    *,
    steps: list[dict[str, Any]],
    analysis: dict[str, Any] | None = None,
    traffic: dict[str, Any] | None = None,
) -> tuple[Served, Load]:
    served = stage.canary(name, steps=steps, checks=DRILL_CHECKS, analysis=analysis or ANALYSIS, traffic=traffic)
    return served, Load(served.router_url, stream, model=name).start()  # a Pod serves its rollout's name


def manifest(stage: Stage, name: str, *, steps: list[dict[str, Any]]) -> dict[str, Any]:
    """The manifest ``begin`` applied, to edit and apply again."""
    return rollout_manifest(
        name,
        models=stage.models,
        green_model="digits-int8.onnx",
        green_version="v2",
        prometheus_url=stage.prometheus.url,
        steps=steps,
        checks=DRILL_CHECKS,
        analysis=ANALYSIS,
    )


def wait_for(stage: Stage, name: str, what: str, predicate: Any, *, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = stage.get(name)
        if predicate(body):
            return body
        time.sleep(0.25)
    status = body.get("status") or {}
    raise TimeoutError(
        f"{name}: {what} not reached in {timeout}s: phase {status.get('phase')}, message {status.get('message')!r}"
        f"\n--- operator log tail ---\n{stage.operator_log()[-3000:]}"
    )


def live_at(stage: Stage, weight: int) -> Any:
    """The canary is Progressing and the router confirmed ``weight``% green for the weights' revision."""

    def check(body: dict[str, Any]) -> bool:
        status = body.get("status") or {}
        weights = status.get("weights") or {}
        return (
            status.get("phase") == "Progressing"
            and weights.get("green") == weight
            and stage.applied_report(body["metadata"]["name"]) == f"{weights.get('revision')}/{weight}"
        )

    return check


def settled(*phases: str) -> Any:
    return lambda body: (body.get("status") or {}).get("phase") in phases


def reasons(body: dict[str, Any]) -> list[str]:
    return [entry["reason"] for entry in body["status"]["history"]]


def wait_for_events(stage: Stage, name: str, reason: str, *, timeout: float = 60) -> list[dict[str, Any]]:
    """The rollout's Events with ``reason``, once there is one (the operator posts Events asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        listed = kubectl.run(
            "get",
            "events",
            "--field-selector",
            f"involvedObject.name={name},reason={reason}",
            "-o",
            "json",
            kubeconfig=stage.kubeconfig,
        ).stdout
        uid = stage.get(name)["metadata"]["uid"]  # this rollout's, not an earlier one's of the same name
        items = [e for e in json.loads(listed)["items"] if e["involvedObject"].get("uid") == uid]
        if items or time.monotonic() > deadline:
            return items
        time.sleep(0.25)


def rollback_message(body: dict[str, Any]) -> str:
    """What the rollback decision said (the values and thresholds that caused it)."""
    return next(h["message"] for h in reversed(body["status"]["history"]) if h["action"] == "RollBack")


def overwrite_status(stage: Stage, name: str, patch: str) -> None:
    """A merge patch of the rollout's status written behind the operator's back (a restore, a hand edit)."""
    kubectl.run("patch", "mro", name, "--subresource=status", "--type=merge", "-p", patch, kubeconfig=stage.kubeconfig)


def versions_answering(served: Served, stream: dict[str, np.ndarray], count: int = 20) -> set[str]:
    """The model versions that answer ``count`` inference requests sent through the router."""
    body = {
        "inputs": [
            {"name": "input", "shape": [1, 64], "datatype": "FP32", "data": stream["inputs"][0].ravel().tolist()}
        ]
    }
    seen = set()
    with httpx.Client(base_url=served.router_url, timeout=10) as client:
        for _ in range(count):
            answer = client.post(f"/v2/models/{served.name}/infer", json=body)
            assert answer.status_code == 200, answer.text
            seen.add(answer.json()["model_version"])
    return seen


def test_a_green_that_keeps_crashing_is_rolled_back(stage: Stage, stream: dict[str, np.ndarray]) -> None:
    name = f"crashy-{stage.data_plane}"  # one cluster serves both data planes' runs
    served, load = begin(stage, stream, name, steps=HOLD_STEPS, traffic=WITHOUT_GUARD)
    try:
        wait_for(stage, name, "25% green confirmed", live_at(stage, 25))
        with served.kubelet.chaos(constants.GREEN, every=3):
            body = wait_for(stage, name, "a rollback", settled("RolledBack", "Promoted"))
    finally:
        load.stop()
    status = body["status"]
    assert status["phase"] == "RolledBack", status["message"]
    assert status["rollbackReason"] == "AnalysisFailed", status["message"]
    why = rollback_message(body)
    assert "health:" in why or "errors:" in why, why
    assert status["weights"]["green"] == 0
    assert stage.applied_report(name) == f"{status['weights']['revision']}/0"


def test_a_green_killed_once_and_left_dead_is_rolled_back_by_detection(
    stage: Stage, stream: dict[str, np.ndarray]
) -> None:
    name = f"dead-{stage.data_plane}"  # one cluster serves both data planes' runs
    served, load = begin(stage, stream, name, steps=HOLD_STEPS, traffic=WITHOUT_GUARD)
    try:
        wait_for(stage, name, "25% green confirmed", live_at(stage, 25))
        served.kubelet.hold_dead(constants.GREEN)
        body = wait_for(stage, name, "a rollback", settled("RolledBack", "Promoted"), timeout=90)
    finally:
        load.stop()
        served.kubelet.release(constants.GREEN)
    status = body["status"]
    assert status["phase"] == "RolledBack" and status["rollbackReason"] == "AnalysisFailed", status["message"]
    assert "ProgressDeadlineExceeded" not in reasons(body)
    why = rollback_message(body)
    assert "errors:" in why or "health:" in why, why


def test_a_hard_fault_on_green_is_rolled_back_by_the_routers_guard(stage: Stage, stream: dict[str, np.ndarray]) -> None:
    """Every answer of green fails (500) while the analysis runs every 10 minutes, so Prometheus cannot be
    the one deciding: the router's guard sends green 0% and the operator rolls back with its numbers."""
    slow = {**ANALYSIS, "interval": "10m"}
    name = f"guarded-{stage.data_plane}"  # one cluster serves both data planes' runs
    served, load = begin(stage, stream, name, steps=HOLD_STEPS, analysis=slow)
    try:
        live = wait_for(stage, name, "25% green confirmed", live_at(stage, 25))
        served.green.inject_faults(error_rate=1.0)
        body = wait_for(stage, name, "a rollback", settled("RolledBack", "Promoted"), timeout=120)
    finally:
        load.stop()
    status = body["status"]
    assert status["phase"] == "RolledBack" and status["rollbackReason"] == "GuardTripped", status["message"]
    assert "AnalysisFailed" not in reasons(body)
    tripped_at = live["status"]["weights"]["revision"]
    trip = json.loads(stage.router_report(name)[constants.REPORT_GUARD])
    assert trip["revision"] == tripped_at and trip["requests"] >= 20 and trip["errors"] / trip["requests"] > 0.5
    assert status["guardTrip"]["revision"] == tripped_at and status["guardTrip"]["rolledBack"] is True
    why = rollback_message(body)
    assert f"{trip['errors']} of green's last {trip['requests']} requests fail within 5s" in why, why
    assert status["weights"]["green"] == 0
    assert stage.applied_report(name) == f"{status['weights']['revision']}/0"
    [event] = wait_for_events(stage, name, "GuardTripped")
    assert event["type"] == "Warning" and f"{trip['errors']} of green's last" in event["message"]
    metrics = httpx.get(f"{served.router_url}/metrics").text
    assert f'modelrouter_guard_trips_total{{rollout="{name}"}} 1.0' in metrics
    assert f'modelrouter_applied_weight{{rollout="{name}"}} 0.0' in metrics
    assert versions_answering(served, stream) == {"v1"}  # green, still failing, gets nothing


def test_a_promotion_then_a_replicas_change_keeps_all_traffic_on_the_promoted_model(
    stage: Stage, stream: dict[str, np.ndarray]
) -> None:
    served, load = begin(stage, stream, "keep", steps=DRILL_STEPS)
    try:
        body = wait_for(stage, "keep", "promotion", settled("Promoted", "RolledBack"))
    finally:
        load.stop()
    status = body["status"]
    assert status["phase"] == "Promoted", status["message"]
    assert status["stable"]["model"]["version"] == "v2" and status["weights"]["green"] == 0
    handover = [r for r in reasons(body) if r in ("GreenIsStable", "BlueServesStable", "Promoted")]
    assert handover == ["GreenIsStable", "BlueServesStable", "Promoted"]  # back to blue only once it serves v2
    assert versions_answering(served, stream) == {"v2"}  # blue now runs the promoted model

    scaled = manifest(stage, "keep", steps=DRILL_STEPS)
    scaled["spec"]["server"]["replicas"] = 2
    stage.apply(scaled, wait=False)
    after = wait_for(
        stage,
        "keep",
        "the new generation observed",
        lambda b: (b.get("status") or {}).get("observedGeneration") == b["metadata"]["generation"],
    )
    assert after["status"]["phase"] == "Promoted" and after["status"]["weights"]["green"] == 0
    assert "GreenChanged" not in reasons(after)[len(reasons(body)) - 1 :]

    def blue_deployment() -> dict[str, Any]:
        found: dict[str, Any] = json.loads(
            kubectl.run("get", "deploy", "keep-blue", "-o", "json", kubeconfig=stage.kubeconfig).stdout
        )
        return found

    # the operator converges (an apply that meets a conflict is retried on the next tick)
    wait_for(stage, "keep", "blue scaled to 2", lambda _: blue_deployment()["spec"]["replicas"] == 2, timeout=60)
    assert blue_deployment()["spec"]["template"]["metadata"]["labels"][constants.LABEL_VERSION] == "v2"
    assert stage.get("keep")["status"]["phase"] == "Promoted"
    assert versions_answering(served, stream) == {"v2"}

    # The status is lost (a restore from a backup without it): spec.blue still says v1, but blue's Deployment
    # records the stable model, so the operator picks v2 up again instead of redeploying blue with v1.
    overwrite_status(stage, "keep", '{"status":null}')
    recovered = wait_for(
        stage,
        "keep",
        "the status recovered and the router confirming it",
        lambda b: (
            (b.get("status") or {}).get("phase") == "Promoted"
            and (b.get("status") or {}).get("weightsConfirmedAt") is not None
        ),
        timeout=60,
    )
    assert recovered["status"]["stable"]["model"]["version"] == "v2"
    assert recovered["status"]["weights"]["green"] == 0
    assert blue_deployment()["spec"]["template"]["metadata"]["labels"][constants.LABEL_VERSION] == "v2"
    assert versions_answering(served, stream) == {"v2"}

    # A status the operator cannot read (edited by hand) is read as lost, not left to freeze the rollout.
    overwrite_status(stage, "keep", '{"status":{"weights":{"green":"lots"},"phase":"Sideways"}}')
    rebuilt = wait_for(
        stage,
        "keep",
        "an unreadable status rebuilt",
        lambda b: (
            (b.get("status") or {}).get("phase") == "Promoted"
            and isinstance(((b.get("status") or {}).get("weights") or {}).get("green"), int)
        ),
        timeout=60,
    )
    assert rebuilt["status"]["stable"]["model"]["version"] == "v2" and rebuilt["status"]["weights"]["green"] == 0
    assert versions_answering(served, stream) == {"v2"}


def test_a_typo_command_is_refused_and_moves_nothing(stage: Stage, stream: dict[str, np.ndarray]) -> None:
    _, load = begin(stage, stream, "typo", steps=HOLD_STEPS)
    try:
        before = wait_for(stage, "typo", "25% green confirmed", live_at(stage, 25))
        stage.command("typo", "promte")
        after = wait_for(
            stage,
            "typo",
            "the command refused and recorded",
            # the command is removed before the status is written (a crash between the two never applies
            # it twice), so the refusal shows in the history a moment after the annotation goes
            lambda b: (
                constants.ANNOTATION_COMMAND not in (b["metadata"].get("annotations") or {})
                and "UnknownCommand" in reasons(b)
            ),
        )
    finally:
        load.stop()
    assert after["status"]["phase"] == "Progressing" and after["status"]["stepIndex"] == 0
    assert after["status"]["weights"] == before["status"]["weights"]
    [event] = wait_for_events(stage, "typo", "UnknownCommand")
    assert event["type"] == "Warning" and "'promte'" in event["message"] and "promote-full" in event["message"]


def test_a_deployment_the_api_server_refuses_rolls_the_canary_back(stage: Stage, stream: dict[str, np.ndarray]) -> None:
    """A spec the schema accepts but the API server cannot apply (a CPU request above its limit): every
    reconcile fails, each is counted, and the canary rolls back instead of freezing."""
    _, load = begin(stage, stream, "refused", steps=HOLD_STEPS)
    try:
        wait_for(stage, "refused", "25% green confirmed", live_at(stage, 25))
        broken = manifest(stage, "refused", steps=HOLD_STEPS)
        broken["spec"]["server"]["resources"] = {"limits": {"cpu": "1"}, "requests": {"cpu": "2"}}
        stage.apply(broken, wait=False)
        body = wait_for(stage, "refused", "a rollback", settled("RolledBack", "Promoted"), timeout=90)
    finally:
        load.stop()
    status = body["status"]
    assert status["phase"] == "RolledBack" and status["rollbackReason"] == "ReconcileFailed", status["message"]
    assert "Deployment" in status["lastError"] or "cpu" in status["lastError"], status["lastError"]
    assert status["weights"]["green"] == 0


def test_deleting_a_rollout_keeps_the_stable_model_serving(stage: Stage, stream: dict[str, np.ndarray]) -> None:
    served, load = begin(stage, stream, "gone", steps=HOLD_STEPS)
    try:
        wait_for(stage, "gone", "25% green confirmed", live_at(stage, 25))
        kubectl.run("delete", "mro", "gone", "--timeout=90s", kubeconfig=stage.kubeconfig)
    finally:
        load.stop()
    names = json.loads(
        kubectl.run(
            "get", "deploy,svc", "-l", "modelrollout.dev/rollout=gone", "-o", "json", kubeconfig=stage.kubeconfig
        ).stdout
    )
    kept = {(item["kind"], item["metadata"]["name"]) for item in names["items"]}
    assert ("Deployment", "gone-blue") in kept and ("Service", "gone-blue") in kept
    assert ("Deployment", "gone-green") not in kept
    # The router was at 25% green; deletion moved it to blue first, so every request is answered by v1.
    assert versions_answering(served, stream) == {"v1"}
