"""Routing providers at their edges: the HTTPRoute written whole, routes read with fields missing (made by
other tools, or half-written), what their notes tell a user, and the provider factory."""

from __future__ import annotations

import json
from typing import Any

import pytest

from modelrollout.api import constants
from modelrollout.api.spec import ModelRolloutSpec
from modelrollout.k8s import manifests
from modelrollout.routing import factory, gateway_api
from modelrollout.routing.base import NOT_REPORTED, AppliedWeights, RolloutRef
from modelrollout.routing.builtin import BuiltinRouter
from modelrollout.routing.gateway_api import GatewayApiRouter


def make_spec(**gateway: Any) -> ModelRolloutSpec:
    return ModelRolloutSpec.model_validate(
        {
            "blue": {"model": {"uri": "file:///b.onnx", "version": "v1"}},
            "green": {"model": {"uri": "file:///g.onnx", "version": "v2"}},
            "traffic": {"provider": "gateway-api", "gatewayApi": gateway},
        }
    )


SPEC = make_spec(parentRefs=[{"name": "public"}], port=9000)
REF = RolloutRef(namespace="ml", name="digits", uid="uid-1", body={})
OWNED_BY_US = {"apiVersion": constants.API_VERSION, "kind": constants.KIND, "name": "digits", "uid": "uid-1"}


def test_a_created_route_is_exactly_this() -> None:
    assert gateway_api.build_route(REF, SPEC, green=30, revision=5) == {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {
            "name": "digits",
            "namespace": "ml",
            "labels": {"app.kubernetes.io/managed-by": "modelrollout", constants.LABEL_ROLLOUT: "digits"},
            "ownerReferences": [
                {
                    "apiVersion": constants.API_VERSION,
                    "kind": constants.KIND,
                    "name": "digits",
                    "uid": "uid-1",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
            "annotations": {constants.ANNOTATION_WEIGHTS_REVISION: "5"},
        },
        "spec": {
            "parentRefs": [{"name": "public"}],
            "rules": [
                {
                    "backendRefs": [
                        {"name": "digits-blue", "port": 9000, "weight": 70},
                        {"name": "digits-green", "port": 9000, "weight": 30},
                    ]
                },
                # fault injection is never forwarded through the Gateway (a rule with no backend)
                {"matches": [{"path": {"type": "PathPrefix", "value": "/v2/faults"}}]},
            ],
        },
    }


def test_a_route_created_before_any_weights_claims_no_revision() -> None:
    route = gateway_api.build_route(REF, SPEC, green=0, revision=None)
    assert "annotations" not in route["metadata"]
    assert gateway_api.revision_of(route) is None
    assert gateway_api.applied_of(route, REF).revision is None


def test_the_route_takes_the_specs_name_or_the_rollouts() -> None:
    assert gateway_api.route_name(REF, make_spec(routeName="public-digits")) == "public-digits"
    assert gateway_api.route_name(REF, make_spec()) == "digits"


@pytest.mark.parametrize("green", [0, 1, 33, 99, 100])
def test_the_weights_written_read_back(green: int) -> None:
    route = gateway_api.build_route(REF, SPEC, green=green, revision=1)
    assert gateway_api.green_weight_of(route, REF) == green
    weights = [ref["weight"] for rule in route["spec"]["rules"] for ref in rule.get("backendRefs", [])]
    assert sum(weights) == 100


def test_weights_are_read_as_shares_and_a_missing_weight_counts_one() -> None:
    """Gateway API: a backendRef without a weight has weight 1; weights need not add up to 100."""

    def with_refs(*refs: dict[str, Any]) -> dict[str, Any]:
        return {"spec": {"rules": [{"backendRefs": list(refs)}]}}

    assert (
        gateway_api.green_weight_of(with_refs({"name": "digits-blue", "weight": 3}, {"name": "digits-green"}), REF)
        == 25
    )
    assert gateway_api.green_weight_of(with_refs({"name": "digits-blue"}, {"name": "digits-green"}), REF) == 50
    assert (
        gateway_api.green_weight_of(
            with_refs({"name": "digits-blue", "weight": 1}, {"name": "digits-green", "weight": 2}), REF
        )
        == 67
    )
    assert (
        gateway_api.green_weight_of(
            with_refs({"name": "digits-blue", "weight": 0}, {"name": "digits-green", "weight": 0}), REF
        )
        is None
    )
    assert gateway_api.green_weight_of(with_refs({"name": "digits-green", "weight": 5}), REF) is None  # no blue
    assert gateway_api.green_weight_of(with_refs({"name": "digits-blue", "weight": 5}), REF) is None  # no green


@pytest.mark.parametrize(
    "route",
    [
        {},
        {"metadata": {}},
        {"spec": {}},
        {"spec": {"rules": [{}]}},
        {"metadata": {"annotations": None, "ownerReferences": None, "labels": None}, "spec": {"rules": [{}]}},
    ],
)
def test_a_route_missing_its_fields_reads_as_not_ours(route: dict[str, Any]) -> None:
    assert gateway_api.green_weight_of(route, REF) is None
    assert gateway_api.revision_of(route) is None
    assert not gateway_api.created_by(route, REF)
    assert gateway_api.applied_of(route, REF).revision is None
    assert gateway_api.blue_only_rules(route, REF) == route.get("spec", {}).get("rules", [])  # nothing to move


def test_a_route_without_metadata_is_still_patched_and_kept_on_blue() -> None:
    bare: dict[str, Any] = {"spec": {"rules": gateway_api.weighted_rules(REF, SPEC, green=20)}}
    patch = gateway_api.weights_patch(bare, REF, SPEC, green=40, revision=2)
    assert patch is not None and gateway_api.green_weight_of({"spec": patch["spec"]}, REF) == 40
    kept = gateway_api.kept_patch(bare, REF)
    assert kept is not None and kept["spec"] == {"rules": gateway_api.blue_only_rules(bare, REF)}
    assert gateway_api.green_weight_of({"spec": kept["spec"]}, REF) == 0


def test_only_an_owner_reference_of_this_kind_and_name_makes_a_route_ours() -> None:
    def owned(*owners: dict[str, Any]) -> dict[str, Any]:
        return {"metadata": {"ownerReferences": list(owners)}}

    assert gateway_api.created_by(owned(OWNED_BY_US), REF)
    assert not gateway_api.created_by(owned({**OWNED_BY_US, "kind": "Deployment"}), REF)
    assert not gateway_api.created_by(owned({**OWNED_BY_US, "name": "other"}), REF)
    assert gateway_api.created_by(owned({**OWNED_BY_US, "name": "other"}, OWNED_BY_US), REF)


def accepted(route: dict[str, Any], *parents: dict[str, Any]) -> dict[str, Any]:
    return {**route, "metadata": {**route["metadata"], "generation": 3}, "status": {"parents": list(parents)}}


def parent(name: str | None = "public", **conditions: dict[str, Any]) -> dict[str, Any]:
    ref = {} if name is None else {"name": name}
    defaults = {
        kind: {"type": kind, "status": "True", "observedGeneration": 3} for kind in ("Accepted", "ResolvedRefs")
    }
    return {"parentRef": ref, "conditions": list({**defaults, **conditions}.values())}


def test_the_notes_say_who_accepted_the_route_or_what_is_missing() -> None:
    route = gateway_api.build_route(REF, SPEC, green=30, revision=5)
    both = gateway_api.applied_of(accepted(route, parent("public"), parent("internal")), REF)
    assert both == AppliedWeights(revision=5, green=30, note="accepted by 2 Gateway parent(s)")
    refused = gateway_api.applied_of(
        accepted(
            route,
            parent("public", Accepted={"type": "Accepted", "status": "False", "message": "no listener"}),
            parent(None, ResolvedRefs={"type": "ResolvedRefs", "status": "False"}),
        ),
        REF,
    )
    assert refused == AppliedWeights(
        revision=None,
        green=None,
        note="the Gateway has not accepted the route: parent public: Accepted=False (no listener); "
        "parent ?: ResolvedRefs=False",
    )
    assert gateway_api.applied_of(None, REF).note == "the HTTPRoute does not exist"


def test_a_refusal_with_reason_and_message_shows_both() -> None:
    route = gateway_api.build_route(REF, SPEC, green=30, revision=5)
    condition = {"type": "Accepted", "status": "False", "reason": "NotAllowedByListeners", "message": "wrong namespace"}
    applied = gateway_api.applied_of(accepted(route, parent("public", Accepted=condition)), REF)
    assert applied.note.endswith("parent public: Accepted=False (NotAllowedByListeners: wrong namespace)")


def test_adoption_saves_the_old_spec_canonically() -> None:
    """The saved spec is compared and restored later: the same route always saves the same text."""
    foreign = {"metadata": {"name": "digits"}, "spec": {"rules": [], "hostnames": ["a"], "parentRefs": []}}
    patch = gateway_api.weights_patch(foreign, REF, SPEC, green=0, revision=1)
    assert patch is not None
    saved = patch["metadata"]["annotations"][gateway_api.ANNOTATION_ADOPTED_SPEC]
    assert saved == json.dumps(foreign["spec"], sort_keys=True)
    assert saved.index("hostnames") < saved.index("parentRefs") < saved.index("rules")


def test_labels_are_written_when_missing_and_a_foreign_managed_by_label_is_kept() -> None:
    route = gateway_api.build_route(REF, SPEC, green=10, revision=3)
    route["metadata"]["labels"] = {}
    patch = gateway_api.weights_patch(route, REF, SPEC, green=10, revision=3)
    assert patch is not None and "spec" not in patch
    assert patch["metadata"]["labels"] == gateway_api.route_labels(REF)
    route["metadata"]["labels"] = {"app.kubernetes.io/managed-by": "Helm"}
    patch = gateway_api.weights_patch(route, REF, SPEC, green=10, revision=3)
    assert patch is not None and patch["metadata"]["labels"] == {constants.LABEL_ROLLOUT: "digits"}


def test_restoring_keeps_a_foreign_managed_by_label_and_uses_json_patch_adds() -> None:
    adopted = {
        "metadata": {
            "resourceVersion": "9",
            "labels": {"app.kubernetes.io/managed-by": "Helm", constants.LABEL_ROLLOUT: "digits", "team": "ml"},
            "annotations": {gateway_api.ANNOTATION_ADOPTED_SPEC: json.dumps({"rules": []})},
        }
    }
    assert gateway_api.restore_patch(adopted, REF) == [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "9"},
        {"op": "add", "path": "/metadata/labels", "value": {"app.kubernetes.io/managed-by": "Helm", "team": "ml"}},
        {"op": "add", "path": "/metadata/annotations", "value": {}},
        {"op": "add", "path": "/spec", "value": {"rules": []}},
    ]


def kept_route(**metadata: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"labels": {manifests.LABEL_ORPHANED: "true"}, "resourceVersion": "4"}
    route = gateway_api.build_route(REF, SPEC, green=0)
    return {**route, "metadata": {**base, **metadata}}


def test_keeping_a_route_is_done_only_once_every_part_of_it_is_done() -> None:
    assert gateway_api.kept_patch(kept_route(), REF) is None
    # each of these alone still needs a patch
    assert gateway_api.kept_patch(kept_route(labels={}), REF) is not None
    assert gateway_api.kept_patch(kept_route(ownerReferences=[OWNED_BY_US]), REF) is not None
    revision = {constants.ANNOTATION_WEIGHTS_REVISION: "3"}
    assert gateway_api.kept_patch(kept_route(annotations=revision), REF) is not None
    adopted = {gateway_api.ANNOTATION_ADOPTED_SPEC: "{}"}
    assert gateway_api.kept_patch(kept_route(annotations=adopted), REF) is not None
    on_green = gateway_api.build_route(REF, SPEC, green=50)
    on_green["metadata"] = kept_route()["metadata"]
    assert gateway_api.kept_patch(on_green, REF) is not None
    other_owner = {**OWNED_BY_US, "uid": "someone-else"}
    assert gateway_api.kept_patch(kept_route(ownerReferences=[other_owner]), REF) is None


def test_keeping_drops_only_this_rollouts_owner_reference() -> None:
    other_owner = {"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "u9"}
    kept = gateway_api.kept_patch(kept_route(ownerReferences=[OWNED_BY_US, other_owner]), REF)
    assert kept is not None and kept["metadata"]["ownerReferences"] == [other_owner]


def test_builtin_router_reads_a_missing_or_empty_report_as_no_report() -> None:
    assert BuiltinRouter().applied(REF, SPEC) == NOT_REPORTED
    with_empty = RolloutRef(namespace="ml", name="digits", uid="u", body={}, router_report={})
    assert BuiltinRouter().applied(with_empty, SPEC) == NOT_REPORTED


def test_the_factory_builds_each_provider_and_names_the_valid_ones() -> None:
    assert isinstance(factory.router_for("builtin"), BuiltinRouter)
    assert isinstance(factory.router_for("gateway-api"), GatewayApiRouter)
    with pytest.raises(
        ValueError, match=r"spec.traffic.provider: unknown provider 'istio'; valid: \['builtin', 'gateway-api'\]"
    ):
        factory.router_for("istio")


def test_an_unreadable_router_report_says_what_it_was() -> None:
    from modelrollout.routing.base import parse_report

    assert parse_report("3/x") == AppliedWeights(revision=None, green=None, note="unreadable router report '3/x'")


def test_restoring_drops_only_our_own_labels() -> None:
    adopted = {
        "metadata": {
            "resourceVersion": "9",
            "labels": {"app.kubernetes.io/managed-by": "modelrollout", "team": "modelrollout"},
            "annotations": {gateway_api.ANNOTATION_ADOPTED_SPEC: "{}"},
        }
    }
    [_, labels, _, _] = gateway_api.restore_patch(adopted, REF)
    assert labels == {"op": "add", "path": "/metadata/labels", "value": {"team": "modelrollout"}}
