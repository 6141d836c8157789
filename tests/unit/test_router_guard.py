"""The router's data-plane guard without a cluster: the sliding window and its trip rule, when it is armed,
what the nginx access log tells it, and how a trip holds green at 0% until the operator acknowledges it."""

from __future__ import annotations

import asyncio
import datetime
import random
from collections.abc import MutableMapping
from typing import Any

import pytest

from model_server.router import split
from model_server.router.guard import ErrorWindow, Guard, armed, guard_of, wilson_lower
from model_server.router.metrics import RouterMetrics
from model_server.router.nginx import AccessLog
from model_server.router.proxy import Router, RouterState
from model_server.router.upstream import Response, Upstream, UpstreamError
from model_server.router.watch import ROLLOUT_GONE, Serving, Wanted, WeightsFollower, gone_report, holding, target
from modelrollout.api import constants
from modelrollout.api.spec import GuardSpec
from modelrollout.routing.guard import GuardTrip, parse_trip
from modelrollout.routing.report import report_data, report_of

DEFAULTS = GuardSpec()


def test_wilson_lower_bound() -> None:
    assert wilson_lower(0, 0) == 0.0
    assert wilson_lower(20, 20) == pytest.approx(20 / (20 + 2.3263478740408408**2))
    assert wilson_lower(10, 20) < 0.5 < wilson_lower(18, 20)
    assert wilson_lower(500, 1000) < 0.5 < wilson_lower(540, 1000)


def fill(window: ErrorWindow, *, requests: int, errors: int, start: float, seconds: float) -> float:
    """``requests`` evenly over ``seconds`` from ``start``, the last ``errors`` of them failing; returns the end."""
    for index in range(requests):
        window.record(failed=index >= requests - errors, now=start + seconds * index / requests)
    return start + seconds


def over(window: ErrorWindow, now: float, spec: GuardSpec = DEFAULTS) -> tuple[int, int] | None:
    return window.over(min_requests=spec.min_requests, max_error_rate=spec.max_error_rate, now=now)


def test_a_hard_fault_trips_after_min_requests_although_the_window_holds_older_successes() -> None:
    window = ErrorWindow(5.0)
    now = fill(window, requests=200, errors=0, start=0.0, seconds=4.9)  # 40 green requests/s, all fine
    failed = 0
    while over(window, now) is None:
        now += 0.025
        window.record(failed=True, now=now)
        failed += 1
    assert failed <= DEFAULTS.min_requests + 2  # a 100 ms bucket may hold a success or two from before
    errors, requests = over(window, now) or (0, 0)
    assert requests < 30 and errors / requests >= 0.75
    assert window.totals(now)[1] > 150  # the whole window alone would not have tripped for seconds


def test_fewer_than_min_requests_never_trip() -> None:
    window = ErrorWindow(5.0)
    fill(window, requests=19, errors=19, start=0.0, seconds=1.0)
    assert over(window, 1.0) is None
    window.record(failed=True, now=1.01)
    assert over(window, 1.01) == (20, 20)


def test_failures_older_than_the_window_are_forgotten() -> None:
    window = ErrorWindow(5.0)
    fill(window, requests=19, errors=19, start=0.0, seconds=1.0)
    window.record(failed=True, now=6.5)
    assert over(window, 6.5) is None
    assert window.totals(6.5) == (1, 1)


@pytest.mark.parametrize("error_rate", [0.0, 0.005, 0.05, 0.2])
def test_a_green_with_random_errors_below_the_limit_never_trips(error_rate: float) -> None:
    """Ten minutes of 40 green requests/s, each failing at random with ``error_rate``: never a trip (a 20%
    error rate is the Prometheus analysis's to judge, not the guard's)."""
    draw = random.Random(11)
    window = ErrorWindow(5.0)
    for index in range(40 * 600):
        now = index / 40
        failed = draw.random() < error_rate
        window.record(failed=failed, now=now)
        if failed:
            assert over(window, now) is None, (index, window.totals(now))


def test_a_green_failing_most_answers_trips() -> None:
    draw = random.Random(3)
    window = ErrorWindow(5.0)
    for index in range(400):
        window.record(failed=draw.random() < 0.9, now=index / 40)
        if over(window, index / 40) is not None:
            break
    else:
        pytest.fail("a 90% error rate did not trip the guard in 10 s")
    assert index < 40


class Trips:
    def __init__(self) -> None:
        self.trips: list[GuardTrip] = []

    def __call__(self, trip: GuardTrip) -> None:
        self.trips.append(trip)


def guard(clock: list[float]) -> tuple[Guard, Trips]:
    trips = Trips()
    at = datetime.datetime(2026, 11, 23, 12, 0, tzinfo=datetime.UTC)
    return Guard(on_trip=trips, clock=lambda: clock[0], wall=lambda: at), trips


def test_the_guard_trips_once_with_the_numbers_and_only_for_green() -> None:
    clock = [100.0]
    sentry, trips = guard(clock)
    sentry.arm(armed(revision=4, green=25, phase="Progressing", green_revision="g1", settings=DEFAULTS))
    for _ in range(50):
        clock[0] += 0.01
        sentry.outcome("blue", failed=True)  # blue's failures are not green's
    assert trips.trips == []
    for _ in range(25):
        clock[0] += 0.01
        sentry.outcome("green", failed=True)
    [trip] = trips.trips
    assert (trip.revision, trip.green_revision, trip.errors, trip.requests) == (4, "g1", 20, 20)
    assert trip.at == "2026-11-23T12:00:00.000Z" and trip.window == 5.0 and trip.max_error_rate == 0.5
    assert sentry.armed is None


@pytest.mark.parametrize(
    ("green", "phase", "enabled", "arms"),
    [
        (25, "Progressing", True, True),
        (100, "Paused", True, True),  # a last step at 100%: blue still runs the stable model
        (0, "Progressing", True, False),
        (25, "Progressing", False, False),
        (100, "Promoting", True, False),  # green may become the stable model any moment
        (100, "Finalizing", True, False),  # green serves the stable model; blue may run an older one
        (0, "RollingBack", True, False),
    ],
)
def test_the_guard_is_armed_only_for_a_canary_with_green_traffic(
    green: int, phase: str, enabled: bool, arms: bool
) -> None:
    settings = GuardSpec(enabled=enabled)
    assert (armed(revision=1, green=green, phase=phase, green_revision="g", settings=settings) is not None) is arms


def test_a_disarmed_guard_never_trips() -> None:
    clock = [0.0]
    sentry, trips = guard(clock)
    for _ in range(100):
        clock[0] += 0.01
        sentry.outcome("green", failed=True)
    assert trips.trips == []


def test_the_spec_settings_are_read_with_safe_defaults() -> None:
    spec = {"spec": {"traffic": {"guard": {"window": "2s", "minRequests": 50, "maxErrorRate": 0.3}}}}
    assert guard_of(spec) == GuardSpec(window=2.0, min_requests=50, max_error_rate=0.3)
    assert guard_of({"spec": {"traffic": {"guard": {"window": "forever"}}}}) == GuardSpec()
    assert guard_of({}) == GuardSpec()


def test_the_nginx_access_log_tells_the_guard_each_answer() -> None:
    clock = [0.0]
    sentry, trips = guard(clock)
    sentry.arm(armed(revision=2, green=50, phase="Progressing", green_revision="g", settings=DEFAULTS))
    log = AccessLog(RouterMetrics(rollout="digits"), sentry)
    for _ in range(30):
        log.datagram_received(b"<190>Nov 22 14:50:29 modelrouter: blue 200 200 0.002 0.001", None)
    assert sentry.window.totals(clock[0]) == (0, 0)
    for line in (b"green 500 500 0.002 0.001", b"green 502 - 0.001 -", b"green 504 504 30.0 30.0"):
        clock[0] += 0.01
        log.datagram_received(b"<190>Nov 22 14:50:29 modelrouter: " + line, None)
    clock[0] += 0.01
    log.datagram_received(b"<190>Nov 22 14:50:29 modelrouter: green 200 200 0.002 0.001", None)
    assert sentry.window.totals(clock[0]) == (3, 4)
    for _ in range(30):
        clock[0] += 0.01
        log.datagram_received(b"<190>Nov 22 14:50:29 modelrouter: green 500 500 0.002 0.001", None)
    assert len(trips.trips) == 1


class Failing(Upstream):
    """An upstream that answers 500, or cannot be reached (no network)."""

    def __init__(self, colour: str, *, status: int = 500, unreachable: bool = False) -> None:
        super().__init__(f"http://{colour}.invalid:80")
        self.status, self.unreachable = status, unreachable
        self.calls = 0

    async def request(self, method: bytes, target: bytes, body: bytes, content_type: bytes | None) -> Response:
        self.calls += 1
        if self.unreachable:
            raise UpstreamError("connection refused")
        return Response(self.status, [], b'{"outputs":[{"data":[1]}],"id":"x"}')


async def call(router: Router, path: str) -> int:
    scope = {"type": "http", "method": "POST", "path": path, "headers": []}
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "http.request", "body": b"{}"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    await router(scope, receive, send)
    status: int = sent[0]["status"]
    return status


@pytest.mark.parametrize("unreachable", [False, True])
async def test_the_python_data_plane_tells_the_guard_each_user_answer_not_mirrored_copies(unreachable: bool) -> None:
    clock = [0.0]
    sentry, trips = guard(clock)
    state = RouterState(RouterMetrics(rollout="digits"), mirror_percent=100)
    green = Failing(split.GREEN, unreachable=unreachable)
    router = Router(state=state, blue=Failing(split.BLUE, status=200), green=green, guard=sentry)
    sentry.arm(armed(revision=3, green=50, phase="Progressing", green_revision="g", settings=DEFAULTS))
    for _ in range(30):  # blue answers, and every request is mirrored to the failing green
        assert await call(router, "/v2/models/m/infer") == 200
    for _ in range(1000):  # the mirrored copies run as tasks of their own: wait until all 30 are done
        if green.calls == 30:
            break
        await asyncio.sleep(0.001)
    assert green.calls == 30  # green failed every mirrored copy
    assert sentry.window.totals(clock[0]) == (0, 0) and trips.trips == []
    state.apply(100, revision=3)
    for _ in range(25):
        clock[0] += 0.01
        assert await call(router, "/v2/models/m/infer") == (502 if unreachable else 500)
    assert len(trips.trips) == 1 and trips.trips[0].errors == 20


# --- holding green at 0% after a trip (router.watch)

TRIP = GuardTrip(
    revision=5, green_revision="g1", errors=20, requests=20, window=5.0, max_error_rate=0.5, at="2026-11-23T12:00:00Z"
)


def wanted(**changes: Any) -> Wanted:
    values: dict[str, Any] = {"revision": 5, "green": 25, "mirror": 0, "phase": "Progressing", "green_revision": "g1"}
    return Wanted(**{**values, **changes})


@pytest.mark.parametrize(
    ("changes", "holds"),
    [
        ({}, True),
        ({"revision": 6, "green": 50}, True),  # asked before the operator read the trip
        ({"revision": 6, "green": 100, "phase": "Promoting"}, True),
        ({"phase": "Paused"}, True),
        ({"acknowledged": 5}, False),  # the operator read it
        ({"revision": 6, "green": 0, "phase": "RollingBack"}, False),  # green gets nothing anyway
        ({"green_revision": "g2"}, False),  # another candidate
        ({"revision": 9, "green": 100, "phase": "Finalizing"}, False),  # green serves the stable model
    ],
)
def test_a_trip_holds_green_at_zero_until_acknowledged(changes: dict[str, Any], holds: bool) -> None:
    assert holding(wanted(**changes), TRIP) is holds
    assert holding(wanted(**changes), None) is False


def test_a_held_newer_revision_is_reported_as_the_trips_revision() -> None:
    goal, trip = target(wanted(revision=7, green=50), TRIP)
    assert (goal.revision, goal.green) == (7, 0)
    assert trip is not None and trip.revision == 7 and trip.errors == 20
    goal, trip = target(wanted(revision=7, green=50, acknowledged=5), TRIP)
    assert (goal.green, trip) == (50, TRIP)


def rollout(
    *, green: int, revision: int, phase: str = "Progressing", acknowledged: int | None = None
) -> dict[str, Any]:
    status: dict[str, Any] = {
        "phase": phase,
        "greenRevision": "g1",
        "weights": {"blue": 100 - green, "green": green, "revision": revision},
    }
    if acknowledged is not None:
        status["guardTrip"] = {"revision": acknowledged}
    return {"metadata": {"uid": "u1"}, "status": status}


def read_back(*, applied: str | None = None, guard: str | None = None) -> dict[str, str]:
    """The report as a restarted router reads it back (written for this rollout)."""
    data = {constants.REPORT_ROLLOUT_UID: "u1"}
    if applied is not None:
        data[constants.REPORT_APPLIED] = applied
    if guard is not None:
        data[constants.REPORT_GUARD] = guard
    return data


class Plane:
    """A data plane that serves 0% green while its follower holds (as the router's enforce does)."""

    def __init__(self) -> None:
        self.follower: WeightsFollower | None = None
        self.serving = Serving(green=0, mirror=0)

    def apply(self, wanted: Wanted) -> Serving:
        assert self.follower is not None
        green = 0 if self.follower.holds(wanted) else wanted.green
        self.serving = Serving(green=green, mirror=wanted.mirror)
        return self.serving


class Annotations:
    def __init__(self) -> None:
        self.applied: str | None = None
        self.guard: str | None = None

    def report(self, uid: str, wanted: Wanted, trip: GuardTrip | None) -> None:
        self.applied = f"{wanted.revision}/{wanted.green}"
        if trip is not None:
            self.guard = trip.to_json()


def following() -> tuple[WeightsFollower, Plane, Annotations]:
    plane, annotations = Plane(), Annotations()
    follower = WeightsFollower(apply=plane.apply, report=annotations.report)
    plane.follower = follower
    return follower, plane, annotations


def test_a_trip_is_reported_with_what_the_router_really_serves_and_held_until_acknowledged() -> None:
    follower, plane, annotations = following()
    follower.observe(rollout(green=25, revision=5))
    assert follower.step() and annotations.applied == "5/25"
    assert follower.tripped(TRIP)
    assert follower.step()
    assert plane.serving.green == 0 and annotations.applied == "5/0"
    assert parse_trip(annotations.guard) == TRIP
    # the operator advanced before it read the trip: held, and the trip names the new revision
    follower.observe(rollout(green=50, revision=6))
    assert follower.step()
    assert plane.serving.green == 0 and annotations.applied == "6/0"
    held = parse_trip(annotations.guard)
    assert held is not None and held.revision == 6 and held.errors == 20
    # the operator rolls back and acknowledges: 0% asked, served and reported
    follower.observe(rollout(green=0, revision=7, phase="RollingBack", acknowledged=6))
    assert follower.step() and annotations.applied == "7/0"
    # a retry of the same candidate is followed again
    follower.observe(rollout(green=10, revision=9, acknowledged=6))
    assert follower.step() and plane.serving.green == 10 and annotations.applied == "9/10"


def test_a_restarted_router_keeps_green_at_zero_from_its_own_report() -> None:
    """The router restarts after a trip the operator has not read yet: it starts at 100% blue, reads its
    trip back from its report, and never returns to green."""
    follower, plane, annotations = following()
    follower.restart(rollout(green=25, revision=5), read_back(applied="5/0", guard=TRIP.to_json()))
    assert follower.step()
    assert plane.serving.green == 0
    assert annotations.applied is None and annotations.guard is None  # its report already says so


def test_an_acknowledged_trip_in_the_report_does_not_hold_a_later_canary() -> None:
    follower, plane, annotations = following()
    follower.restart(rollout(green=10, revision=12, acknowledged=5), read_back(guard=TRIP.to_json()))
    assert follower.step()
    assert plane.serving.green == 10 and annotations.applied == "12/10"


def test_a_trip_left_by_an_earlier_rollout_of_the_same_name_holds_nothing() -> None:
    follower, plane, annotations = following()
    follower.restart(
        rollout(green=25, revision=5),
        {**read_back(applied="5/0", guard=TRIP.to_json()), constants.REPORT_ROLLOUT_UID: "u0"},
    )
    assert follower.step()
    assert plane.serving.green == 25 and annotations.applied == "5/25"


def test_a_new_rollouts_first_report_clears_the_trip_an_earlier_one_left_in_the_configmap() -> None:
    """keepStable keeps the report; a new rollout of the same name adopts it. The router's writes are merged
    into the ConfigMap, so each one rewrites every key: the old trip is gone under the new uid, and can
    neither hold the new candidate at 0% nor be acknowledged in its place."""
    earlier = {**read_back(applied="12/0", guard=TRIP.to_json()), constants.REPORT_ROLLOUT_UID: "u0"}
    follower, plane, _annotations = following()
    follower.restart(rollout(green=25, revision=1), earlier)
    assert follower.step() and plane.serving.green == 25
    written = report_data(uid="u1", revision=1, green=25, trip=None)
    merged = {**earlier, **written}  # what a JSON merge patch of the data leaves
    assert report_of(merged, "u1").trip is None and report_of(merged, "u1").applied.confirms(revision=1, green=25)


def test_a_restarted_router_applies_nothing_before_its_trip_is_restored() -> None:
    """The weights and the report arrive in one step (under the follower's lock): the moment the follower
    thread can see the weights, the trip already holds them, so green is never applied in between."""
    follower, plane, _annotations = following()
    follower.restart(rollout(green=25, revision=5), read_back(applied="5/0", guard=TRIP.to_json()))
    assert follower.wanted is not None and follower.holds(follower.wanted)
    assert follower.step() and plane.serving.green == 0


def test_a_trip_an_earlier_router_version_wrote_on_the_rollout_is_honoured() -> None:
    follower, plane, annotations = following()
    body = rollout(green=25, revision=5)
    body["metadata"]["annotations"] = {"modelrollout.dev/router-guard": TRIP.to_json()}
    follower.restart(body, None)
    assert follower.step() and plane.serving.green == 0
    assert parse_trip(annotations.guard) == TRIP  # written into the report from now on


def test_a_trip_during_the_apply_of_new_weights_still_ends_at_zero() -> None:
    """The trip arrives while the follower applies 50%: the data plane decides under the trip, and the
    follower applies again until what it serves is what the trip allows."""
    follower, plane, annotations = following()
    follower.observe(rollout(green=25, revision=5))
    assert follower.step()
    follower.observe(rollout(green=50, revision=6))
    real_apply = plane.apply

    def apply_then_trip(wanted: Wanted) -> Serving:
        served = real_apply(wanted)
        if wanted.green == 50:
            assert follower.tripped(TRIP)
        return served

    follower._apply = apply_then_trip
    assert follower.step()
    assert plane.serving.green == 0 and annotations.applied == "6/0"
    assert parse_trip(annotations.guard) == GuardTrip(**{**TRIP.__dict__, "revision": 6})


@pytest.mark.parametrize(
    ("phase", "green", "green_revision"),
    [("Promoting", 100, "g1"), ("RollingBack", 0, "g1"), ("Progressing", 25, "g2")],
)
def test_a_trip_after_the_router_saw_the_canary_end_is_dropped(phase: str, green: int, green_revision: str) -> None:
    """The data plane armed the guard for a Progressing canary, but the router has since seen the promotion
    (or a rollback, or another candidate): the trip does not stand, so a promotion the router may already
    have confirmed never sends users back to blue."""
    follower, plane, annotations = following()
    follower.observe(rollout(green=100, revision=5))
    assert follower.step() and plane.serving.green == 100
    seen = rollout(green=green, revision=6, phase=phase)
    seen["status"]["greenRevision"] = green_revision
    follower.observe(seen)
    assert follower.tripped(TRIP) is False
    assert follower.step()
    assert plane.serving.green == green and annotations.applied == f"6/{green}" and annotations.guard is None


def test_a_disabled_guard_never_trips() -> None:
    follower, _, _ = following()
    disabled = rollout(green=25, revision=5)
    disabled["spec"] = {"traffic": {"guard": {"enabled": False}}}
    follower.observe(disabled)
    assert follower.tripped(TRIP) is False


def test_trip_annotation_round_trip_and_unreadable_values() -> None:
    assert parse_trip(TRIP.to_json()) == TRIP
    assert "20 of green's last 20 requests fail within 5s" in TRIP.describe()
    for text in (None, "", "{", '{"revision": "5"}', '{"revision": 5}', "[]"):
        assert parse_trip(text) is None


def test_a_router_replica_reads_back_its_own_entry_and_is_held_by_another_replicas_trip() -> None:
    """Two replicas of the router: a restarted one takes what it reported from its own entry, and a trip any
    replica wrote (the operator has not acknowledged it yet) keeps it at 0% green too."""
    plane, annotations = Plane(), Annotations()
    follower = WeightsFollower(apply=plane.apply, report=annotations.report, replica="r-b")
    plane.follower = follower
    data = {
        **report_data(uid="u1", revision=5, green=25, trip=None, replica="r-b"),
        **report_data(uid="u1", revision=5, green=0, trip=TRIP, replica="r-a"),
    }
    follower.restart(rollout(green=25, revision=5), data)
    assert follower.reported.revision == 5 and follower.reported.green == 25  # its own entry, not r-a's
    assert follower.step()
    assert plane.serving.green == 0  # r-a's trip holds it
    assert annotations.applied == "5/0" and parse_trip(annotations.guard) == TRIP
    # once acknowledged, a later canary is followed again
    follower.observe(rollout(green=10, revision=9, acknowledged=TRIP.revision))
    assert follower.step() and plane.serving.green == 10 and annotations.applied == "9/10"


@pytest.mark.parametrize("replica", ["", "digits-router-7f9c-x2"])
def test_a_router_whose_rollout_is_gone_serves_blue_and_writes_nothing(replica: str) -> None:
    plane, annotations = Plane(), Annotations()
    follower = WeightsFollower(apply=plane.apply, report=annotations.report, replica=replica)
    plane.follower = follower
    follower.restart(ROLLOUT_GONE, gone_report(replica))
    assert follower.step()
    assert plane.serving.green == 0
    assert annotations.applied is None  # nothing to report to, for a named replica too
