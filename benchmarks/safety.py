"""Safety: how often the rollout lifecycle breaks a safety invariant of DESIGN.md, and how fast traffic gets
back to the stable model when green fails hard.

The report is built by parts, each adding its own keys to ``results/safety.json``:

- ``model``: random histories of the simulated world of ``tests/unit/test_safety_model.py`` (model servers
  rolling out and crashing, a router applying weights late or losing its report, analyses passing, failing,
  alternating and erroring, users typing commands and editing the spec, operator restarts, API failures)
  driven against the real ``decide()``/``reject()`` through the controller's apply logic. Each history
  stops at its first broken invariant; ``invariant_violations`` counts those histories.
- ``drills``: ``crash_to_blue_p50_s`` and ``dead_green_to_blue_p50_s``: green SIGKILLed (repeatedly, or once
  and left dead) during a canary on the local control plane with default analysis settings, timed from the
  first kill to the router applying 0% green; ``--drills`` rounds of each, interleaved.

    python -m benchmarks.safety [--histories 2000] [--steps 60] [--seed 0] [--drills 5]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the model lives with the unit tests

import numpy as np

from benchmarks import _rounds
from benchmarks.rollback_time import wait_router
from modelrollout.api import constants
from modelrollout.devcluster import cluster, process
from modelrollout.devcluster.modelservers import demo_models_dir
from modelrollout.devcluster.stage import Load, Stage
from tests.unit import test_safety_model as model

RESULTS = Path(__file__).parent / "results" / "safety.json"
CHUNK = 100
"""Histories per worker job; job ``i`` uses seed ``seed * 1_000_003 + i`` so a run is reproducible."""


def _chunk(job: tuple[int, int, int]) -> dict[str, Any]:
    histories, steps, seed = job
    return model.run_histories(histories, steps_per_history=steps, seed=seed)


def _merge(results: list[dict[str, Any]]) -> dict[str, Any]:
    def total(key: str) -> dict[str, int]:
        counts: Counter[str] = Counter()
        for result in results:
            counts.update(result[key])
        return dict(counts)

    return {
        "histories": sum(r["histories"] for r in results),
        "decisions": sum(r["decisions"] for r in results),
        "invariant_violations": sum(r["invariant_violations"] for r in results),
        "violations_by_invariant": {name: total("violations_by_invariant").get(name, 0) for name in model.INVARIANTS},
        "histories_reaching_phase": total("histories_reaching_phase"),
        "rollbacks_by_reason": dict(Counter(total("rollbacks_by_reason")).most_common()),
        "examples": [example for r in results for example in r["examples"]][:3],
    }


def _histories(args: argparse.Namespace) -> dict[str, Any]:
    jobs = []
    for index, start in enumerate(range(0, args.histories, CHUNK)):
        count = min(CHUNK, args.histories - start)
        jobs.append((count, args.steps, args.seed * 1_000_003 + index))
    with ProcessPoolExecutor(max_workers=min(len(jobs), os.cpu_count() or 1)) as pool:
        return _merge(list(pool.map(_chunk, jobs)))


def model_part(args: argparse.Namespace) -> dict[str, Any]:
    """Invariant violations over random histories of the simulated world."""
    begun = time.monotonic()
    everything = _histories(args)
    return {
        "histories": everything["histories"],
        "invariant_violations": everything["invariant_violations"],
        "model": {
            "steps_per_history": args.steps,
            "seed": args.seed,
            "decisions": everything["decisions"],
            "invariants": list(model.INVARIANTS),
            "violations_by_invariant": everything["violations_by_invariant"],
            "histories_reaching_phase": everything["histories_reaching_phase"],
            "rollbacks_by_reason": everything["rollbacks_by_reason"],
            "event_weights": model.WEIGHTS,
            "events": {group: list(kinds) for group, (kinds, _) in model.EVENTS.items()},
            "first_violations": everything["examples"],
            "seconds": round(time.monotonic() - begun, 1),
        },
    }


def _fault_drill(stage: Stage, name: str, stream: dict[str, Any], fault: str) -> float:
    """One fresh canary at 25% green with labelled traffic and a passing analysis; then green crashes
    (``crash``: SIGKILLed now and every 3 s, restarted each time) or dies for good (``dead``). Returns the
    seconds from the first kill to the router applying 0% green."""

    # default analysis settings; a long first step keeps the canary in flight until the fault; the router's
    # guard off, so that these drills time the Prometheus path (benchmarks/rollback_time.py times the guard)
    served = stage.canary(
        name, steps=[{"weight": 25, "pause": "30m"}, {"weight": 100}], traffic={"guard": {"enabled": False}}
    )
    load = Load(served.router_url, stream, model=name, rows=1, rate=80).start()
    try:
        wait_router(served.router_url, 25, timeout=120)
        process.wait_until(
            lambda: any(
                c["name"] == "errors" and c["verdict"] == "Passed"
                for c in (stage.get(name)["status"].get("analysis") or {}).get("checks", [])
            ),
            timeout=90,
            what="a passing analysis before the fault",
            interval=0.5,
        )
        killed_at = time.time()
        if fault == "crash":
            served.kubelet.kill(constants.GREEN)
            with served.kubelet.chaos(constants.GREEN, every=3):
                blue_at = wait_router(served.router_url, 0, timeout=180)
        else:
            served.kubelet.hold_dead(constants.GREEN)
            blue_at = wait_router(served.router_url, 0, timeout=180)
        body = stage.wait_for_phase(name, {"RolledBack"}, timeout=60)
        if body["status"]["rollbackReason"] != "AnalysisFailed":
            raise RuntimeError(f"{name}: rolled back for {body['status']['rollbackReason']}, not by detection")
    finally:
        load.stop()
        served.kubelet.release(constants.GREEN)
        stage.unserve(served)
    return round(blue_at - killed_at, 3)


def drills_part(args: argparse.Namespace) -> dict[str, Any]:
    """Hard faults on green on the local control plane with default analysis settings, timed from the first
    kill to 100% blue at the router; crash and dead drills interleaved."""
    if args.drills == 0:
        return {"crash_to_blue_p50_s": None, "dead_green_to_blue_p50_s": None}

    models = demo_models_dir()
    stream = dict(np.load(models / "digits-stream.npz"))
    times: dict[str, list[float]] = {"crash": [], "dead": []}
    with cluster.LocalCluster(nodes=1) as local, Stage(kubeconfig=local.kubeconfig_path, models=models) as stage:
        for index in range(args.drills):
            for fault in ("crash", "dead") if index % 2 == 0 else ("dead", "crash"):
                seconds = _fault_drill(stage, f"{fault}-{index + 1}", stream, fault)
                print(f"{fault} drill {index + 1}: {seconds} s to 100% blue", flush=True)
                times[fault].append(seconds)

    def spread(values: list[float]) -> dict[str, float]:
        return {"p50": round(statistics.median(values), 2), "min": min(values), "max": max(values)}

    return {
        "crash_to_blue_p50_s": spread(times["crash"])["p50"],
        "dead_green_to_blue_p50_s": spread(times["dead"])["p50"],
        "drills": {
            "rounds": args.drills,
            "setup": "defaults: interval 5s, window 60s, failureLimit 2, operator tick 1s; Prometheus scrapes "
            "every 1 s; 80 labelled requests/s through the router, 25% to green; crash: SIGKILL now and every "
            "3 s (restarted by the kubelet stand-in); dead: SIGKILL once, never restarted",
            "crash_to_blue_s": {**spread(times["crash"]), "each": times["crash"]},
            "dead_green_to_blue_s": {**spread(times["dead"]), "each": times["dead"]},
        },
    }


GOALS: _rounds.Goals = {
    "histories": (">=", 2000),
    "invariant_violations": ("<=", 0),
    "crash_to_blue_p50_s": ("<=", 15),
    "dead_green_to_blue_p50_s": ("<=", 15),
}
"""A run with fewer histories, or without drills, meets fewer goals (it says so in goals_met)."""

PARTS: list[Callable[[argparse.Namespace], dict[str, Any]]] = [model_part, drills_part]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--histories", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=60, help="events per history")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--drills", type=int, default=5, help="rounds of the crash and dead-green drills (0: none)")
    args = parser.parse_args(argv if argv is not None else [])
    report: dict[str, Any] = {
        "command": "python -m benchmarks.safety " + " ".join(argv or []),
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} cores",
        "goals": _rounds.goals_text(GOALS),
    }
    for part in PARTS:
        report.update(part(args))
    report["goals_met"] = _rounds.goals_met(GOALS, report)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    keys = ("histories", "invariant_violations", "crash_to_blue_p50_s", "dead_green_to_blue_p50_s")
    print(json.dumps({key: report[key] for key in keys}, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
