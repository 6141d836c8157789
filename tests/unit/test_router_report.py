"""The router's report (modelrollout.routing.report): what the router writes and what the operator reads."""

from __future__ import annotations

from modelrollout.api import constants
from modelrollout.routing.guard import GuardTrip
from modelrollout.routing.report import latest_trip, legacy_trip, report_data, report_of


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
