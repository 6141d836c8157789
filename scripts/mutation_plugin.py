"""A pytest plugin for mutation runs only (loaded by ``[tool.mutmut] pytest_add_cli_args``).

Each mutant runs the tests that call its function, and a surviving mutant runs all of them: the property
tests' example budgets (up to 300 generated histories) would make a run last hours. Under mutation they
run with at most ``MUTATION_HYPOTHESIS_EXAMPLES`` examples (default 25), and after the example-based
tests, so that a mutant those kill stops early (mutmut runs pytest with ``-x``).
"""

from __future__ import annotations

import os
import unittest
from typing import Any

import pytest
from hypothesis import settings

EXAMPLES = int(os.environ.get("MUTATION_HYPOTHESIS_EXAMPLES", "25"))


def _smaller(current: settings) -> settings:
    return settings(current, max_examples=min(current.max_examples, EXAMPLES))


def _function(item: pytest.Item) -> Any:
    function = getattr(item, "obj", None)
    return getattr(function, "__func__", function)


def _is_property(item: pytest.Item) -> bool:
    function = _function(item)
    if getattr(function, "_hypothesis_internal_use_settings", None) is not None:
        return True
    owner = getattr(item, "cls", None)
    return isinstance(owner, type) and issubclass(owner, unittest.TestCase) and hasattr(owner, "settings")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        function = _function(item)
        current = getattr(function, "_hypothesis_internal_use_settings", None)
        if isinstance(current, settings):
            function._hypothesis_internal_use_settings = _smaller(current)
        owner = getattr(item, "cls", None)
        owner_settings = getattr(owner, "settings", None)
        if owner is not None and isinstance(owner_settings, settings):
            owner.settings = _smaller(owner_settings)
    items.sort(key=_is_property)  # stable: example-based tests first, each group in its own order
