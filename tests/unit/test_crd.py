"""The CRD's schema and the typed spec describe the same fields, so what the API server accepts parses."""

from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, TypeAdapter

from modelrollout.api import constants, crd, spec
from modelrollout.api.crd import field_docstrings, normalised
from modelrollout.api.spec import ModelRolloutSpec

CRD_TEXT = (Path(__file__).resolve().parents[2] / "crds" / "modelrollout.yaml").read_text()
CRD = yaml.safe_load(CRD_TEXT)
VERSION = CRD["spec"]["versions"][0]
SPEC_SCHEMA = VERSION["schema"]["openAPIV3Schema"]["properties"]["spec"]


def _pairs(model: type[BaseModel], schema: dict[str, Any], path: str) -> list[tuple[str, type[BaseModel], dict]]:
    pairs = [(path, model, schema)]
    for name, field in model.model_fields.items():
        alias = field.alias or name
        sub = crd.model_of(field.annotation)
        if sub is None:
            continue
        child = schema["properties"][alias]
        pairs += _pairs(sub, child.get("items", child), f"{path}.{alias}")
    return pairs


@pytest.mark.parametrize(
    ("path", "model", "schema"),
    _pairs(ModelRolloutSpec, SPEC_SCHEMA, "spec"),
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_schema_and_model_have_the_same_fields(path: str, model: type[BaseModel], schema: dict[str, Any]) -> None:
    fields = {f.alias or n for n, f in model.model_fields.items()}
    assert fields == set(schema["properties"]), path


def test_names_match_the_constants() -> None:
    assert CRD["spec"]["group"] == constants.GROUP
    assert CRD["spec"]["names"]["kind"] == constants.KIND
    assert CRD["spec"]["names"]["plural"] == constants.PLURAL
    assert constants.SHORT_NAME in CRD["spec"]["names"]["shortNames"]
    assert VERSION["name"] == constants.VERSION
    assert "status" in VERSION["subresources"]


def test_printer_columns() -> None:
    names = [c["name"] for c in VERSION["additionalPrinterColumns"]]
    assert names == ["Phase", "Step", "Green weight", "Blue version", "Green version", "Age", "Message"]


def test_sample_parses() -> None:
    sample = yaml.safe_load((Path(__file__).resolve().parents[2] / "crds" / "samples" / "digits.yaml").read_text())
    spec = ModelRolloutSpec.model_validate(sample["spec"])
    assert spec.green.model.version == "v2"


def test_the_chart_ships_the_same_crd() -> None:
    repo = Path(__file__).resolve().parents[2]
    chart_crd = repo / "charts" / "modelrollout" / "crds" / "modelrollout.yaml"
    assert chart_crd.read_text() == (repo / "crds" / "modelrollout.yaml").read_text()


def _walk(schema: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    """Every node of ``schema`` that ``kubectl explain`` shows: the node, its properties and array items."""
    nodes = [(path, schema)]
    for name, child in schema.get("properties", {}).items():
        nodes += _walk(child, f"{path}.{name}")
    if "items" in schema:
        nodes += _walk(schema["items"], f"{path}[]")
    return nodes


@pytest.mark.parametrize(("path", "schema"), [pytest.param(*node, id=node[0]) for node in _walk(SPEC_SCHEMA, "spec")])
def test_every_spec_node_has_a_description(path: str, schema: dict[str, Any]) -> None:
    assert schema.get("description", "").strip(), f"{path} has no description for kubectl explain"


def _fields() -> list[tuple[str, type[BaseModel], str]]:
    return [
        (f"{path}.{field.alias or name}", model, name)
        for path, model, _ in _pairs(ModelRolloutSpec, SPEC_SCHEMA, "spec")
        for name, field in model.model_fields.items()
    ]


@pytest.mark.parametrize(("path", "model", "name"), [pytest.param(*field, id=field[0]) for field in _fields()])
def test_every_field_has_a_docstring(path: str, model: type[BaseModel], name: str) -> None:
    """The docstring is what ``kubectl explain`` shows for the field."""
    assert field_docstrings(model).get(name, "").strip(), f"{path}: give {model.__name__}.{name} a docstring"


def _documented_fields() -> list[tuple[str, str, str]]:
    found = []
    for path, model, schema in _pairs(ModelRolloutSpec, SPEC_SCHEMA, "spec"):
        docs = field_docstrings(model)
        for name, field in model.model_fields.items():
            if name in docs:
                alias = field.alias or name
                found.append((f"{path}.{alias}", docs[name], schema["properties"][alias].get("description", "")))
    return found


@pytest.mark.parametrize(
    ("path", "docstring", "description"), [pytest.param(*field, id=field[0]) for field in _documented_fields()]
)
def test_descriptions_start_with_the_field_docstrings(path: str, docstring: str, description: str) -> None:
    """Read apart from the generator: each field's own docstring opens its description (the default follows)."""
    assert normalised(description).startswith(normalised(docstring)), (
        f"{path}: the CRD description\n  {normalised(description)}\ndoes not start with the docstring\n"
        f"  {normalised(docstring)}"
    )


def test_docstring_normalisation() -> None:
    assert normalised("before ``on_deadline``;\n    a  step") == "before onDeadline; a step"
    assert normalised("``keepStable`` and ``modelrollout.dev/version``") == "keepStable and modelrollout.dev/version"
    assert normalised("uses ``analysis.failure_limit``") == "uses analysis.failureLimit"


def _schema_at(path: crd.SchemaPath) -> dict[str, Any]:
    node = SPEC_SCHEMA
    for part in path:
        node = node["items"] if part == crd.ITEMS else node["properties"][part]
    return node


@pytest.mark.parametrize(
    ("path", "description"), [pytest.param(*item, id=crd.dotted(item[0])) for item in crd.descriptions().items()]
)
def test_descriptions_are_the_typed_specs(path: crd.SchemaPath, description: str) -> None:
    """Docstring and default, exactly: ``python -m modelrollout.api.crd`` writes them, so they cannot drift."""
    assert _schema_at(path).get("description") == description, (
        f"{crd.dotted(path)}: the CRD's description is not the typed spec's; run python -m modelrollout.api.crd"
    )


def test_array_items_and_the_spec_are_described_by_their_models() -> None:
    wanted = crd.descriptions()
    assert wanted[()].startswith("The desired rollout:")
    assert wanted[("traffic", "steps", "[]")].startswith("One step of the canary")
    assert wanted[("analysis", "checks", "custom", "[]")].startswith("One PromQL check")


def test_descriptions_give_the_models_defaults() -> None:
    """What the operator uses when a field is left out, as YAML spells it; nothing for required fields."""
    wanted = crd.descriptions()
    assert wanted[("analysis", "interval")].endswith(" Defaults to 5s.")
    assert wanted[("analysis", "progressDeadline")].endswith(" Defaults to 10m.")
    assert wanted[("analysis", "checks", "latency", "p95MaxSeconds")].endswith(" Defaults to 0.15.")
    assert wanted[("traffic", "steps")].endswith(
        " Defaults to [{weight: 10, pause: 30s}, {weight: 25, pause: 30s}, {weight: 50, pause: 1m}, "
        "{weight: 100, pause: 0s}]."
    )
    for unset in (("green", "model", "uri"), ("traffic", "stickyHeader"), ("server", "settings"), ("analysis",)):
        assert "Defaults to" not in wanted[unset], crd.dotted(unset)


def test_the_crd_is_what_the_generator_writes() -> None:
    assert crd.stale(CRD_TEXT) == []
    assert crd.rewrite(CRD_TEXT) == CRD_TEXT
    assert crd.main(["--check"]) == 0


def _without_descriptions(node: Any) -> Any:
    if isinstance(node, dict):
        return {key: _without_descriptions(value) for key, value in node.items() if key != "description"}
    if isinstance(node, list):
        return [_without_descriptions(item) for item in node]
    return node


def _comments(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.lstrip().startswith("#")]


def test_the_generator_changes_descriptions_and_nothing_else() -> None:
    long = "A description: long enough to fold, with a # that is no comment and 'quotes'. " * 3
    wanted = {
        **crd.descriptions(),
        ("analysis", "interval"): "Short: quoted, as a colon and a space would end a plain scalar",
        ("traffic", "steps", "[]", "pause"): long.strip(),
        ("deletionPolicy",): "true",
    }
    written = crd.rewrite(CRD_TEXT, wanted)
    loaded = yaml.safe_load(written)
    schema = loaded["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert schema["properties"]["analysis"]["properties"]["interval"]["description"] == wanted[("analysis", "interval")]
    assert schema["properties"]["traffic"]["properties"]["steps"]["items"]["properties"]["pause"]["description"] == (
        long.strip()
    )
    assert schema["properties"]["deletionPolicy"]["description"] == "true"
    assert _without_descriptions(loaded) == _without_descriptions(CRD)
    assert _comments(written) == _comments(CRD_TEXT)
    assert "&colour" in written and "*check-failure-limit" in written, "anchors are kept"
    assert all(len(line) <= crd.LINE_WIDTH for line in set(written.splitlines()) - set(CRD_TEXT.splitlines()))
    assert crd.rewrite(written) == crd.rewrite(crd.rewrite(written)), "a second run changes nothing"
    assert yaml.safe_load(crd.rewrite(written)) == CRD


def test_a_missing_description_is_written_in() -> None:
    line = "                              description: Name of the Secret.\n"
    assert CRD_TEXT.count(line) == 1
    written = crd.rewrite(CRD_TEXT.replace(line, ""))
    assert yaml.safe_load(written) == CRD


def test_a_schema_node_shared_by_an_anchor_needs_one_description() -> None:
    """blue and green share their model's schema (``&colour``): their fields cannot be described apart."""
    wanted = {**crd.descriptions(), ("green", "model", "uri"): "Something else."}
    with pytest.raises(ValueError, match=r"spec\.blue\.model\.uri and spec\.green\.model\.uri share one"):
        crd.stale(CRD_TEXT, wanted)


def test_an_undocumented_field_is_refused() -> None:
    with pytest.raises(ValueError, match=r"spec\.rollback\.green: no description; give its field"):
        crd.rewrite(CRD_TEXT, {**crd.descriptions(), ("rollback", "green"): ""})


def test_a_field_missing_from_the_crd_is_refused() -> None:
    with pytest.raises(ValueError, match=r"spec\.rollback\.keep: not in the CRD"):
        crd.rewrite(CRD_TEXT, {**crd.descriptions(), ("rollback", "keep"): "New."})


def _defaults() -> list[tuple[str, Any, Any]]:
    found = []
    for path, model, schema in _pairs(ModelRolloutSpec, SPEC_SCHEMA, "spec"):
        for name, field in model.model_fields.items():
            alias = field.alias or name
            if "default" in schema["properties"][alias]:
                annotation = (
                    typing.Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
                )
                typed = TypeAdapter(annotation).dump_python(field.get_default(call_default_factory=True), mode="json")
                found.append((f"{path}.{alias}", schema["properties"][alias]["default"], typed))
    return found


def test_the_crd_sets_defaults_for_the_newer_fields() -> None:
    assert {path for path, _, _ in _defaults()} >= {
        "spec.deletionPolicy",
        "spec.traffic.confirmDeadline",
        "spec.analysis.checks.health.enabled",
        "spec.analysis.checks.health.maxRestarts",
        "spec.analysis.checks.golden.enabled",
        "spec.analysis.checks.golden.tolerance",
    }


@pytest.mark.parametrize(
    ("path", "crd_default", "model_default"), [pytest.param(*default, id=default[0]) for default in _defaults()]
)
def test_crd_defaults_are_the_models_defaults(path: str, crd_default: Any, model_default: Any) -> None:
    assert crd_default == model_default, path


@pytest.mark.parametrize(
    ("path", "crd_default", "model_default"), [pytest.param(*default, id=default[0]) for default in _defaults()]
)
def test_descriptions_name_the_crds_own_defaults(path: str, crd_default: Any, model_default: Any) -> None:
    """``kubectl explain`` shows the default the API server writes in, in the description."""
    schema = SPEC_SCHEMA
    for part in path.split(".")[1:]:
        schema = schema["properties"][part]
    shown = (
        {True: "true", False: "false"}.get(crd_default, crd_default) if isinstance(crd_default, bool) else crd_default
    )
    assert schema["description"].endswith(f" Defaults to {shown}."), path


def _rules(schema: dict[str, Any]) -> list[str]:
    return [rule["rule"] for rule in schema.get("x-kubernetes-validations", [])]


def test_model_uri_and_version_rules_are_the_models_patterns() -> None:
    """The API server and the operator refuse the same URIs and versions."""
    model = SPEC_SCHEMA["properties"]["green"]["properties"]["model"]["properties"]
    assert f"self.matches('{spec.MODEL_URI.pattern}')" in _rules(model["uri"])
    assert f"self.matches('{spec.SERVED_URI.pattern}')" in _rules(model["goldenSet"])
    assert f"self.matches('{spec.LABEL_VALUE.pattern}')" in _rules(model["version"])
    assert model == SPEC_SCHEMA["properties"]["blue"]["properties"]["model"]["properties"]


def test_the_description_says_which_schemes_are_served() -> None:
    model = SPEC_SCHEMA["properties"]["green"]["properties"]["model"]["properties"]
    assert "http(s)" not in model["goldenSet"]["description"]
    assert "an http:// or https:// URL, fetched by the Pod's init container" in model["uri"]["description"]
    assert "or pvc://CLAIM/path, a file on the PersistentVolumeClaim CLAIM" in model["uri"]["description"]
    assert "s3 is not served yet" in model["uri"]["description"]


def test_the_rollout_name_fits_the_router_service_name() -> None:
    rules = _rules(VERSION["schema"]["openAPIV3Schema"])
    longest_suffix = max(len(f"-{colour}") for colour in (*constants.COLOURS, "router"))
    assert f"self.metadata.name.size() <= {63 - longest_suffix}" in rules
    name = VERSION["schema"]["openAPIV3Schema"]["properties"]["metadata"]["properties"]["name"]
    assert name["pattern"] == "^[a-z]([-a-z0-9]*[a-z0-9])?$", "Service names are DNS-1035 labels"


STATUS_SCHEMA = VERSION["schema"]["openAPIV3Schema"]["properties"]["status"]


def test_every_status_field_is_described_and_left_free_form() -> None:
    """``kubectl explain modelrollout.status`` describes each field the operator writes, while the schema
    constrains none of them (no type, unknown fields kept): a description can never refuse a status write."""
    from modelrollout.api.status import ModelRolloutStatus

    written = {field.alias for field in ModelRolloutStatus.model_fields.values()}
    assert set(STATUS_SCHEMA["properties"]) == written
    assert STATUS_SCHEMA["x-kubernetes-preserve-unknown-fields"] is True
    for name, node in STATUS_SCHEMA["properties"].items():
        assert set(node) == {"description", "x-kubernetes-preserve-unknown-fields"}, name
        assert node["x-kubernetes-preserve-unknown-fields"] is True and node["description"].strip(), name
    assert crd.status_descriptions()[("phase",)].startswith("Where the rollout stands")
    assert "None" not in " ".join(crd.status_descriptions().values())  # YAML users write null


def test_the_api_server_refuses_every_setting_the_operator_writes_itself() -> None:
    server = SPEC_SCHEMA["properties"]["server"]["properties"]["settings"]
    (rule,) = [v["rule"] for v in server["x-kubernetes-validations"]]
    assert set(re.findall(r"'(MODELSERVER_[A-Z0-9_]+)'", rule)) == spec.RESERVED_SETTINGS
