"""The method every side-by-side benchmark here follows: interleaved rounds, medians with their spread.

Both sides are started and warmed before anything is timed; then each round times every side once, the
order flipping from one round to the next, so that a machine which speeds up or slows down touches both
sides alike. A ratio is computed within each round (the two sides measured a few seconds apart), and the
result is the median of the per-round ratios with their min and max beside it.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence

MIN_ROUNDS = 5


def order(names: Sequence[str], round_index: int) -> list[str]:
    """The sides in the order round ``round_index`` times them: as given, then reversed, and so on."""
    return list(names) if round_index % 2 == 0 else list(reversed(names))


def spread(values: Sequence[float], digits: int = 3) -> dict[str, float]:
    """Median, min and max."""
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
    }


def check_rounds(rounds: int) -> int:
    if rounds < MIN_ROUNDS:
        raise SystemExit(f"--rounds {rounds}: at least {MIN_ROUNDS} rounds, so that a median means something")
    return rounds


Goals = Mapping[str, tuple[str, float]]
"""Result key -> (">=" or "<=", bound)."""


def goals_text(goals: Goals, how: str = "") -> dict[str, str]:
    return {key: f"{sense} {bound}{how}" for key, (sense, bound) in goals.items()}


def goals_met(goals: Goals, values: Mapping[str, float | None]) -> dict[str, bool]:
    """Whether each result meets its goal (a missing result does not)."""
    met = {}
    for key, (sense, bound) in goals.items():
        value = values.get(key)
        met[key] = value is not None and (value >= bound if sense == ">=" else value <= bound)
    return met
