"""What a router keeps of what it served (router.persisted), and how a restarted router serves it again: the
weights it confirmed, a guard trip that held green at 0% still held, and nothing kept of another rollout."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from model_server.router import persisted
from model_server.router.watch import Serving, Wanted, WeightsFollower
from modelrollout.api import constants
from modelrollout.routing.guard import parse_trip
from modelrollout.routing.report import report_data
from tests.unit.test_router_guard import TRIP, Annotations, Plane, following, rollout

Kept = list[tuple[dict[str, Any], dict[str, str]]]


def remembering(
    remember: Callable[[dict[str, Any], dict[str, str]], None] | None = None,
    apply: Callable[[Wanted], Serving] | None = None,
) -> tuple[WeightsFollower, Plane, Kept]:
    kept: Kept = []
    plane, annotations = Plane(), Annotations()
    follower = WeightsFollower(
        apply=apply or plane.apply,
        report=annotations.report,
        remember=remember or (lambda obj, report: kept.append((obj, report))),
    )
    plane.follower = follower
    return follower, plane, kept


def test_each_confirmed_apply_is_remembered_with_the_rollout_it_was_for() -> None:
    follower, _plane, kept = remembering()
    seen = rollout(green=25, revision=5)
    follower.observe(seen)
    assert follower.step()
    assert kept == [(seen, report_data(uid="u1", revision=5, green=25, trip=None))]


def test_a_failed_apply_is_not_remembered() -> None:
    def refuse(wanted: Wanted) -> Serving:
        raise RuntimeError("nginx rejected the config")

    follower, _plane, kept = remembering(apply=refuse)
    follower.observe(rollout(green=25, revision=5))
    assert follower.step() is False
    assert kept == []


def test_a_trip_is_remembered_with_green_at_zero() -> None:
    follower, plane, kept = remembering()
    follower.observe(rollout(green=25, revision=5))
    assert follower.step()
    assert follower.tripped(TRIP)
    assert follower.step()
    assert plane.serving.green == 0
    _, report = kept[-1]
    assert report[constants.REPORT_APPLIED] == "5/0"
    assert parse_trip(report[constants.REPORT_GUARD]) == TRIP


def test_what_was_saved_loads_back_for_the_same_rollout_only(tmp_path: Path) -> None:
    path = tmp_path / "weights.json"
    seen = {**rollout(green=40, revision=3), "metadata": {"uid": "u1", "managedFields": [{"manager": "x"}]}}
    report = report_data(uid="u1", revision=3, green=40, trip=None)
    persisted.save(path, namespace="ml", name="digits", rollout=seen, report=report)
    loaded = persisted.load(path, namespace="ml", name="digits")
    assert loaded is not None
    assert loaded.report == report
    assert loaded.rollout["status"] == seen["status"]
    assert "managedFields" not in loaded.rollout["metadata"]
    assert persisted.served(loaded) == (3, 40)
    assert persisted.load(path, namespace="ml", name="other") is None
    assert persisted.load(path, namespace="other", name="digits") is None
    assert not list(tmp_path.glob(".*partial"))  # the partial file was renamed into place


def test_a_missing_unreadable_or_incomplete_file_is_no_weights(tmp_path: Path) -> None:
    path = tmp_path / "weights.json"
    assert persisted.load(path, namespace="ml", name="digits") is None
    path.write_text('{"namespace": "ml", "name": "dig')  # cut short
    assert persisted.load(path, namespace="ml", name="digits") is None
    path.write_text(json.dumps({"namespace": "ml", "name": "digits", "rollout": {}}))
    assert persisted.load(path, namespace="ml", name="digits") is None
    path.write_text("[]")
    assert persisted.load(path, namespace="ml", name="digits") is None


def test_a_report_for_another_uid_serves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "weights.json"
    persisted.save(
        path,
        namespace="ml",
        name="digits",
        rollout=rollout(green=40, revision=3),
        report=report_data(uid="u0", revision=3, green=40, trip=None),
    )
    loaded = persisted.load(path, namespace="ml", name="digits")
    assert loaded is not None and persisted.served(loaded) is None


def test_a_router_restarted_from_the_file_serves_it_and_holds_its_trip(tmp_path: Path) -> None:
    """The round trip a container restart makes: the follower that served and tripped saves; a new follower
    restarts from the file alone (no API server) and serves what the first one served, its trip holding."""
    path = tmp_path / "weights.json"
    first, first_plane, _ = remembering(
        remember=lambda obj, report: persisted.save(
            path, namespace="default", name="digits", rollout=obj, report=report
        )
    )
    first.observe(rollout(green=25, revision=5))
    assert first.step() and first_plane.serving.green == 25
    loaded = persisted.load(path, namespace="default", name="digits")
    assert loaded is not None and persisted.served(loaded) == (5, 25)
    assert first.tripped(TRIP) and first.step() and first_plane.serving.green == 0

    loaded = persisted.load(path, namespace="default", name="digits")
    assert loaded is not None and persisted.served(loaded) == (5, 0)
    second, second_plane, _ = following()
    second.restart(loaded.rollout, loaded.report)
    assert second.step()
    assert second_plane.serving.green == 0  # the trip holds after the restart
    assert second.trip is not None and second.trip.green_revision == TRIP.green_revision
