"""The CRD's schema and the typed spec describe the same fields, so what the API server accepts parses."""

from __future__ import annotations

import ast
import inspect
import itertools
import re
import textwrap
import types
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, TypeAdapter
from pydantic.alias_generators import to_camel

from modelrollout.api import constants, spec
from modelrollout.api.spec import ModelRolloutSpec

CRD = yaml.safe_load((Path(__file__).resolve().parents[2] / "crds" / "modelrollout.yaml").read_text())
VERSION = CRD["spec"]["versions"][0]
SPEC_SCHEMA = VERSION["schema"]["openAPIV3Schema"]["properties"]["spec"]


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation such as ``X``, ``X | None`` or ``list[X]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (list, typing.Union, types.UnionType, typing.Annotated):
        for arg in typing.get_args(annotation):
            found = _model_of(arg)
            if found:
                return found
    return None


def _pairs(model: type[BaseModel], schema: dict[str, Any], path: str) -> list[tuple[str, type[BaseModel], dict]]:
    pairs = [(path, model, schema)]
    for name, field in model.model_fields.items():
        alias = field.alias or name
        sub = _model_of(field.annotation)
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


def _field_docstrings(model: type[BaseModel]) -> dict[str, str]:
    """The attribute docstrings of ``model``'s own fields (a string literal right below the field)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(model)))
    cls = tree.body[0]
    assert isinstance(cls, ast.ClassDef)
    body = cls.body
    docs = {}
    for field, after in itertools.pairwise(body):
        if (
            isinstance(field, ast.AnnAssign)
            and isinstance(field.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[field.target.id] = after.value.value
    return docs


def _literal(match: re.Match[str]) -> str:
    """``on_deadline`` is written onDeadline in YAML; other literals lose their markup."""
    text = match.group(1)
    return to_camel(text) if re.fullmatch(r"[a-z][a-z0-9]*(_[a-z0-9]+)+", text) else text


def normalised(text: str) -> str:
    """Whitespace collapsed; ``literals`` as a YAML user writes them."""
    return " ".join(re.sub(r"``([^`]+)``", _literal, text).split())


def _documented_fields() -> list[tuple[str, str, str]]:
    found = []
    for path, model, schema in _pairs(ModelRolloutSpec, SPEC_SCHEMA, "spec"):
        docs = _field_docstrings(model)
        for name, field in model.model_fields.items():
            if name in docs:
                alias = field.alias or name
                found.append((f"{path}.{alias}", docs[name], schema["properties"][alias].get("description", "")))
    return found


@pytest.mark.parametrize(
    ("path", "docstring", "description"), [pytest.param(*field, id=field[0]) for field in _documented_fields()]
)
def test_descriptions_start_with_the_field_docstrings(path: str, docstring: str, description: str) -> None:
    """``kubectl explain`` says what the typed spec says; the CRD may add how to write the value."""
    assert normalised(description).startswith(normalised(docstring)), (
        f"{path}: the CRD description\n  {normalised(description)}\ndoes not start with the docstring\n"
        f"  {normalised(docstring)}"
    )


def test_docstring_normalisation() -> None:
    assert normalised("before ``on_deadline``;\n    a  step") == "before onDeadline; a step"
    assert normalised("``keepStable`` and ``modelrollout.dev/version``") == "keepStable and modelrollout.dev/version"


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


def _rules(schema: dict[str, Any]) -> list[str]:
    return [rule["rule"] for rule in schema.get("x-kubernetes-validations", [])]


def test_model_uri_and_version_rules_are_the_models_patterns() -> None:
    """The API server and the operator refuse the same URIs and versions."""
    model = SPEC_SCHEMA["properties"]["green"]["properties"]["model"]["properties"]
    assert f"self.matches('{spec.SERVED_URI.pattern}')" in _rules(model["uri"])
    assert f"self.matches('{spec.SERVED_URI.pattern}')" in _rules(model["goldenSet"])
    assert f"self.matches('{spec.LABEL_VALUE.pattern}')" in _rules(model["version"])
    assert model == SPEC_SCHEMA["properties"]["blue"]["properties"]["model"]["properties"]


def test_the_description_no_longer_offers_http() -> None:
    model = SPEC_SCHEMA["properties"]["green"]["properties"]["model"]["properties"]
    for field in ("uri", "goldenSet"):
        assert "http(s)" not in model[field]["description"], field
    assert "(http, https, s3) are not served yet" in model["uri"]["description"]


def test_the_rollout_name_fits_the_router_service_name() -> None:
    rules = _rules(VERSION["schema"]["openAPIV3Schema"])
    longest_suffix = max(len(f"-{colour}") for colour in (*constants.COLOURS, "router"))
    assert f"self.metadata.name.size() <= {63 - longest_suffix}" in rules
    name = VERSION["schema"]["openAPIV3Schema"]["properties"]["metadata"]["properties"]["name"]
    assert name["pattern"] == "^[a-z]([-a-z0-9]*[a-z0-9])?$", "Service names are DNS-1035 labels"
