"""Reading the router's guard annotation (modelrollout.routing.guard): what a trip without its optional fields
means, and which values are not a trip at all (an unreadable annotation is never a reason to roll back)."""

from __future__ import annotations

import json

import pytest

from modelrollout.routing.guard import GuardTrip, parse_trip

FULL = {
    "revision": 7,
    "greenRevision": "abc123",
    "errors": 9,
    "requests": 10,
    "window": "5s",
    "maxErrorRate": 0.5,
    "at": "2026-11-23T12:00:00Z",
}


def test_a_full_annotation_round_trips() -> None:
    trip = parse_trip(json.dumps(FULL))
    assert trip == GuardTrip(
        revision=7,
        green_revision="abc123",
        errors=9,
        requests=10,
        window=5.0,
        max_error_rate=0.5,
        at="2026-11-23T12:00:00Z",
    )
    assert parse_trip(trip.to_json()) == trip


def test_a_trip_without_its_optional_fields_is_about_no_candidate_and_no_window() -> None:
    """An older router may write only the counts: the trip still reads, with empty texts and zeros (never the
    text "None", which a candidate's revision could be compared with)."""
    trip = parse_trip(json.dumps({"revision": 3, "errors": 1, "requests": 2}))
    assert trip == GuardTrip(revision=3, green_revision="", errors=1, requests=2, window=0.0, max_error_rate=0.0, at="")


@pytest.mark.parametrize("field", ["revision", "errors", "requests"])
@pytest.mark.parametrize("value", ["3", 3.0, 3.5, True, None, [3]])
def test_counts_that_are_not_integers_are_not_a_trip(field: str, value: object) -> None:
    assert parse_trip(json.dumps({**FULL, field: value})) is None


@pytest.mark.parametrize("text", [None, "", "not json", "[]", "{}", json.dumps({**FULL, "window": "soon"})])
def test_an_absent_or_unreadable_annotation_is_no_trip(text: str | None) -> None:
    assert parse_trip(text) is None
