"""Safety: how often the rollout lifecycle breaks a safety invariant of DESIGN.md, and how fast traffic gets
back to the stable model when green fails hard.

The report is built by parts, each adding its own keys to ``results/safety.json``:

- ``model``: random histories of the simulated world of ``tests/unit/test_safety_model.py`` (model servers
  rolling out and crashing, a router applying weights late or losing its report, analyses passing, failing,
  alternating and erroring, users typing commands and editing the spec, operator restarts, API failures)
  driven against the real ``decide()``/``reject()`` through the controller's apply logic. Each history
  stops at its first broken invariant; ``invariant_violations`` counts those histories.
- ``drills``: ``crash_to_blue_p50_s`` and ``dead_green_to_blue_p50_s`` need drills on a real control plane;
  null until that part is written (add a function to ``PARTS``).

    python -m benchmarks.safety [--histories 2000] [--steps 60] [--seed 0]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the model lives with the unit tests

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


def drills_part(args: argparse.Namespace) -> dict[str, Any]:
    """Hard faults on green in a real control plane, timed to 100% blue at the router: not written yet."""
    return {"crash_to_blue_p50_s": None, "dead_green_to_blue_p50_s": None}


PARTS: list[Callable[[argparse.Namespace], dict[str, Any]]] = [model_part, drills_part]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--histories", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=60, help="events per history")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv if argv is not None else [])
    report: dict[str, Any] = {
        "command": "python -m benchmarks.safety " + " ".join(argv or []),
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} cores",
        "goals": {
            "histories": ">= 2000",
            "invariant_violations": "== 0",
            "crash_to_blue_p50_s": "<= 15",
            "dead_green_to_blue_p50_s": "<= 15",
        },
    }
    for part in PARTS:
        report.update(part(args))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    keys = ("histories", "invariant_violations", "crash_to_blue_p50_s", "dead_green_to_blue_p50_s")
    print(json.dumps({key: report[key] for key in keys}, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
