"""The operator's cache of owned Deployments and pods (k8s.owned): what it keeps of an object decides exactly
what the object itself decides, and a reconcile's copy of it does not change under it."""

from __future__ import annotations

import copy
import itertools
from typing import Any

import pytest

from modelrollout.api import constants
from modelrollout.k8s import owned, resources
from modelrollout.routing.base import RolloutRef
from tests.unit.test_manifests import deployment, pod

ROLLOUT = RolloutRef(namespace="ml", name="digits", uid="u", body={})


def as_served(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` with the bulk the API server adds (what the cache must not keep, and must not need)."""
    full = copy.deepcopy(obj)
    full["metadata"].update(
        {"namespace": "ml", "uid": "x", "resourceVersion": "7", "managedFields": [{"manager": "kubectl"}] * 20}
    )
    full["metadata"].setdefault("name", "digits-green-abc")
    full.setdefault("spec", {}).setdefault("template", {})["spec"] = {
        "containers": [{"name": "server", "args": ["-v"]}]
    }
    for status in full["status"].get("containerStatuses", []):
        status.update({"image": "model-server:dev", "state": {"running": {"startedAt": "2026-11-24T00:00:00Z"}}})
    for condition in full["status"].get("conditions", []):
        condition.update({"lastTransitionTime": "2026-11-24T00:00:00Z", "reason": "PodReady"})
    return full


def observed_earlier() -> dict[str, Any]:
    stale = deployment()
    stale["status"]["observedGeneration"] = 2  # the controller has not seen the latest spec yet
    return stale


DEPLOYMENTS = [
    None,
    deployment(),
    observed_earlier(),
    deployment(version="v1"),
    deployment(revision="r1"),
    deployment(available=1),
    deployment(updated=1),
    deployment(replicas=0, available=0, updated=0),
]
PODS = [
    pod(),
    pod(ready=False),
    pod("v1"),
    pod(revision="r1"),
    pod(terminating=True),
    pod("v1", terminating=True),
    pod("v1", ready=False, phase="Failed"),
    pod(restarts=(2, 1), init_restarts=(1,)),
    pod(ready=False, init_restarts=(3,), init_failure="model not fetched: https://models.example/m.onnx: HTTP 404"),
]


@pytest.mark.parametrize("found", DEPLOYMENTS)
def test_what_the_cache_keeps_decides_as_the_object_does(found: dict[str, Any] | None) -> None:
    served = None if found is None else as_served(found)
    kept = None if served is None else owned.trimmed_deployment(served)
    for pods, (version, revision) in itertools.product(itertools.combinations(PODS, 2), (("v2", "r2"), ("v1", "r1"))):
        served_pods = [as_served(each) for each in pods]
        kept_pods = [owned.trimmed_pod(each) for each in served_pods]
        assert resources.rolled_out(kept, kept_pods, version=version, revision=revision) == resources.rolled_out(
            served, served_pods, version=version, revision=revision
        )
        assert resources.runs_only(kept, kept_pods, revision=revision) == resources.runs_only(
            served, served_pods, revision=revision
        )
        assert resources.health_of(kept_pods, revision=revision) == resources.health_of(served_pods, revision=revision)
        assert resources.start_failure(kept_pods, revision=revision) == resources.start_failure(
            served_pods, revision=revision
        )


def test_the_cases_above_can_tell_the_difference() -> None:
    """The comparison above is not vacuous: the same objects decide both ways."""
    assert resources.rolled_out(deployment(), [pod(), pod()], version="v2", revision="r2")
    assert not resources.rolled_out(deployment(), [pod(), pod(terminating=True)], version="v2", revision="r2")
    assert resources.health_of([pod(restarts=(2, 1), init_restarts=(1,))], revision="r2").restarts == 4
    assert resources.start_failure([pod(ready=False, init_restarts=(1,), init_failure="no")], revision="r2")


def test_the_cache_keeps_no_bulk() -> None:
    kept = owned.trimmed_pod(as_served(pod()))
    assert "managedFields" not in kept["metadata"]
    assert kept["status"]["containerStatuses"] == [{"name": None, "restartCount": 0}]
    assert kept["status"]["conditions"] == [{"type": "Ready", "status": "True"}]
    assert "spec" not in owned.trimmed_deployment(as_served(deployment()))["spec"]["template"]


def test_pods_are_indexed_by_rollout_and_colour() -> None:
    labelled = {"metadata": {"labels": {constants.LABEL_ROLLOUT: "digits", constants.LABEL_COLOUR: "green"}}}
    assert owned.pod_key("ml", labelled) == ("ml", "digits", "green")
    assert owned.pod_key("ml", {"metadata": {"labels": {constants.LABEL_ROLLOUT: "digits"}}}) is None
    assert owned.pod_key("ml", {"metadata": {}}) is None


def test_a_cached_copy_answers_for_its_rollout_from_the_indexes_and_does_not_change_under_a_reconcile() -> None:
    green_deployment = owned.trimmed_deployment(as_served(deployment()))
    deployments: dict[owned.DeploymentKey, list[dict[str, Any]]] = {
        ("ml", "digits-green"): [green_deployment],
        ("other", "digits-blue"): [owned.trimmed_deployment(as_served(deployment(version="v1")))],
    }
    pods: dict[owned.PodKey, list[dict[str, Any]]] = {
        ("ml", "digits", "green"): [owned.trimmed_pod(as_served(pod())), owned.trimmed_pod(as_served(pod()))],
        ("ml", "digits", "blue"): [owned.trimmed_pod(as_served(pod("v1", revision="r1")))],
    }
    view = owned.Cached("ml", "digits", deployments=deployments, pods=pods)
    assert view.deployment("ml", "digits", "green") == green_deployment
    assert view.deployment("ml", "digits", "blue") is None  # another namespace's blue is not this one's
    assert resources.available(ROLLOUT, "green", version="v2", revision="r2", owned=view)
    assert not resources.available(ROLLOUT, "blue", version="v1", revision="r1", owned=view)
    assert resources.pod_health(ROLLOUT, "green", revision="r2", owned=view).ready == 2
    assert resources.pod_health(ROLLOUT, "blue", revision="r1", owned=view).pods == 1
    # the watch changes the index while a reconcile reads its copy: the copy holds
    pods["ml", "digits", "green"].append(owned.trimmed_pod(as_served(pod(terminating=True))))
    del deployments["ml", "digits-green"]
    assert resources.available(ROLLOUT, "green", version="v2", revision="r2", owned=view)
    assert not resources.available(
        ROLLOUT,
        "green",
        version="v2",
        revision="r2",
        owned=owned.Cached("ml", "digits", deployments=deployments, pods=pods),
    )
    with pytest.raises(KeyError):
        view.pods("ml", "other-rollout", "green")


# -- the indexes as kopf fills them, and the cache checked against the API server ---------------------------


def indexed(results: list[dict[Any, Any]]) -> dict[Any, list[Any]]:
    """What kopf's index holds after these index-function results (one object each)."""
    index: dict[Any, list[Any]] = {}
    for result in results:
        for key, value in result.items():
            index.setdefault(key, []).append(value)
    return index


def labelled(name: str, colour: str, obj: dict[str, Any]) -> dict[str, Any]:
    served = as_served(obj)
    served["metadata"].update(
        {
            "name": name,
            "labels": {
                **served["metadata"].get("labels", {}),
                constants.LABEL_ROLLOUT: "digits",
                constants.LABEL_COLOUR: colour,
            },
        }
    )
    return served


def test_what_the_handlers_index_is_what_a_reconcile_finds() -> None:
    from modelrollout import handlers

    deployments = indexed(
        [
            handlers.owned_deployments(
                namespace="ml", name="digits-green", body=labelled("digits-green", "green", deployment())
            ),
            handlers.owned_deployments(
                namespace="ml",
                name="digits-blue",
                body=labelled("digits-blue", "blue", deployment(version="v1", revision="r1")),
            ),
        ]
    )
    pods = indexed(
        [
            handlers.owned_pods(namespace="ml", body=labelled("g-1", "green", pod())),
            handlers.owned_pods(namespace="ml", body=labelled("g-2", "green", pod())),
            handlers.owned_pods(namespace="ml", body=labelled("b-1", "blue", pod("v1", revision="r1"))),
        ]
    )
    assert handlers.owned_pods(namespace="ml", body=as_served(pod())) == {}  # no colour: indexed nowhere
    view = owned.Cached("ml", "digits", deployments=deployments, pods=pods)
    assert resources.available(ROLLOUT, "green", version="v2", revision="r2", owned=view)
    assert resources.available(ROLLOUT, "blue", version="v1", revision="r1", owned=view)
    assert [p["metadata"]["name"] for p in view.pods("ml", "digits", "green")] == ["g-1", "g-2"]


def cached_with(pod_names: dict[str, list[str]], uids: dict[str, str], *, twice: str = "") -> owned.Cached:
    deployments: dict[owned.DeploymentKey, list[dict[str, Any]]] = {}
    for colour, uid in uids.items():
        made = deployment()
        made["metadata"].update({"name": f"digits-{colour}", "uid": uid})
        deployments[("ml", f"digits-{colour}")] = [owned.trimmed_deployment(made)]
        if colour == twice:
            again = copy.deepcopy(made)
            again["metadata"]["uid"] = uid + "-new"
            deployments[("ml", f"digits-{colour}")].append(owned.trimmed_deployment(again))
    pods = {
        ("ml", "digits", colour): [owned.trimmed_pod({**pod(), "metadata": {"name": name}}) for name in names]
        for colour, names in pod_names.items()
    }
    return owned.Cached("ml", "digits", deployments=deployments, pods=pods)


LIVE_NOW = cached_with({"blue": ["b-1"], "green": ["g-2"]}, {"blue": "ub", "green": "ug"})


@pytest.mark.parametrize(
    ("cache", "found"),
    [
        (cached_with({"blue": ["b-1"], "green": ["g-2"]}, {"blue": "ub", "green": "ug"}), []),
        (cached_with({"blue": ["b-1"], "green": []}, {"blue": "ub", "green": "ug"}), []),  # not seen yet: no ghost
        (cached_with({"blue": ["b-1"], "green": ["g-1", "g-2"]}, {"blue": "ub", "green": "ug"}), ["Pod g-1"]),
        (
            cached_with({"blue": ["b-1"], "green": ["g-2"]}, {"blue": "ub", "green": "ug-old"}),
            ["Deployment digits-green"],
        ),
    ],
)
def test_ghosts_are_what_the_cache_holds_and_the_api_server_does_not(cache: owned.Cached, found: list[str]) -> None:
    assert owned.ghosts(cache, LIVE_NOW) == found


def test_a_rollouts_cache_is_checked_now_and_then_and_read_live_while_it_holds_ghosts() -> None:
    clock = [0.0]
    resync = owned.Resync(every=60.0, clock=lambda: clock[0])
    reads: list[float] = []

    def read() -> owned.Cached:
        reads.append(clock[0])
        return LIVE_NOW

    right = cached_with({"blue": ["b-1"], "green": ["g-2"]}, {"blue": "ub", "green": "ug"})
    haunted = cached_with({"blue": ["b-1"], "green": ["g-1", "g-2"]}, {"blue": "ub", "green": "ug"})
    assert resync.view(right, read) is right and reads == [0.0]  # checked at its first tick
    clock[0] = 59.0
    assert not resync.due(right) and resync.view(right, read) is right and reads == [0.0]
    clock[0] = 60.0
    assert resync.view(haunted, read) is LIVE_NOW  # the check finds a ghost: the API server's answer
    clock[0] = 61.0
    assert resync.due(haunted) and resync.view(haunted, read) is LIVE_NOW  # and on every tick after it
    assert reads == [0.0, 60.0, 61.0]
    clock[0] = 62.0
    assert resync.view(right, read) is right  # the cache right again: back to it
    clock[0] = 63.0
    assert not resync.due(right)
    doubled = cached_with({"blue": ["b-1"], "green": ["g-2"]}, {"blue": "ub", "green": "ug"}, twice="green")
    assert doubled.duplicated and resync.due(doubled) and resync.view(doubled, read) is LIVE_NOW
    resync.forget("ml", "digits")
    assert resync.due(right)


def test_the_check_is_made_when_the_copy_is_first_read_and_once() -> None:
    resync = owned.Resync(every=60.0, clock=lambda: 0.0)
    reads: list[str] = []

    def read() -> owned.Cached:
        reads.append("read")
        return LIVE_NOW

    haunted = cached_with({"blue": ["b-1"], "green": ["g-1", "g-2"]}, {"blue": "ub", "green": "ug"})
    checked = owned.Checked(haunted, resync, read)
    assert reads == []  # made, not read: a reconcile that rests asks the API server nothing
    assert [p["metadata"]["name"] for p in checked.pods("ml", "digits", "green")] == ["g-2"]  # the live answer
    assert checked.deployment("ml", "digits", "blue") is not None
    assert reads == ["read"]


def test_what_the_watches_show_is_kept_by_rollout_and_name_and_a_relist_of_known_objects_is_told() -> None:
    seen = owned.Seen()
    blue = deployment()
    blue["metadata"].update({"name": "digits-blue", "uid": "ub", "generation": 4, "resourceVersion": "70"})
    blue["metadata"]["labels"] = {constants.LABEL_ROLLOUT: "digits"}
    service = {
        "kind": "Service",
        "metadata": {
            "name": "digits-router",
            "uid": "us",
            "resourceVersion": "71",
            "labels": blue["metadata"]["labels"],
        },
    }
    service["metadata"]["labels"] = blue["metadata"]["labels"]
    assert not seen.saw(None, "ml", "Deployment", blue)  # the first listing
    assert not seen.saw("ADDED", "ml", "Service", service)
    assert seen.of("ml", "digits") == {
        ("Deployment", "digits-blue"): ("ub", 4),
        ("Service", "digits-router"): ("us", 71),
    }
    rolled = copy.deepcopy(blue)
    rolled["metadata"]["resourceVersion"] = "80"  # its status changed: not its version
    seen.saw("MODIFIED", "ml", "Deployment", rolled)
    assert seen.of("ml", "digits")[("Deployment", "digits-blue")] == ("ub", 4)
    assert seen.saw(None, "ml", "Deployment", rolled)  # listed again: a relist
    seen.saw("DELETED", "ml", "Service", service)
    assert ("Service", "digits-router") not in seen.of("ml", "digits")
    remade = copy.deepcopy(blue)
    remade["metadata"]["uid"] = "ub2"
    seen.saw("ADDED", "ml", "Deployment", remade)  # made again under its name: replaces the entry, ghost or not
    seen.saw("DELETED", "ml", "Deployment", blue)  # a late DELETED of the old one leaves the new one
    assert seen.of("ml", "digits") == {("Deployment", "digits-blue"): ("ub2", 4)}
    seen.forget("ml", "digits")
    assert seen.of("ml", "digits") == {}
    seen.saw("MODIFIED", "ml", "Deployment", remade)  # released by keepStable after the rollout went: not kept
    assert seen.of("ml", "digits") == {}
    # what an apply returned is known at once (a rollout made again under the name), with or without an event
    seen.applied("ml", "digits", {("Deployment", "digits-blue"): ("ub3", 1)})
    assert seen.of("ml", "digits") == {("Deployment", "digits-blue"): ("ub3", 1)}


def test_drift_is_deleted_made_again_or_changed_by_someone_else() -> None:
    applied = {("Deployment", "d-blue"): ("u1", 3), ("ConfigMap", "d-router-report"): ("u2", 0)}
    assert owned.drifted(applied, applied, settled=True) == []
    assert owned.drifted(applied, {**applied, ("Deployment", "d-blue"): ("u1", 2)}, settled=True) == []
    assert owned.drifted(applied, {**applied, ("Deployment", "d-blue"): ("u1", 4)}, settled=True) == [
        "Deployment/d-blue"
    ]
    assert owned.drifted(applied, {**applied, ("Deployment", "d-blue"): ("u9", 1)}, settled=True) == [
        "Deployment/d-blue"
    ]
    only_report = {("ConfigMap", "d-router-report"): ("u2", 0)}
    assert owned.drifted(applied, only_report, settled=False) == []
    assert owned.drifted(applied, only_report, settled=True) == ["Deployment/d-blue"]


def test_a_watch_listing_again_makes_every_rollouts_check_due() -> None:
    clock = [0.0]
    resync = owned.Resync(every=900.0, clock=lambda: clock[0])
    right = cached_with({"blue": ["b-1"], "green": ["g-2"]}, {"blue": "ub", "green": "ug"})
    resync.view(right, lambda: LIVE_NOW)
    clock[0] = 10.0
    assert not resync.due(right)
    resync.relisted()  # where ghosts may appear
    assert resync.due(right)
    clock[0] = 11.0
    resync.view(right, lambda: LIVE_NOW)
    clock[0] = 12.0
    assert not resync.due(right)
