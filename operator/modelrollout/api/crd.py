"""The CRD's field descriptions come from the typed spec, so that ``kubectl explain`` says what spec.py says.

A field's description is its attribute docstring in ``modelrollout.api.spec`` (``literals`` as YAML spells
them, whitespace collapsed) followed by the field's default; an array's items take the item model's class
docstring, and ``spec`` itself takes ModelRolloutSpec's. ``status`` and its top-level fields take
ModelRolloutStatus's docstrings (``modelrollout.api.status``); the CRD keeps every status field free-form
(``x-kubernetes-preserve-unknown-fields``, no type), so a description never constrains a status write.
``python -m modelrollout.api.crd`` writes them into crds/modelrollout.yaml and the Helm chart's copy, changing
nothing but those ``description`` values: types, CEL rules, defaults, comments and anchors stay as written.
``--check`` lists the stale ones.
"""

from __future__ import annotations

import argparse
import ast
import functools
import inspect
import itertools
import json
import re
import sys
import textwrap
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, TypeAdapter
from pydantic.alias_generators import to_camel
from pydantic.fields import FieldInfo

from modelrollout.api.spec import ModelRolloutSpec
from modelrollout.api.status import ModelRolloutStatus

REPO = Path(__file__).resolve().parents[3]
CRD_FILES = (REPO / "crds" / "modelrollout.yaml", REPO / "charts" / "modelrollout" / "crds" / "modelrollout.yaml")
"""The CRD and the Helm chart's copy of it, kept byte for byte the same."""
LINE_WIDTH = 120
ITEMS = "[]"
"""The path part of an array's items: ``("traffic", "steps", "[]", "pause")`` is spec.traffic.steps[].pause."""
SchemaPath = tuple[str, ...]
_TO_ROOTS = ("spec", "versions", 0, "schema", "openAPIV3Schema", "properties")
SPEC, STATUS = "spec", "status"


def dotted(path: SchemaPath, root: str = SPEC) -> str:
    """``("traffic", "steps", "[]", "pause")`` -> ``spec.traffic.steps[].pause``."""
    return "".join([root, *(part if part == ITEMS else f".{part}" for part in path)])


def model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation such as ``X``, ``X | None`` or ``list[X]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (list, typing.Union, types.UnionType, typing.Annotated):
        for arg in typing.get_args(annotation):
            found = model_of(arg)
            if found:
                return found
    return None


def _is_list(annotation: Any) -> bool:
    if typing.get_origin(annotation) is list:
        return True
    return typing.get_origin(annotation) in (typing.Union, types.UnionType) and any(
        _is_list(arg) for arg in typing.get_args(annotation)
    )


@functools.cache
def field_docstrings(model: type[BaseModel]) -> dict[str, str]:
    """The attribute docstrings of ``model``'s own fields (a string literal right below the field); read
    from the source once per model (do not change the answer)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(model)))
    cls = tree.body[0]
    assert isinstance(cls, ast.ClassDef)
    docs = {}
    for field, after in itertools.pairwise(cls.body):
        if (
            isinstance(field, ast.AnnAssign)
            and isinstance(field.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[field.target.id] = after.value.value
    return docs


_SNAKE = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)+")


def _literal(match: re.Match[str]) -> str:
    """``analysis.on_deadline`` is written analysis.onDeadline in YAML; other literals lose their markup."""
    return ".".join(to_camel(part) if _SNAKE.fullmatch(part) else part for part in match.group(1).split("."))


def normalised(text: str) -> str:
    """Whitespace collapsed; ``literals`` as a YAML user writes them."""
    return " ".join(re.sub(r"``([^`]+)``", _literal, text).split())


def _flow(value: Any) -> str:
    """A JSON value as a YAML user writes it inline: ``{weight: 10, pause: 30s}``."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {_flow(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_flow(item) for item in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def default_sentence(field: FieldInfo) -> str:
    """``Defaults to 5s.``: the default the operator uses when the field is left out, as YAML spells it;
    nothing for required fields, unset ones (None), empty collections and nested objects (their own
    fields say theirs)."""
    if field.is_required():
        return ""
    default = field.get_default(call_default_factory=True)
    if default is None or isinstance(default, BaseModel):
        return ""
    annotation: Any = typing.Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
    value = TypeAdapter(annotation).dump_python(default, mode="json", by_alias=True, exclude_none=True)
    return f"Defaults to {_flow(value)}." if value not in ({}, []) else ""


def _class_description(model: type[BaseModel]) -> str:
    return normalised(model.__dict__.get("__doc__") or "")


def descriptions(model: type[BaseModel] = ModelRolloutSpec, path: SchemaPath = ()) -> dict[SchemaPath, str]:
    """The description of every schema node the typed spec describes, by path below ``spec``: the field's
    docstring and its default ("" for a field without a docstring)."""
    found: dict[SchemaPath, str] = {} if path else {(): _class_description(model)}
    docs = field_docstrings(model)
    for name, field in model.model_fields.items():
        here = (*path, field.alias or name)
        doc = normalised(docs.get(name, ""))
        found[here] = " ".join(part for part in (doc, default_sentence(field)) if part) if doc else ""
        sub = model_of(field.annotation)
        if sub is not None and _is_list(field.annotation):
            found[(*here, ITEMS)] = _class_description(sub)
            found.update(descriptions(sub, (*here, ITEMS)))
        elif sub is not None:
            found.update(descriptions(sub, here))
    return found


def status_descriptions() -> dict[SchemaPath, str]:
    """``status`` and each of its top-level fields, by path below ``status``: ModelRolloutStatus's class and
    attribute docstrings (what is below them is free-form in the CRD)."""
    docs = field_docstrings(ModelRolloutStatus)
    found: dict[SchemaPath, str] = {(): _class_description(ModelRolloutStatus)}
    for name, field in ModelRolloutStatus.model_fields.items():
        found[(field.alias or to_camel(name),)] = normalised(docs.get(name, ""))
    return found


def _child(node: yaml.Node, key: str | int) -> yaml.Node:
    if isinstance(key, int):
        assert isinstance(node, yaml.SequenceNode)
        return typing.cast(yaml.Node, node.value[key])
    assert isinstance(node, yaml.MappingNode)
    for key_node, value_node in node.value:
        if key_node.value == key:
            return typing.cast(yaml.Node, value_node)
    raise KeyError(key)


def _schema_node(spec: yaml.Node, path: SchemaPath, root: str) -> yaml.MappingNode:
    node = spec
    try:
        for part in path:
            node = _child(node, "items") if part == ITEMS else _child(_child(node, "properties"), part)
    except KeyError:
        raise ValueError(f"{dotted(path, root)}: not in the CRD; write its schema (type, rules) first") from None
    assert isinstance(node, yaml.MappingNode)
    return node


def _plain(text: str) -> bool:
    try:
        return bool(yaml.safe_load(f"k: {text}") == {"k": text})
    except yaml.YAMLError:
        return False


def scalar(text: str, *, column: int) -> str:
    """``text`` as the value of a ``description:`` key at ``column``: plain or quoted when it fits on the
    line, else a folded block."""
    room = LINE_WIDTH - column - len("description: ")
    quoted = json.dumps(text, ensure_ascii=False)
    if len(text) <= room and _plain(text):
        return text
    if len(quoted) <= room:
        return quoted
    indent = " " * (column + 2)
    lines = textwrap.wrap(text, LINE_WIDTH - len(indent), break_long_words=False, break_on_hyphens=False)
    return ">-\n" + "\n".join(indent + line for line in lines)


@dataclass(frozen=True)
class _Edit:
    start: int
    end: int
    text: str
    path: SchemaPath
    root: str = SPEC

    @property
    def where(self) -> str:
        return dotted(self.path, self.root)


def _edits(text: str, wanted: dict[SchemaPath, str], root_key: str = SPEC) -> list[_Edit]:
    root = yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # libyaml when there is one
    if root is None:
        raise ValueError("the CRD is empty")
    spec: yaml.Node = root
    for key in (*_TO_ROOTS, root_key):
        spec = _child(spec, key)
    edits: list[_Edit] = []
    described: dict[int, tuple[SchemaPath, str]] = {}
    for path, description in wanted.items():
        if not description:
            raise ValueError(
                f"{dotted(path, root_key)}: no description; give its field (or its item model) a docstring"
            )
        node = _schema_node(spec, path, root_key)
        first, first_description = described.setdefault(id(node), (path, description))
        if first_description != description:
            raise ValueError(
                f"{dotted(first, root_key)} and {dotted(path, root_key)} share one schema node (a YAML anchor), "
                "but their descriptions differ: write them out separately"
            )
        if first != path:
            continue
        current = next(((k, v) for k, v in node.value if k.value == "description"), None)
        if current is not None:
            key_node, value_node = current
            if value_node.value == description:
                continue
            start = value_node.start_mark.index
            end = start + len(text[start : value_node.end_mark.index].rstrip())
            new = scalar(description, column=key_node.start_mark.column)
        elif node.flow_style or not node.value:
            raise ValueError(
                f"{dotted(path, root_key)}: write its schema in block style, so that a description fits in"
            )
        else:
            mark = node.value[0][0].start_mark  # before the node's first key, at its indentation
            start = end = mark.index
            new = f"description: {scalar(description, column=mark.column)}\n{' ' * mark.column}"
        edits.append(_Edit(start, end, new, path, root_key))
    return edits


def _all_edits(text: str, wanted: dict[SchemaPath, str] | None) -> list[_Edit]:
    """The spec's edits (``wanted``, by default the typed spec's descriptions) and the status's, last first."""
    edits = _edits(text, wanted or descriptions()) + _edits(text, status_descriptions(), STATUS)
    return sorted(edits, key=lambda edit: edit.start, reverse=True)


def stale(text: str, wanted: dict[SchemaPath, str] | None = None) -> list[str]:
    """The paths whose description in the CRD ``text`` is not the typed spec's (or status's)."""
    return sorted(edit.where for edit in _all_edits(text, wanted))


def rewrite(text: str, wanted: dict[SchemaPath, str] | None = None) -> str:
    """The CRD ``text`` with the typed descriptions; every other character stays as it was."""
    for edit in _all_edits(text, wanted):
        text = text[: edit.start] + edit.text + text[edit.end :]
    left = _all_edits(text, wanted)
    if left:
        raise AssertionError(f"descriptions written but not read back: {[edit.where for edit in left]}")
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modelrollout.api.crd", description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--check", action="store_true", help="list stale descriptions; change nothing")
    args = parser.parse_args(argv)
    source, chart = CRD_FILES
    text = source.read_text()
    if args.check:
        problems = [f"{path}: description differs from the typed spec" for path in stale(text)]
        if chart.read_text() != text:
            problems.append(f"{chart.relative_to(REPO)} differs from {source.relative_to(REPO)}")
        print("\n".join(problems) or "the CRD's descriptions are the typed spec's")
        return 1 if problems else 0
    updated = rewrite(text)
    for path in CRD_FILES:
        if path.read_text() != updated:
            path.write_text(updated)
            print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
