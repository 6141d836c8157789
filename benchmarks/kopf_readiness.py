"""kopf's wait for its indexes: its own ToggleSet methods against modelrollout.kopf_readiness's, side by side.

A model of a fresh operator's first listing, with kopf's own classes: a watch lists N objects of an indexed
resource one at a time (a toggle each, off, and a worker), and each object's worker indexes it (drops its
toggle) and waits until every toggle is gone, as kopf's processing does before it runs any other handler. The
listing's end drops the resource's own toggle. Timed: from the first toggle made until every worker is released.
Both sides run the same code with the same N; only the three ToggleSet methods differ. Rounds interleave the
sides (benchmarks._rounds).

Run: python -m benchmarks.kopf_readiness [--sizes 500,1000,2000] [--rounds 5] [--output PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from pathlib import Path

from kopf._cogs.aiokits import aiotoggles

from benchmarks import _rounds
from modelrollout import kopf_readiness

SIDES = ("kopf", "modelrollout")
RESULTS = Path(__file__).parent / "results" / "kopf_readiness.json"


def use(side: str) -> None:
    methods = kopf_readiness.STOCK if side == "kopf" else kopf_readiness.PATCHED
    for name, method in methods.items():
        setattr(aiotoggles.ToggleSet, name, method)


async def first_listing(objects: int) -> float:
    """Seconds from the listing's first object until every object's worker has been released."""
    indexed = aiotoggles.ToggleSet(all)
    begun = time.perf_counter()
    resource = await indexed.make_toggle(name="the resource listed")

    async def worker(toggle: aiotoggles.Toggle) -> None:
        await asyncio.sleep(0)  # the object is indexed
        await indexed.drop_toggle(toggle)
        await indexed.wait_for(True)

    workers = []
    for n in range(objects):  # the watch stream, an object at a time, as kopf's watcher reads it
        toggle = await indexed.make_toggle(name=f"object {n}")
        workers.append(asyncio.ensure_future(worker(toggle)))
        await asyncio.sleep(0)  # the stream's next object
    await indexed.drop_toggle(resource)
    await asyncio.gather(*workers)
    return time.perf_counter() - begun


def timed(side: str, objects: int) -> float:
    use(side)
    try:
        return asyncio.run(first_listing(objects))
    finally:
        use("modelrollout")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="500,1000,2000")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    rounds = _rounds.check_rounds(args.rounds)
    sizes = [int(size) for size in args.sizes.split(",")]
    for side in SIDES:  # warm: both sides once, untimed
        timed(side, 50)
    results = []
    for objects in sizes:
        seconds: dict[str, list[float]] = {side: [] for side in SIDES}
        ratios = []
        for round_index in range(rounds):
            this_round = {side: timed(side, objects) for side in _rounds.order(SIDES, round_index)}
            for side, value in this_round.items():
                seconds[side].append(value)
            ratios.append(this_round["kopf"] / this_round["modelrollout"])
        results.append(
            {
                "objects": objects,
                "seconds": {side: _rounds.spread(values, 4) for side, values in seconds.items()},
                "kopf_over_modelrollout": _rounds.spread(ratios, 1),
            }
        )
        print(json.dumps(results[-1]), flush=True)
    report = {
        "benchmark": "kopf_readiness",
        "command": "python -m benchmarks.kopf_readiness " + " ".join(argv if argv is not None else sys.argv[1:]),
        "method": (
            "a model of kopf's first listing with kopf's own ToggleSet and Toggle: N objects listed (a toggle each),"
            " each worker drops its toggle and waits for all; seconds until every worker is released; kopf's own"
            " make_toggle/drop_toggle/drop_toggles against modelrollout.kopf_readiness's; rounds interleaved,"
            " median with min and max"
        ),
        "machine": f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs",
        "rounds": rounds,
        "results": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written {args.output}")


if __name__ == "__main__":
    main()
