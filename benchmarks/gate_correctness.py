"""Gate correctness: simulated canaries with a known truth, run through decide() and the accuracy gate.

For each scenario (green +1, 0, -1 and -3 points against a 97% blue) it simulates canaries with the
default steps (10/25/50/100%, pauses 30/30/60 s, analysis every 5 s, progress deadline 10 min, failure
limit 2). Labelled outcomes arrive each interval, split between the colours by the current weight, and
the accuracy check decides. Beside our sequential gate it runs a fixed-threshold gate (Failed when the
point estimate of the delta is below -1 point, else Passed, from the same minimum of samples), which is
what a plain PromQL threshold does. It reports the share promoted and rolled back per scenario, each with
its 95% Wilson interval, and why each rollback happened: ``detected`` (the analysis failed the candidate,
reason AnalysisFailed) or ``deadline`` (no verdict within the progress deadline, ProgressDeadlineExceeded).
A candidate exactly 1 point worse sits on the tolerance itself, so neither verdict can be reached with
confidence and its rollbacks come from the deadline; ``worse_2pt`` is past the tolerance and measures
detection.

    python -m benchmarks.gate_correctness [--canaries 1000] [--labelled-per-interval 1000]
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import sys
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import _rounds
from modelrollout.analysis.evaluate import CheckResult, Verdict
from modelrollout.analysis.statistics import GateVerdict, Outcomes, accuracy_gate
from modelrollout.api.spec import ModelRolloutSpec
from modelrollout.api.status import ModelRolloutStatus, Phase
from modelrollout.rollout import steps
from modelrollout.rollout.machine import AnalysisOutcome, Observations, decide
from modelrollout.routing.base import AppliedWeights

RESULTS = Path(__file__).parent / "results" / "gate_correctness.json"
BLUE_ACCURACY = 0.97
SCENARIOS = {"better_1pt": +0.01, "equal": 0.0, "worse_1pt": -0.01, "worse_2pt": -0.02, "worse_3pt": -0.03}
SPEC = ModelRolloutSpec.model_validate(
    {
        "blue": {"model": {"uri": "file:///blue.onnx", "version": "v1"}},
        "green": {"model": {"uri": "file:///green.onnx", "version": "v2"}},
        "analysis": {"checks": {"latency": {"enabled": False}, "errors": {"enabled": False}}},
    }
)
ACCURACY = SPEC.analysis.checks.accuracy
T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)

Gate = Callable[[Outcomes, Outcomes], Verdict]


def sequential_gate(green: Outcomes, blue: Outcomes) -> Verdict:
    verdict = accuracy_gate(
        green, blue, tolerance=ACCURACY.tolerance, confidence=ACCURACY.confidence, min_samples=ACCURACY.min_samples
    ).verdict
    return {GateVerdict.PASSED: Verdict.PASSED, GateVerdict.FAILED: Verdict.FAILED}.get(verdict, Verdict.INCONCLUSIVE)


def fixed_threshold_gate(green: Outcomes, blue: Outcomes) -> Verdict:
    if green.total < ACCURACY.min_samples or blue.total < ACCURACY.min_samples:
        return Verdict.INCONCLUSIVE
    return Verdict.FAILED if green.accuracy - blue.accuracy < -ACCURACY.tolerance else Verdict.PASSED


GATES: dict[str, Gate] = {"sequential": sequential_gate, "fixed_threshold": fixed_threshold_gate}


def applied(status: ModelRolloutStatus) -> AppliedWeights:
    """A router that has applied whatever status asks for."""
    return AppliedWeights(revision=status.weights.revision, green=status.weights.green)


def simulate(
    gate: Gate, green_accuracy: float, labelled_per_interval: int, rng: np.random.Generator
) -> tuple[str, int, str]:
    """One canary: returns (final phase, intervals it took, the rollback's reason or "")."""
    interval = SPEC.analysis.interval
    status = decide(SPEC, ModelRolloutStatus(), Observations(), T0).status
    status = decide(SPEC, status, Observations(resources_ready=True), T0).status
    green, blue = [0, 0], [0, 0]  # correct, total
    for tick in range(1, 10_000):
        now = T0 + datetime.timedelta(seconds=tick * interval)
        weight = status.weights.green
        n_green = round(labelled_per_interval * weight / 100)
        n_blue = labelled_per_interval - n_green
        green[0] += int(rng.binomial(n_green, green_accuracy))
        green[1] += n_green
        blue[0] += int(rng.binomial(n_blue, BLUE_ACCURACY))
        blue[1] += n_blue
        obs = Observations(resources_ready=True, blue_ready=True, router=applied(status))
        if steps.analysis_due(SPEC, status, now):
            verdict = gate(Outcomes(*green), Outcomes(*blue))
            obs = Observations(
                resources_ready=True,
                blue_ready=True,
                router=applied(status),
                analysis=AnalysisOutcome(now, [CheckResult("accuracy", verdict, "")]),
            )
        status = decide(SPEC, status, obs, now).status
        for _ in range(3):  # a router that applies at once: promotion and rollback finish within the tick
            if status.phase not in (Phase.PROMOTING, Phase.FINALIZING, Phase.ROLLING_BACK):
                break
            after = Observations(resources_ready=True, blue_ready=True, router=applied(status))
            status = decide(SPEC, status, after, now).status
        if status.phase in (Phase.PROMOTED, Phase.ROLLED_BACK):
            return status.phase.value, tick, status.rollback_reason or ""
    raise RuntimeError("a simulated canary never finished")


def run_scenario(args: tuple[str, str, float, int, int, int]) -> dict[str, Any]:
    gate_name, scenario, delta, canaries, labelled, seed = args
    rng = np.random.default_rng(seed)
    outcomes = [simulate(GATES[gate_name], BLUE_ACCURACY + delta, labelled, rng) for _ in range(canaries)]
    promoted = sum(1 for phase, _, _ in outcomes if phase == Phase.PROMOTED.value)
    reasons = Counter(reason for phase, _, reason in outcomes if phase == Phase.ROLLED_BACK.value)
    unexplained = set(reasons) - set(ROLLBACK_REASONS.values())
    if unexplained:
        raise RuntimeError(f"rollbacks for reasons this benchmark does not know: {sorted(unexplained)}")
    return {
        "gate": gate_name,
        "scenario": scenario,
        "promoted_rate": promoted / canaries,
        "promoted_rate_95": wilson(promoted, canaries),
        "rolled_back_rate": (canaries - promoted) / canaries,
        "rolled_back_rate_95": wilson(canaries - promoted, canaries),
        "rolled_back_by": {cause: reasons[reason] / canaries for cause, reason in ROLLBACK_REASONS.items()},
        "mean_intervals_to_decision": float(np.mean([ticks for _, ticks, _ in outcomes])),
    }


ROLLBACK_REASONS = {"detected": "AnalysisFailed", "deadline": "ProgressDeadlineExceeded"}


def wilson(successes: int, trials: int, z: float = 1.96) -> list[float]:
    """The 95% Wilson score interval of a rate."""
    rate = successes / trials
    centre = (rate + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(rate * (1 - rate) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


GOALS: _rounds.Goals = {
    "worse_3pt_promoted_rate": ("<=", 0.01),
    "worse_1pt_promoted_rate": ("<=", 0.05),
    "worse_2pt_detected_rate": (">=", 0.95),
    "equal_rolled_back_rate": ("<=", 0.05),
    "better_rolled_back_rate": ("<=", 0.01),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--canaries", type=int, default=1000)
    parser.add_argument("--labelled-per-interval", type=int, default=1000)
    args = parser.parse_args(argv if argv is not None else [])
    begun = time.monotonic()
    jobs = [
        (gate, scenario, delta, args.canaries, args.labelled_per_interval, 1000 + i)
        for gate in GATES
        for i, (scenario, delta) in enumerate(SCENARIOS.items())
    ]
    with ProcessPoolExecutor() as pool:
        rows = list(pool.map(run_scenario, jobs))
    report: dict[str, Any] = {
        "command": "python -m benchmarks.gate_correctness " + " ".join(argv or []),
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}",
        "setup": {
            "canaries_per_scenario": args.canaries,
            "blue_accuracy": BLUE_ACCURACY,
            "labelled_outcomes_per_interval": args.labelled_per_interval,
            "interval_seconds": SPEC.analysis.interval,
            "steps": [s.weight for s in SPEC.traffic.steps],
            "tolerance": ACCURACY.tolerance,
            "confidence": ACCURACY.confidence,
            "min_samples": ACCURACY.min_samples,
            "progress_deadline_seconds": SPEC.analysis.progress_deadline,
            "failure_limit": SPEC.analysis.failure_limit,
        },
        "goals": {
            **_rounds.goals_text(GOALS),
            "worse_2pt_detected_rate": ">= 0.95 (rolled back by the analysis, not the deadline)",
        },
    }
    for gate in GATES:
        mine = {row["scenario"]: row for row in rows if row["gate"] == gate}
        keys = {
            "worse_3pt_promoted_rate": mine["worse_3pt"]["promoted_rate"],
            "worse_1pt_promoted_rate": mine["worse_1pt"]["promoted_rate"],
            "worse_2pt_detected_rate": mine["worse_2pt"]["rolled_back_by"]["detected"],
            "rolled_back_by": {s: r["rolled_back_by"] for s, r in mine.items()},
            "equal_rolled_back_rate": mine["equal"]["rolled_back_rate"],
            "better_rolled_back_rate": mine["better_1pt"]["rolled_back_rate"],
            "mean_intervals_to_decision": {s: round(r["mean_intervals_to_decision"], 1) for s, r in mine.items()},
            "scenarios": mine,
        }
        if gate == "sequential":
            report.update(keys)
        else:
            report[gate] = keys
    report["goals_met"] = _rounds.goals_met(GOALS, report)  # the sequential gate's: the one the operator runs
    report["seconds"] = round(time.monotonic() - begun, 1)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    summary = {
        k: report[k]
        for k in (
            "worse_3pt_promoted_rate",
            "worse_1pt_promoted_rate",
            "worse_2pt_detected_rate",
            "equal_rolled_back_rate",
            "better_rolled_back_rate",
        )
    }
    print(
        json.dumps(
            {"sequential": summary, "fixed_threshold": {k: report["fixed_threshold"][k] for k in summary}}, indent=2
        )
    )


if __name__ == "__main__":
    main(sys.argv[1:])
