"""The router's report (modelrollout.routing.report): what the router writes and what the operator reads."""

from __future__ import annotations

from modelrollout.api import constants
from modelrollout.k8s import resources
from modelrollout.routing.base import AppliedWeights
from modelrollout.routing.guard import GuardTrip
from modelrollout.routing.report import (
    applied_by,
    latest_trip,
    legacy_trip,
    replicas_in,
    report_data,
    report_of,
    trip_of,
    tripped,
)


def trip(revision: int) -> GuardTrip:
    return GuardTrip(
        revision=revision,
        green_revision="g1",
        errors=20,
        requests=20,
        window=5.0,
        max_error_rate=0.5,
        at="2026-11-23T20:00:00Z",
    )


def test_every_write_carries_every_key_and_the_trip_when_there_is_one() -> None:
    written = report_data(uid="u1", revision=4, green=25, trip=trip(4))
    assert written == {
        constants.REPORT_ROLLOUT_UID: "u1",
        constants.REPORT_APPLIED: "4/25",
        constants.REPORT_GUARD: trip(4).to_json(),
    }
    assert report_of(written, "u1").trip == trip(4)
    without = report_data(uid="u1", revision=5, green=0, trip=None)
    assert without[constants.REPORT_GUARD] == ""  # empties a trip an earlier write left (a merge patch)
    assert report_of(without, "u1").trip is None


def test_the_latest_trip_is_the_one_that_holds_the_newest_revision() -> None:
    assert latest_trip() is None and latest_trip(None, None) is None
    assert latest_trip(trip(3), None, trip(7), trip(5)) == trip(7)
    assert latest_trip(trip(9), trip(2)) == trip(9)


def test_a_trip_on_the_rollout_itself_is_read_where_earlier_routers_wrote_it() -> None:
    body = {"metadata": {"annotations": {"modelrollout.dev/router-guard": trip(6).to_json()}}}
    assert legacy_trip(body) == trip(6)
    assert legacy_trip({"metadata": {"annotations": None}}) is None and legacy_trip({}) is None


def entries(*writes: dict[str, str]) -> dict[str, str]:
    """The ConfigMap's data after each write was merged into it, in order."""
    data: dict[str, str] = {}
    for write in writes:
        data.update(write)
    return data


def test_each_router_replica_writes_its_own_entry_and_reads_only_its_own_back() -> None:
    a = report_data(uid="u1", revision=4, green=25, trip=None, replica="r-a")
    b = report_data(uid="u1", revision=3, green=10, trip=trip(3), replica="r-b")
    assert a == {"rollout-uid.r-a": "u1", "applied.r-a": "4/25", "guard.r-a": ""}
    data = entries(a, b)
    assert replicas_in(data) == ["r-a", "r-b"]
    assert report_of(data, "u1", "r-a").applied == AppliedWeights(revision=4, green=25)
    assert report_of(data, "u1", "r-b").applied == AppliedWeights(revision=3, green=10)
    assert report_of(data, "u1").applied.revision is None  # no bare entry: nothing for a router with no name
    assert replicas_in(entries(report_data(uid="u1", revision=1, green=0, trip=None), a)) == ["", "r-a"]
    assert replicas_in({"applied.": "1/0", "unrelated": "x"}) == []


READY = {"r-a": True, "r-b": True}


def test_weights_count_as_applied_only_when_every_ready_router_pod_reports_them() -> None:
    a4 = report_data(uid="u1", revision=4, green=25, trip=None, replica="r-a")
    b3 = report_data(uid="u1", revision=3, green=10, trip=None, replica="r-b")
    b4 = report_data(uid="u1", revision=4, green=25, trip=None, replica="r-b")
    confirmed = AppliedWeights(revision=4, green=25)
    assert applied_by(entries(a4, b4), "u1", READY) == confirmed
    behind = applied_by(entries(a4, b3), "u1", READY)
    assert behind.revision is None and behind.note == "router replicas differ: r-a 4/25, r-b 3/10"
    missing = applied_by(entries(a4), "u1", READY)
    assert missing.revision is None and missing.note == "router replica r-b has not reported"
    # a replica that is gone does not hold the others back
    assert applied_by(entries(a4, b3), "u1", {"r-a": True}) == confirmed
    nobody = applied_by(entries(a4), "u1", {})
    assert nobody.revision is None and nobody.note == "no router Pod is ready"
    # not known which Pods serve: every entry must agree
    assert applied_by(entries(a4, b3), "u1", None).revision is None
    assert applied_by(entries(a4, b4), "u1", None) == confirmed
    # an entry written for an earlier rollout of the same name confirms nothing
    assert applied_by(entries(a4, b4), "u2", READY).revision is None


def test_a_router_that_is_not_ready_is_not_waited_for() -> None:
    """No traffic reaches it, and it turns Ready again only once it serves what its rollout asks then: one
    replica that cannot come back never holds the rollout (nor rolls it back for want of confirmation)."""
    a4 = report_data(uid="u1", revision=4, green=25, trip=None, replica="r-a")
    b3 = report_data(uid="u1", revision=3, green=10, trip=None, replica="r-b")
    assert applied_by(entries(a4, b3), "u1", {"r-a": True, "r-b": False}) == AppliedWeights(revision=4, green=25)
    none_ready = applied_by(entries(a4, b3), "u1", {"r-a": False, "r-b": False})
    assert none_ready.revision is None and none_ready.note == "no router Pod is ready"


def test_a_router_with_no_name_stands_for_the_only_router_pod_never_for_two() -> None:
    bare = report_data(uid="u1", revision=4, green=25, trip=None)
    assert applied_by(bare, "u1", {"r-x": True}) == AppliedWeights(revision=4, green=25)
    assert applied_by(bare, "u1", None) == AppliedWeights(revision=4, green=25)
    two = applied_by(bare, "u1", {"r-x": True, "r-y": True})
    assert two.revision is None and two.note == "router replica r-x, r-y has not reported"
    # once any router wrote a named entry the bare one, left by an earlier router version, stands for none
    named = report_data(uid="u1", revision=5, green=0, trip=None, replica="r-x")
    assert applied_by(entries(bare, named), "u1", {"r-x": True}) == AppliedWeights(revision=5, green=0)
    fresh = applied_by(entries(bare, named), "u1", {"r-z": True})  # r-x gone, r-z not reported yet
    assert fresh.revision is None and fresh.note == "router replica r-z has not reported"
    assert applied_by(entries(bare, named), "u1", None).revision is None  # not known which serves: they differ


def test_a_trip_of_any_replica_holds_the_rollout_even_when_that_replica_is_gone() -> None:
    a = report_data(uid="u1", revision=4, green=25, trip=None, replica="r-a")
    b = report_data(uid="u1", revision=3, green=0, trip=trip(3), replica="r-b")
    assert trip_of(entries(a, b), "u1") == trip(3)
    assert trip_of(entries(a, b), "u2") is None  # written for an earlier rollout of the same name
    later = report_data(uid="u1", revision=6, green=0, trip=trip(6), replica="r-a")
    assert trip_of(entries(a, b, later), "u1") == trip(6)
    assert trip_of(report_data(uid="u1", revision=1, green=0, trip=trip(1)), "u1") == trip(1)  # a bare entry
    assert trip_of(None, "u1") is None


def pod(name: str, *, ready: bool = True, terminating: bool = False, phase: str = "Running") -> dict[str, object]:
    return {
        "metadata": {"name": name, "deletionTimestamp": "2026-11-24T00:00:00Z" if terminating else None},
        "status": {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def test_the_live_router_pods_are_those_not_leaving_with_their_readiness() -> None:
    pods = [
        pod("r-b"),
        pod("r-a"),
        pod("starting", ready=False),
        pod("leaving", terminating=True),
        pod("evicted", phase="Failed"),
    ]
    assert resources.live_pods(pods) == {"r-b": True, "r-a": True, "starting": False}


def test_a_report_holding_a_trip_is_told_apart_from_a_confirmation() -> None:
    assert not tripped(None) and not tripped(report_data(uid="u1", revision=4, green=25, trip=None, replica="r-a"))
    assert tripped(report_data(uid="u1", revision=4, green=0, trip=trip(4), replica="r-a"))
    assert tripped(report_data(uid="u1", revision=4, green=0, trip=trip(4)))
