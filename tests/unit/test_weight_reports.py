"""Weight confirmation without a cluster: the router's report format, what the builtin router applies and
reports (and when it must not), and what an HTTPRoute confirms."""

from __future__ import annotations

import copy
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from model_server.router import watch
from model_server.router.metrics import RouterMetrics
from model_server.router.nginx import NginxDataPlane
from model_server.router.watch import Action, Serving, Wanted, WeightsFollower, next_action
from modelrollout.api import constants
from modelrollout.api.spec import ModelRolloutSpec
from modelrollout.k8s import manifests
from modelrollout.routing import gateway_api
from modelrollout.routing.base import NOT_REPORTED, AppliedWeights, RolloutRef, format_report, parse_report
from modelrollout.routing.builtin import BuiltinRouter
from modelrollout.routing.guard import GuardTrip

SPEC = ModelRolloutSpec.model_validate(
    {
        "blue": {"model": {"uri": "file:///models/b.onnx", "version": "v1"}},
        "green": {"model": {"uri": "file:///models/g.onnx", "version": "v2"}},
        "traffic": {"provider": "gateway-api", "gatewayApi": {"parentRefs": [{"name": "public"}], "port": 8080}},
    }
)


def ref(router_report: dict[str, str] | None = None, **body: Any) -> RolloutRef:
    return RolloutRef(namespace="default", name="digits", uid="uid-1", body=body, router_report=router_report)


def rollout(*, green: int | None, revision: int | None = None) -> dict[str, Any]:
    weights: dict[str, Any] = {} if green is None else {"blue": 100 - green, "green": green}
    if revision is not None:
        weights["revision"] = revision
    return {"metadata": {"name": "digits", "uid": "uid-1"}, "status": {"weights": weights}}


def report(applied: str, uid: str = "uid-1") -> dict[str, str]:
    return {constants.REPORT_APPLIED: applied, constants.REPORT_ROLLOUT_UID: uid}


# -- the report ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("revision", "green"), [(0, 0), (1, 10), (17, 100)])
def test_a_report_reads_back_as_written(revision: int, green: int) -> None:
    report = parse_report(format_report(revision=revision, green=green))
    assert report.confirms(revision=revision, green=green)


@pytest.mark.parametrize("text", [None, "", "50", "x/50", "3/", "3/x", "three/50"])
def test_a_missing_or_unreadable_report_confirms_nothing(text: str | None) -> None:
    report = parse_report(text)
    assert report.revision is None and report.green is None
    assert not report.confirms(revision=0, green=0)


def test_a_report_of_another_revision_or_weight_confirms_nothing() -> None:
    report = parse_report("4/25")
    assert not report.confirms(revision=5, green=25)
    assert not report.confirms(revision=4, green=50)


def test_builtin_router_reads_its_report_and_never_confirms_without_one() -> None:
    router = BuiltinRouter()
    assert router.applied(ref(**rollout(green=25, revision=4)), SPEC) == NOT_REPORTED
    assert router.applied(ref(metadata={}), SPEC) == NOT_REPORTED
    assert router.applied(ref(report("4/25"), **rollout(green=25, revision=4)), SPEC).confirms(revision=4, green=25)
    # an annotation on the rollout (what an earlier router wrote, or anyone who may patch it) is no report
    annotated = {"metadata": {"annotations": {"modelrollout.dev/router-applied": "4/25"}}}
    assert router.applied(ref(**annotated), SPEC) == NOT_REPORTED


def test_a_report_written_for_an_earlier_rollout_of_the_same_name_confirms_nothing() -> None:
    earlier = BuiltinRouter().applied(ref(report("4/25", uid="uid-0"), **rollout(green=25, revision=4)), SPEC)
    assert not earlier.confirms(revision=4, green=25) and earlier.revision is None
    assert "earlier rollout" in earlier.note
    unsigned = {constants.REPORT_APPLIED: "4/25"}  # written by hand, for no rollout
    assert BuiltinRouter().applied(ref(unsigned), SPEC).revision is None


# -- what the builtin router applies and reports ----------------------------------------------------------


def test_wanted_weights_from_the_status_with_revision_0_for_older_objects() -> None:
    assert watch.wanted_of(rollout(green=None)) is None
    assert watch.wanted_of(rollout(green=30)) == Wanted(revision=0, green=30, mirror=0)
    body = rollout(green=30, revision=9)
    body["spec"] = {"traffic": {"mirror": {"percent": 5}}}
    assert watch.wanted_of(body) == Wanted(revision=9, green=30, mirror=5)


@pytest.mark.parametrize(
    ("serving", "report", "action"),
    [
        (None, NOT_REPORTED, Action.APPLY),  # just started (or the last apply failed): apply first
        (None, parse_report("3/25"), Action.APPLY),  # an old report does not stand for what is served now
        (Serving(green=10, mirror=0), parse_report("2/10"), Action.APPLY),
        (Serving(green=25, mirror=5), parse_report("3/25"), Action.APPLY),  # mirror changed
        (Serving(green=25, mirror=0), NOT_REPORTED, Action.REPORT),
        (Serving(green=25, mirror=0), parse_report("2/25"), Action.REPORT),  # same weight, new revision
        (Serving(green=25, mirror=0), parse_report("3/25"), Action.NOTHING),
    ],
)
def test_next_action(serving: Serving | None, report: AppliedWeights, action: Action) -> None:
    assert next_action(Wanted(revision=3, green=25, mirror=0), serving, report) is action


def test_nothing_to_do_before_the_operator_publishes_weights() -> None:
    assert next_action(None, None, NOT_REPORTED) is Action.NOTHING


class DataPlane:
    """A data plane whose next ``failures`` applies fail, like nginx rejecting or not loading a config."""

    def __init__(self) -> None:
        self.failures = 0
        self.serving = Serving(green=0, mirror=0)
        self.applies: list[Wanted] = []

    def apply(self, wanted: Wanted) -> None:
        self.applies.append(wanted)
        if self.failures:
            self.failures -= 1
            raise RuntimeError("nginx rejected the config")
        self.serving = Serving(green=wanted.green, mirror=wanted.mirror)


class Annotation:
    """The router's report, as the follower writes it."""

    def __init__(self) -> None:
        self.value: str | None = None
        self.uid: str | None = None
        self.writes = 0

    def report(self, uid: str, wanted: Wanted, trip: GuardTrip | None = None) -> None:
        self.value = format_report(revision=wanted.revision, green=wanted.green)
        self.uid = uid
        self.writes += 1


def follower() -> tuple[WeightsFollower, DataPlane, Annotation]:
    plane, annotation = DataPlane(), Annotation()
    return WeightsFollower(apply=plane.apply, report=annotation.report), plane, annotation


def test_reports_only_after_the_data_plane_applied() -> None:
    following, plane, annotation = follower()
    following.observe(rollout(green=10, revision=1))
    plane.failures = 1
    assert following.step() is False
    assert annotation.value is None  # the failed apply is not reported
    assert following.serving is None
    assert following.step() is True  # the retry (no new watch event needed)
    assert plane.serving == Serving(green=10, mirror=0)
    assert annotation.value == "1/10" and annotation.uid == "uid-1"  # for this rollout


def test_a_failed_apply_never_reports_the_new_revision_and_the_old_report_stays() -> None:
    following, plane, annotation = follower()
    following.observe(rollout(green=10, revision=1))
    assert following.step()
    following.observe(rollout(green=25, revision=2))
    plane.failures = 3
    for _ in range(3):
        assert following.step() is False
        assert annotation.value == "1/10"
    assert following.failures == 3
    assert following.step() is True
    assert annotation.value == "2/25"
    assert following.failures == 0


def test_after_a_failed_apply_the_old_weights_are_applied_again() -> None:
    """A reload that failed half-way leaves the data plane unknown: going back to the weights served
    before is applied, not assumed."""
    following, plane, annotation = follower()
    following.observe(rollout(green=10, revision=1))
    assert following.step()
    following.observe(rollout(green=50, revision=2))
    plane.failures = 1
    assert following.step() is False
    following.observe(rollout(green=10, revision=3))
    assert following.step()
    assert plane.applies[-1] == Wanted(revision=3, green=10, mirror=0)
    assert annotation.value == "3/10"


def test_a_new_revision_with_the_same_weight_is_reported_without_a_reload() -> None:
    following, plane, annotation = follower()
    following.observe(rollout(green=25, revision=4))
    assert following.step()
    following.observe(rollout(green=25, revision=5))
    assert following.step()
    assert len(plane.applies) == 1
    assert annotation.value == "5/25"
    following.observe(rollout(green=25, revision=5))
    assert following.step()
    assert annotation.writes == 2  # an up-to-date report is not written again


def test_a_report_read_back_is_trusted_only_for_the_same_rollout() -> None:
    """After a restart the router reads its report back: for this rollout it needs no new write; one left by
    an earlier rollout of the same name (or a rollout recreated meanwhile) is written again."""
    following, plane, annotation = follower()
    following.restart(rollout(green=25, revision=5), report("5/25"))
    assert following.step() and annotation.writes == 0 and len(plane.applies) == 1
    following.restart(rollout(green=25, revision=5), report("5/25", uid="uid-0"))
    assert following.step() and annotation.writes == 1 and annotation.uid == "uid-1"
    recreated = rollout(green=25, revision=5)
    recreated["metadata"]["uid"] = "uid-2"
    following.observe(recreated)  # the same name, a new rollout: what was reported was for the old one
    assert following.step() and annotation.writes == 2 and annotation.uid == "uid-2"


def test_the_first_report_follows_an_apply_even_at_0_percent() -> None:
    """The router starts at 100% blue, but reports 0% only after applying what the status asks."""
    following, plane, annotation = follower()
    following.observe(rollout(green=0, revision=7))
    plane.failures = 1
    assert following.step() is False
    assert annotation.value is None


def test_a_failed_report_is_retried() -> None:
    plane, attempts = DataPlane(), []

    def flaky_report(uid: str, wanted: Wanted, trip: GuardTrip | None = None) -> None:
        attempts.append(wanted)
        if len(attempts) == 1:
            raise ConnectionError("API server unreachable")

    following = WeightsFollower(apply=plane.apply, report=flaky_report)
    following.observe(rollout(green=10, revision=1))
    assert following.step() is False
    assert following.step() is True
    assert len(plane.applies) == 1 and len(attempts) == 2


def test_the_follower_thread_retries_by_itself_until_the_data_plane_applies() -> None:
    following, plane, annotation = follower()
    plane.failures = 2
    stop = threading.Event()
    thread = threading.Thread(target=following.run, args=(stop,))
    thread.start()
    try:
        following.observe(rollout(green=50, revision=2))
        for _ in range(100):
            if annotation.value is not None:
                break
            stop.wait(0.05)
        assert annotation.value == "2/50"
        assert len(plane.applies) == 3  # two failures, retried within the backoff (0.5 s, 1 s)
    finally:
        stop.set()
        following.wake()
        thread.join(timeout=5)


def test_a_rejected_nginx_config_is_not_installed(tmp_path: Path) -> None:
    """nginx -t failing (here: a binary that always fails) leaves the installed config and its version."""
    failing = tmp_path / "nginx"
    failing.write_text("#!/bin/sh\necho 'injected failure' >&2\nexit 1\n")
    failing.chmod(0o755)
    plane = NginxDataPlane(
        listen="127.0.0.1:1",
        blue="127.0.0.1:2",
        green="127.0.0.1:3",
        control="127.0.0.1:4",
        sticky_header=None,
        metrics=RouterMetrics(rollout="digits"),
        binary=str(failing),
    )
    try:
        with pytest.raises(RuntimeError, match="injected failure"):
            plane._write(50, 0)
        assert plane.version == 0
        assert not (plane.directory / "nginx.conf").exists()
    finally:
        plane.stop()


# -- what an HTTPRoute confirms ---------------------------------------------------------------------------


def parent(name: str = "public", generation: int = 2, **statuses: str) -> dict[str, Any]:
    conditions = {"Accepted": "True", "ResolvedRefs": "True", **statuses}
    return {
        "parentRef": {"name": name},
        "controllerName": "example.com/gateway",
        "conditions": [
            {"type": kind, "status": status, "reason": "Because", "observedGeneration": generation}
            for kind, status in conditions.items()
        ],
    }


def route(
    *, green: int = 25, revision: str | None = "4", parents: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    built = gateway_api.build_route(ref(), SPEC, green=green, revision=None)
    built["metadata"]["generation"] = 2
    if revision is not None:
        built["metadata"]["annotations"] = {constants.ANNOTATION_WEIGHTS_REVISION: revision}
    if parents is not None:
        built["status"] = {"parents": parents}
    return built


def test_a_route_without_status_confirms_what_was_written_and_says_so() -> None:
    applied = gateway_api.applied_of(route(), ref())
    assert applied.confirms(revision=4, green=25)
    assert applied.note == "the Gateway reports no route status"
    assert gateway_api.applied_of(route(parents=[]), ref()).confirms(revision=4, green=25)


def test_a_route_accepted_at_its_generation_confirms() -> None:
    applied = gateway_api.applied_of(route(parents=[parent(), parent("internal", generation=3)]), ref())
    assert applied.confirms(revision=4, green=25)


@pytest.mark.parametrize(
    ("parents", "words"),
    [
        ([parent(Accepted="False")], "parent public: Accepted=False (Because)"),
        ([parent(ResolvedRefs="False")], "ResolvedRefs=False"),
        ([parent(Accepted="Unknown")], "Accepted=Unknown"),
        ([parent(generation=1)], "Accepted is for generation 1, the route is at generation 2"),
        ([parent(), parent("internal", Accepted="False")], "parent internal: Accepted=False"),
        ([{"parentRef": {"name": "public", "namespace": "infra"}, "conditions": []}], "infra/public: no Accepted"),
    ],
)
def test_a_route_not_accepted_at_its_generation_confirms_nothing(parents: list[dict[str, Any]], words: str) -> None:
    applied = gateway_api.applied_of(route(parents=parents), ref())
    assert applied.revision is None and applied.green is None
    assert words in applied.note


def test_a_condition_without_observed_generation_is_not_current() -> None:
    accepted = parent()
    for condition in accepted["conditions"]:
        del condition["observedGeneration"]
    assert gateway_api.applied_of(route(parents=[accepted]), ref()).revision is None


@pytest.mark.parametrize(
    ("candidate", "words"),
    [
        (None, "does not exist"),
        (route(revision=None), "no modelrollout.dev/weights-revision annotation"),
        (route(revision="four"), "no modelrollout.dev/weights-revision annotation"),
        ({"metadata": {"annotations": {constants.ANNOTATION_WEIGHTS_REVISION: "4"}}, "spec": {}}, "no backendRefs"),
    ],
)
def test_a_route_without_our_weights_or_revision_confirms_nothing(candidate: dict[str, Any] | None, words: str) -> None:
    applied = gateway_api.applied_of(candidate, ref())
    assert applied.revision is None
    assert words in applied.note


# -- writing routes ---------------------------------------------------------------------------------------


def test_a_new_revision_with_the_same_weights_rewrites_only_the_annotation() -> None:
    created = route(green=25, revision="4")
    created["metadata"]["ownerReferences"] = [{"kind": "ModelRollout", "name": "digits", "uid": "uid-1"}]
    assert gateway_api.weights_patch(created, ref(), SPEC, green=25, revision=4) is None
    patch = gateway_api.weights_patch(created, ref(), SPEC, green=25, revision=5)
    assert patch is not None and "spec" not in patch
    assert patch["metadata"]["annotations"] == {constants.ANNOTATION_WEIGHTS_REVISION: "5"}
    moved = gateway_api.weights_patch(created, ref(), SPEC, green=50, revision=6)
    assert moved is not None
    assert gateway_api.green_weight_of({"spec": moved["spec"]}, ref()) == 50


FOREIGN: dict[str, Any] = {
    "metadata": {
        "name": "digits",
        "resourceVersion": "41",
        "labels": {"team": "ml", "app.kubernetes.io/managed-by": "Helm"},
        "annotations": {"note": "theirs"},
    },
    "spec": {
        "parentRefs": [{"name": "their-gateway"}],
        "hostnames": ["digits.example.com"],
        "rules": [{"backendRefs": [{"name": "digits-v0", "port": 80}]}],
    },
}


def test_adopting_a_route_saves_its_spec_and_keeps_its_managed_by_label() -> None:
    patch = gateway_api.weights_patch(FOREIGN, ref(), SPEC, green=0, revision=1)
    assert patch is not None
    saved = patch["metadata"]["annotations"][gateway_api.ANNOTATION_ADOPTED_SPEC]
    assert json.loads(saved) == FOREIGN["spec"]
    assert patch["metadata"]["labels"] == {constants.LABEL_ROLLOUT: "digits"}
    assert patch["spec"]["parentRefs"] == [{"name": "public"}]
    # once adopted, the saved spec is never overwritten by our own rules
    adopted = copy.deepcopy(FOREIGN)
    adopted["metadata"]["annotations"].update(patch["metadata"]["annotations"])
    adopted["metadata"]["labels"].update(patch["metadata"]["labels"])
    adopted["spec"].update(patch["spec"])
    later = gateway_api.weights_patch(adopted, ref(), SPEC, green=10, revision=2)
    assert later is not None and gateway_api.ANNOTATION_ADOPTED_SPEC not in later["metadata"]["annotations"]


def test_restoring_an_adopted_route_puts_back_its_spec_labels_and_annotations() -> None:
    patch = gateway_api.weights_patch(FOREIGN, ref(), SPEC, green=30, revision=3)
    assert patch is not None
    adopted = copy.deepcopy(FOREIGN)
    adopted["metadata"]["annotations"].update(patch["metadata"]["annotations"])
    adopted["metadata"]["labels"].update(patch["metadata"]["labels"])
    adopted["spec"].update(patch["spec"])
    operations = gateway_api.restore_patch(adopted, ref())
    assert operations[0] == {"op": "test", "path": "/metadata/resourceVersion", "value": "41"}
    restored = {op["path"]: op["value"] for op in operations[1:]}
    assert restored["/spec"] == FOREIGN["spec"]
    assert restored["/metadata/labels"] == FOREIGN["metadata"]["labels"]
    assert restored["/metadata/annotations"] == FOREIGN["metadata"]["annotations"]


def merged(live: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """A JSON merge patch applied (null removes)."""
    result = copy.deepcopy(live)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = value
    return result


def test_keep_stable_leaves_an_adopted_route_on_blue_with_its_old_spec_only_as_a_record() -> None:
    # its old spec routes to digits-v0, a model older than the stable one: restoring it would send users back
    patch = gateway_api.weights_patch(FOREIGN, ref(), SPEC, green=30, revision=3)
    assert patch is not None
    adopted = merged(FOREIGN, patch)
    kept = gateway_api.kept_patch(adopted, ref())
    assert kept is not None
    left = merged(adopted, kept)
    assert gateway_api.green_weight_of(left, ref()) == 0
    backends = [b["name"] for rule in left["spec"]["rules"] for b in rule.get("backendRefs", [])]
    assert backends == ["digits-blue", "digits-green"]
    assert gateway_api.NOT_FORWARDED_RULE in left["spec"]["rules"]  # fault injection stays unreachable
    annotations = left["metadata"]["annotations"]
    assert json.loads(annotations[gateway_api.ANNOTATION_PRE_ADOPTION_SPEC]) == FOREIGN["spec"]
    assert gateway_api.ANNOTATION_ADOPTED_SPEC not in annotations
    assert constants.ANNOTATION_WEIGHTS_REVISION not in annotations
    assert left["metadata"]["labels"][manifests.LABEL_ORPHANED] == "true"
    assert kept["metadata"]["resourceVersion"] == "41"
    assert gateway_api.kept_patch(left, ref()) is None  # done once


def test_keep_stable_releases_a_created_route_from_the_rollout_instead_of_letting_it_be_collected() -> None:
    created = route(green=40, revision="7")
    created["metadata"]["resourceVersion"] = "9"
    assert gateway_api.created_by(created, ref())
    kept = gateway_api.kept_patch(created, ref())
    assert kept is not None
    left = merged(created, kept)
    assert "ownerReferences" not in left["metadata"] and not gateway_api.created_by(left, ref())
    assert gateway_api.green_weight_of(left, ref()) == 0
    assert gateway_api.kept_patch(left, ref()) is None
