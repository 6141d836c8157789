"""What a router keeps of what it served (router.persisted), and how a restarted router serves it again: the
weights it confirmed, a guard trip that held green at 0% still held, and nothing kept of another rollout."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

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


def save_served(path: Path, *, uid: str, revision: int, green: int) -> None:
    """What a router of rollout ``uid`` keeps after serving ``green`` for ``revision`` (namespace ml, digits)."""
    persisted.save(
        path,
        namespace="ml",
        name="digits",
        rollout=rollout(green=green, revision=revision),
        report=report_data(uid=uid, revision=revision, green=green, trip=None),
    )


def test_a_report_for_another_uid_serves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "weights.json"
    save_served(path, uid="u0", revision=3, green=40)
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


def test_a_trip_during_an_apply_and_the_rollback_after_it_are_both_kept(tmp_path: Path) -> None:
    """The guard trips while weights are being applied (so 0% green is served for it), then the operator
    acknowledges and rolls back while green already gets 0% (nothing to apply): the file follows both, and a
    router restarted from it alone never gives the rolled-back green traffic."""
    path = tmp_path / "weights.json"

    def save(obj: dict[str, Any], report: dict[str, str]) -> None:
        persisted.save(path, namespace="default", name="digits", rollout=obj, report=report)

    tripping: list[WeightsFollower] = []
    plane = Plane()

    def apply_and_trip(wanted: Wanted) -> Serving:
        if wanted.green > 0 and tripping[0].trip is None:
            assert tripping[0].tripped(TRIP)  # the guard trips in the middle of this apply
        return plane.apply(wanted)

    follower = WeightsFollower(apply=apply_and_trip, report=Annotations().report, remember=save)
    plane.follower = follower
    tripping.append(follower)
    follower.observe(rollout(green=25, revision=5))
    assert follower.step() and plane.serving.green == 0
    kept = persisted.load(path, namespace="default", name="digits")
    assert kept is not None and parse_trip(kept.report[constants.REPORT_GUARD]) == TRIP

    rolled_back = rollout(green=0, revision=6, phase="RollingBack", acknowledged=5)
    follower.observe(rolled_back)
    assert follower.step() and plane.serving.green == 0
    kept = persisted.load(path, namespace="default", name="digits")
    assert kept is not None and kept.rollout["status"] == rolled_back["status"]
    assert persisted.served(kept) == (6, 0)

    restarted, restarted_plane, _ = following()
    restarted.restart(kept.rollout, kept.report)
    assert restarted.step() and restarted_plane.serving.green == 0


def test_a_save_that_fails_removes_the_older_file(tmp_path: Path) -> None:
    """What a failed save leaves must not be served after a restart: weights that are no longer served."""
    path = tmp_path / "weights.json"
    save_served(path, uid="u1", revision=5, green=25)
    assert persisted.load(path, namespace="ml", name="digits") is not None
    with pytest.raises(TypeError):
        persisted.save(path, namespace="ml", name="digits", rollout={"status": {1, 2}}, report={})  # cannot be written
    assert not path.exists()
    assert persisted.load(path, namespace="ml", name="digits") is None


def test_a_failed_remember_is_tried_again_once_something_changes() -> None:
    calls: list[int] = []

    def flaky(obj: dict[str, Any], report: dict[str, str]) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("No space left on device")

    follower, _plane, _ = remembering(remember=flaky)
    follower.observe(rollout(green=25, revision=5))
    assert follower.step()  # the failed remember does not fail the step: the weights are served
    assert len(calls) == 2  # tried again when the step settled
    assert follower.step() and len(calls) == 2  # kept now: not written again while nothing changes


def test_a_router_replica_remembers_its_own_entry_and_serves_it_after_a_restart(tmp_path: Path) -> None:
    kept: Kept = []
    plane, annotations = Plane(), Annotations()
    follower = WeightsFollower(
        apply=plane.apply,
        report=annotations.report,
        remember=lambda obj, report: kept.append((obj, report)),
        replica="digits-router-7f9c-x2",
    )
    plane.follower = follower
    seen = rollout(green=25, revision=5)
    follower.observe(seen)
    assert follower.step()
    assert kept == [(seen, report_data(uid="u1", revision=5, green=25, trip=None, replica="digits-router-7f9c-x2"))]
    path = tmp_path / "weights.json"
    persisted.save(path, namespace="ml", name="digits", rollout=seen, report=kept[-1][1])
    loaded = persisted.load(path, namespace="ml", name="digits")
    assert loaded is not None
    assert persisted.served(loaded, "digits-router-7f9c-x2") == (5, 25)  # the container restarted: same Pod
    assert persisted.served(loaded) is None  # not an entry of a router with no name
