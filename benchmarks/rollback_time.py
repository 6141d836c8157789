"""Rollback time: from a hard fault on green (every request answers 500) to 100% blue at the router.

Default analysis settings (interval 5 s, window 60 s, failure limit 2, operator tick 1 s), the local
control plane, the operator as its own process, real model servers and router, Prometheus scraping every
second. Each drill is a fresh rollout (fresh model servers, router and series): a canary holds at 50%
green with labelled traffic flowing and a passing analysis; the fault starts; the router's own state
endpoint is polled every 20 ms until it applies 0% green.

- ``fault_to_blue_*``: fault start -> router applies 0% green, decided by the Prometheus analysis (the
  router's guard disabled in these drills, so that they measure the Prometheus path);
- ``verdict_to_router_*``: the analysis that decided the rollback (its time in status.history) -> router;
- ``fault_to_blue_guard_*``: the same fault with the router's data-plane guard on (its defaults: window 5s,
  minRequests 20, maxErrorRate 0.5) and the analysis every 10 minutes, so that the guard alone decides;
  the fault starts once green has answered 5 s of healthy traffic (a full window of successes).
  ``fault_to_blue_guard_p50_s`` is the slower of the two data planes' medians.

Drills run in rounds on both of the router's data planes (nginx, the in-cluster default, and python), both
kinds of drill on each per round, the order alternating; each figure is a median with its min and max, and
``nginx_vs_python_fault_to_blue`` is the ratio of the two Prometheus-path medians.

    python -m benchmarks.rollback_time [--rounds 5]
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from modelrollout.devcluster import cluster, process
from modelrollout.devcluster.modelservers import demo_models_dir
from modelrollout.devcluster.stage import Load, Stage

RESULTS = Path(__file__).parent / "results" / "rollback_time.json"


def wait_router(url: str, green: int, *, timeout: float) -> float:
    """Poll the router until it applies ``green``; returns the wall-clock time it did."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2) as client:
        while time.monotonic() < deadline:
            if client.get(f"{url}/router/state").json()["greenWeight"] == green:
                return time.time()
            time.sleep(0.02)
    raise TimeoutError(f"router did not apply {green}% green within {timeout}s")


DATA_PLANES = ("nginx", "python")


WITHOUT_GUARD = {"guard": {"enabled": False}}


def routed_green(url: str) -> float:
    """Green's requests the router has counted (its modelrouter_requests_total)."""
    for line in httpx.get(f"{url}/metrics", timeout=2).text.splitlines():
        if line.startswith("modelrouter_requests_total{") and 'colour="green"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def guard_drill(stage: Stage, name: str, stream: dict[str, Any], data_plane: str) -> dict[str, float]:
    """The router's guard on (defaults), the analysis every 10 minutes: the guard alone can decide."""
    served = stage.canary(
        name,
        steps=[{"weight": 50, "pause": "30m"}, {"weight": 100}],
        analysis={"interval": "10m"},
        data_plane=data_plane,
    )
    load = Load(served.router_url, stream, model=name, rows=1, rate=80).start()
    try:
        stage.wait_for_phase(name, {"Progressing"}, timeout=120)
        wait_router(served.router_url, 50, timeout=30)
        healthy = routed_green(served.router_url)
        process.wait_until(
            lambda: routed_green(served.router_url) - healthy >= 200,  # 5 s of green's answers, all fine
            timeout=60,
            what="a full window of healthy green answers",
            interval=0.2,
        )
        fault_at = time.time()
        served.green.inject_faults(error_rate=1.0)
        blue_at = wait_router(served.router_url, 0, timeout=60)
        body = stage.wait_for_phase(name, {"RolledBack"}, timeout=60)
    finally:
        load.stop()
        stage.unserve(served)
    if body["status"]["rollbackReason"] != "GuardTripped":
        raise RuntimeError(f"{name}: rolled back for {body['status']['rollbackReason']}, not by the guard")
    return {"fault_to_blue_guard_s": round(blue_at - fault_at, 3)}


def drill(stage: Stage, name: str, stream: dict[str, Any], data_plane: str) -> dict[str, float]:
    # default analysis settings; a long first step keeps the canary in flight until the fault
    served = stage.canary(
        name, steps=[{"weight": 50, "pause": "30m"}, {"weight": 100}], data_plane=data_plane, traffic=WITHOUT_GUARD
    )
    load = Load(served.router_url, stream, model=name, rows=1, rate=80).start()
    try:
        stage.wait_for_phase(name, {"Progressing"}, timeout=120)
        wait_router(served.router_url, 50, timeout=30)
        process.wait_until(
            lambda: any(
                c["name"] == "errors" and c["verdict"] == "Passed"
                for c in (stage.get(name)["status"].get("analysis") or {}).get("checks", [])
            ),
            timeout=60,
            what="a passing analysis before the fault",
            interval=0.5,
        )
        fault_at = time.time()
        served.green.inject_faults(error_rate=1.0)
        blue_at = wait_router(served.router_url, 0, timeout=120)
        body = stage.wait_for_phase(name, {"RolledBack"}, timeout=30)
    finally:
        load.stop()
        stage.unserve(served)
    verdict = next(h for h in reversed(body["status"]["history"]) if h["reason"] == "AnalysisFailed")
    verdict_at = datetime.datetime.fromisoformat(verdict["time"]).timestamp()
    return {"fault_to_blue_s": round(blue_at - fault_at, 3), "verdict_to_router_s": round(blue_at - verdict_at, 3)}


def spread(values: list[float], digits: int = 2) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="rounds; each drills both data planes once")
    args = parser.parse_args(argv if argv is not None else [])
    models = demo_models_dir()
    stream = dict(np.load(models / "digits-stream.npz"))
    drills: dict[str, list[dict[str, float]]] = {plane: [] for plane in DATA_PLANES}
    with cluster.LocalCluster(nodes=1) as local, Stage(kubeconfig=local.kubeconfig_path, models=models) as stage:
        for index in range(args.rounds):
            order = DATA_PLANES if index % 2 == 0 else DATA_PLANES[::-1]
            for plane in order:
                result = drill(stage, f"drill-{index + 1}-{plane}", stream, plane)
                result.update(guard_drill(stage, f"guard-{index + 1}-{plane}", stream, plane))
                print(f"round {index + 1} {plane}: {result}", flush=True)
                drills[plane].append(result)
    planes = {
        plane: {
            "fault_to_blue_s": spread([d["fault_to_blue_s"] for d in results]),
            "verdict_to_router_s": spread([d["verdict_to_router_s"] for d in results], 3),
            "fault_to_blue_guard_s": spread([d["fault_to_blue_guard_s"] for d in results], 3),
        }
        for plane, results in drills.items()
    }
    guard_p50 = max(p["fault_to_blue_guard_s"]["median"] for p in planes.values())
    report = {
        "command": "python -m benchmarks.rollback_time " + " ".join(argv or []),
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}, 2 cores",
        "setup": {
            "rounds": args.rounds,
            "order": "each round drills both data planes, the order alternating between rounds",
            "analysis": "defaults: interval 5s, window 60s, failureLimit 2 (guard drills: interval 10m)",
            "guard": "off in the Prometheus-path drills; defaults in the guard drills (window 5s, minRequests 20, "
            "maxErrorRate 0.5 at 99% confidence), the fault after 200 healthy green answers (5 s)",
            "operator_tick_seconds": 1.0,
            "prometheus_scrape_seconds": 1,
            "fault": "100% 500s on green",
            "traffic": "80 labelled requests/s through the router, 50% to green",
        },
        "data_planes": planes,
        "fault_to_blue_guard_p50_s": guard_p50,
        "nginx_vs_python_fault_to_blue": round(
            planes["nginx"]["fault_to_blue_s"]["median"] / planes["python"]["fault_to_blue_s"]["median"], 3
        ),
        "goals": {
            "fault_to_blue_s.median": "<= 15 on each data plane",
            "verdict_to_router_s.median": "<= 1.0 on each data plane",
            "fault_to_blue_guard_p50_s": "<= 1.0 (the slower data plane's median)",
        },
        "goals_met": guard_p50 <= 1.0
        and all(
            p["fault_to_blue_s"]["median"] <= 15 and p["verdict_to_router_s"]["median"] <= 1.0 for p in planes.values()
        ),
        "drills": drills,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k not in ("drills", "setup")}, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
