"""Two operator replicas with leader election on the real control plane (k8s.leader): only the Lease's holder
reconciles; when it dies mid-rollout the standby takes the Lease and finishes the rollout without repeating a
step; a leader whose Lease is taken from it exits."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from modelrollout.devcluster import kubectl, process
from modelrollout.devcluster.stage import DRILL_CHECKS, Load, Stage
from modelrollout.k8s import leader
from tests.e2e.conftest import clear_rollouts

pytestmark = pytest.mark.e2e

LEASE = "modelrollout-drill"
ELECTION = {
    "MODELROLLOUT_LEADER_ELECTION": "true",
    "MODELROLLOUT_LEASE_NAME": LEASE,
    "MODELROLLOUT_LEASE_NAMESPACE": "default",
    "MODELROLLOUT_LEASE_SECONDS": "3",  # a standby takes over 3 s after the leader's last renewal
}


def holder(kubeconfig: Path) -> str:
    found = kubectl.run(
        "get", "lease", LEASE, "-o", "jsonpath={.spec.holderIdentity}", kubeconfig=kubeconfig, check=False
    )
    return found.stdout.strip() if found.returncode == 0 else ""


def held_by(kubeconfig: Path, pid: int) -> bool:
    return f"-{pid}_" in holder(kubeconfig)  # leader.default_identity: host-pid_<random> outside a Pod


@pytest.fixture
def elected(kubeconfig: Path, demo_models: Path) -> Iterator[Stage]:
    kubectl.run("delete", "lease", LEASE, "--ignore-not-found", kubeconfig=kubeconfig)
    try:
        with Stage(kubeconfig=kubeconfig, models=demo_models, operator_env=ELECTION) as stage:
            assert stage.operator is not None
            leader_pid = stage.operator.pid
            process.wait_until(lambda: held_by(kubeconfig, leader_pid), timeout=60, what="the first operator's lease")
            yield stage
    finally:
        clear_rollouts(kubeconfig)
        kubectl.run("delete", "lease", LEASE, "--ignore-not-found", kubeconfig=kubeconfig)


def test_the_standby_finishes_a_rollout_when_the_leader_dies(
    elected: Stage, kubeconfig: Path, stream: dict[str, np.ndarray]
) -> None:
    stage = elected
    standby = stage.start_standby()
    standby_log = stage.log_dir / "operator-standby-1.log"
    process.wait_until(
        lambda: "standing by" in standby_log.read_text(), timeout=60, what="the second operator standing by"
    )
    steps = [
        {"weight": 10, "pause": "2s"},
        {"weight": 30, "pause": "6s"},
        {"weight": 60, "pause": "2s"},
        {"weight": 100},
    ]
    checks = {**DRILL_CHECKS, "latency": {"minRequests": 10, "maxRatioToBlue": 100}}  # the failover is drilled
    served = stage.canary(
        "ha", steps=steps, checks=checks, analysis={"interval": "2s", "window": "20s", "progressDeadline": "150s"}
    )
    load = Load(served.router_url, stream, model="ha").start()
    try:
        process.wait_until(
            lambda: (stage.get("ha").get("status") or {}).get("stepIndex", 0) >= 1,
            timeout=120,
            what="the canary at its second step",
            interval=0.3,
        )
        # the standby has not reconciled anything: it never held the lease
        assert "holding the lease" not in standby_log.read_text()
        stage.kill_operator()  # SIGKILL: no hand-back, the lease runs out
        process.wait_until(lambda: held_by(kubeconfig, standby.pid), timeout=60, what="the standby taking the lease")
        body = stage.wait_for_phase("ha", {"Promoted", "RolledBack"}, timeout=180)
    finally:
        load.stop()
    assert body["status"]["phase"] == "Promoted", body["status"]["message"]
    advanced = [h["stepIndex"] for h in body["status"]["history"] if h["reason"] == "StepAdvanced"]
    assert advanced == [1, 2, 3]  # none repeated, none skipped across the failover


def test_a_leader_whose_lease_is_taken_exits_at_once(elected: Stage, kubeconfig: Path) -> None:
    """Someone else holds the Lease now (another replica after a network partition, say): the old leader
    must not reconcile a moment longer. It exits with its own code, and its Pod restarts as a standby."""
    assert elected.operator is not None
    kubectl.run(
        "patch",
        "lease",
        LEASE,
        "--type=merge",
        "-p",
        '{"spec": {"holderIdentity": "another-replica"}}',
        kubeconfig=kubeconfig,
    )
    operator = elected.operator
    process.wait_until(lambda: operator.poll() is not None, timeout=30, what="the old leader to exit")
    assert operator.returncode == leader.EXIT_LEADERSHIP_LOST
    log = (elected.log_dir / "operator.log").read_text()
    assert "leadership lost" in log and "held by another-replica" in log  # seen taken, not a deadline run out
