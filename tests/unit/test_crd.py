"""The CRD's schema and the typed spec describe the same fields, so what the API server accepts parses."""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from modelrollout.api import constants
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
