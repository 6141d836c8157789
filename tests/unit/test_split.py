"""The builtin router's weighted split (model_server/router/split.py), and the data plane that applies it:
0 and 100 are exact, other weights send their share, a sticky key always lands on the same colour in every
router replica, keys spread evenly, and raising the weight only ever moves users from blue to green."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from collections import Counter
from collections.abc import MutableMapping
from statistics import NormalDist
from typing import Any

import pytest

from model_server.router import split
from model_server.router.metrics import RouterMetrics
from model_server.router.proxy import Router, RouterState
from model_server.router.upstream import Response, Upstream

Z_999 = NormalDist().inv_cdf(1 - 0.001 / 2)
"""Two-sided 99.9%: a correct split stays within this many standard deviations whatever the seed."""
KEYS = [f"user-{i}" for i in range(10_000)]
EDGE_DRAWS = [0.0, 1e-12, 0.0099, 0.01, 0.25, 0.5, 0.7499, 0.99, 0.9999999999]


def within_binomial(count: int, trials: int, share: float) -> bool:
    return abs(count - trials * share) <= Z_999 * math.sqrt(trials * share * (1 - share))


# --- weights 0 and 100 are exact


@pytest.mark.parametrize(("weight", "colour"), [(0, split.BLUE), (100, split.GREEN)])
def test_the_end_weights_send_every_request_and_every_key_to_one_colour(weight: int, colour: str) -> None:
    draws = [split.choose(weight, sticky_key=None, draw=draw) for draw in EDGE_DRAWS]
    keys = [split.choose(weight, sticky_key=key, draw=0.5) for key in KEYS]
    assert set(draws) == {colour} and set(keys) == {colour}


# --- other weights send their share


@pytest.mark.parametrize("weight", [1, 10, 25, 50, 75, 99])
def test_a_weight_sends_exactly_its_share_of_the_draws(weight: int) -> None:
    """Over draws spaced evenly through [0, 1) (exact binary fractions) the green share is the weight, up to
    one draw: no bucket is lost or counted twice at the edges."""
    steps = 2**14
    green = sum(split.choose(weight, sticky_key=None, draw=k / steps) == split.GREEN for k in range(steps))
    assert abs(green - steps * weight / 100) <= 1


@pytest.mark.parametrize("weight", [1, 10, 25, 50, 75, 99])
def test_random_draws_converge_to_the_weight(weight: int) -> None:
    rng = random.Random(weight)
    trials = 20_000
    green = sum(split.choose(weight, sticky_key=None, draw=rng.random()) == split.GREEN for _ in range(trials))
    assert within_binomial(green, trials, weight / 100), f"{green} of {trials} green at weight {weight}"


@pytest.mark.parametrize(("weight", "draw", "colour"), [(30, 0.2999, split.GREEN), (30, 0.30, split.BLUE)])
def test_draws_below_the_weight_go_green(weight: int, draw: float, colour: str) -> None:
    assert split.choose(weight, sticky_key=None, draw=draw) == colour


# --- sticky keys


@pytest.mark.parametrize("weight", [10, 50, 90])
def test_sticky_keys_spread_by_the_weight(weight: int) -> None:
    green = sum(split.choose(weight, sticky_key=key, draw=0.0) == split.GREEN for key in KEYS)
    assert within_binomial(green, len(KEYS), weight / 100), f"{green} of {len(KEYS)} keys green at {weight}"


def test_sticky_buckets_are_uniform() -> None:
    """Chi-square over the 100 buckets (99 degrees of freedom), against its 99.9% quantile (Wilson-Hilferty)."""
    counts = Counter(split.sticky_bucket(key) for key in KEYS)
    assert set(counts) == set(range(100))
    expected = len(KEYS) / 100
    chi_square = sum((counts[bucket] - expected) ** 2 / expected for bucket in range(100))
    df = 99
    quantile = df * (1 - 2 / (9 * df) + NormalDist().inv_cdf(0.999) * math.sqrt(2 / (9 * df))) ** 3
    assert chi_square < quantile


def test_a_sticky_key_ignores_the_draw() -> None:
    for key in KEYS[:500]:
        colours = {split.choose(50, sticky_key=key, draw=draw) for draw in EDGE_DRAWS}
        assert colours == {split.choose(50, sticky_key=key, draw=0.5)}, key


def test_an_empty_sticky_key_is_no_key() -> None:
    """A request with the header present but empty is split by its draw, not all sent to one bucket."""
    assert split.choose(50, sticky_key="", draw=0.0) == split.GREEN
    assert split.choose(50, sticky_key="", draw=0.99) == split.BLUE


def test_a_sticky_key_has_the_same_bucket_in_every_router_replica() -> None:
    """Other processes (other hash seeds, as other replicas have) put every key in the same bucket."""
    keys = KEYS[:200]
    program = (
        "import json, sys; from model_server.router import split; "
        "print(json.dumps([split.sticky_bucket(k) for k in json.loads(sys.stdin.read())]))"
    )
    mine = [split.sticky_bucket(key) for key in keys]
    for seed in ("1", "2"):
        other = subprocess.run(
            [sys.executable, "-c", program],
            input=json.dumps(keys),
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        )
        assert json.loads(other.stdout) == mine
    assert len(set(mine)) > 50  # not a constant


# --- weight changes


@pytest.mark.parametrize(("lower", "higher"), [(0, 10), (10, 25), (25, 50), (50, 100), (1, 99)])
def test_raising_the_weight_only_moves_users_from_blue_to_green(lower: int, higher: int) -> None:
    before = {key: split.choose(lower, sticky_key=key, draw=0.0) for key in KEYS}
    after = {key: split.choose(higher, sticky_key=key, draw=0.0) for key in KEYS}
    assert not [key for key in KEYS if before[key] == split.GREEN and after[key] == split.BLUE]
    moved = sum(before[key] != after[key] for key in KEYS)
    assert within_binomial(moved, len(KEYS), (higher - lower) / 100), f"{moved} keys moved"


# --- the data plane that applies it


class Answering(Upstream):
    """An upstream that answers every inference with its own colour (no network)."""

    def __init__(self, colour: str) -> None:
        super().__init__(f"http://{colour}.invalid:80")
        self.colour = colour

    async def request(self, method: bytes, target: bytes, body: bytes, content_type: bytes | None) -> Response:
        return Response(200, [(b"content-type", b"application/json")], json.dumps({"colour": self.colour}).encode())


async def infer(router: Router, headers: list[tuple[bytes, bytes]]) -> str:
    scope = {"type": "http", "method": "POST", "path": "/v2/models/m/infer", "headers": headers}
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "http.request", "body": b"{}"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    await router(scope, receive, send)
    assert sent[0]["status"] == 200
    colour: str = json.loads(sent[1]["body"])["colour"]
    return colour


async def test_the_router_keys_the_split_on_its_sticky_header_and_follows_the_weight_in_force() -> None:
    state = RouterState(RouterMetrics(rollout="digits"))
    router = Router(state=state, blue=Answering(split.BLUE), green=Answering(split.GREEN), sticky_header="X-User")
    users = KEYS[:300]
    assert {await infer(router, [(b"x-user", u.encode())]) for u in users} == {split.BLUE}  # starts at 100% blue
    state.apply(50, revision=3)
    at_half = {u: await infer(router, [(b"x-user", u.encode())]) for u in users}
    assert at_half == {u: split.choose(50, sticky_key=u, draw=0.0) for u in users}
    again = {u: await infer(router, [(b"x-user", u.encode())]) for u in reversed(users)}
    assert again == at_half
    assert within_binomial(sum(c == split.GREEN for c in at_half.values()), len(users), 0.5)
    state.apply(100, revision=4)
    assert {await infer(router, [(b"x-user", u.encode())]) for u in users} == {split.GREEN}
    # without the header each request is drawn on its own: both colours answer the same anonymous client
    state.apply(50, revision=5)
    anonymous = Counter([await infer(router, []) for _ in range(400)])
    assert within_binomial(anonymous[split.GREEN], 400, 0.5), anonymous


@pytest.mark.parametrize(("asked", "applied"), [(-5, 0), (0, 0), (37, 37), (100, 100), (250, 100)])
def test_the_weight_in_force_is_clamped_and_carries_its_revision(asked: int, applied: int) -> None:
    metrics = RouterMetrics(rollout="digits")
    state = RouterState(metrics)
    assert not state.known and state.revision is None and state.green_weight == 0
    state.apply(asked, revision=7)
    assert (state.green_weight, state.revision, state.known) == (applied, 7, True)
    gauge = metrics.registry.get_sample_value("modelrouter_applied_weight", {"rollout": "digits"})
    assert gauge == applied


@pytest.mark.parametrize(
    ("key", "bucket"), [("user-1", 68), ("user-2", 64), ("alice", 29), ("bob", 42), ("session:42", 38), ("", 76)]
)
def test_known_sticky_keys_keep_their_buckets_across_router_versions(key: str, bucket: int) -> None:
    """A router upgrade must not move a sticky user between colours: the bucket of a key is part of the
    contract (blake2b-64 of the key's UTF-8, big-endian, modulo 100), not an implementation detail."""
    assert split.sticky_bucket(key) == bucket
