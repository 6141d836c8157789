"""kopf's wait for its indexes, made linear in the number of watched objects (``apply``, at import of handlers).

kopf runs no handler of any object before its indexes hold the first listing of every indexed resource. It does
so with one set of toggles (``kopf._cogs.aiokits.aiotoggles.ToggleSet``): a toggle per listed object of an
indexed resource, dropped once the object is indexed, and every listed object of every watched resource waits
until the set is empty. The set wakes *all* its waiters at each toggle made or dropped, though the set's state
(all toggles on, or not) changes only once: with N watched objects that is N waiters woken N times each. At
1,000 rollouts (about 12,000 watched objects: Deployments, pods, Services, accounts, reports) a fresh operator,
or a standby taking over, did nothing for over 3 minutes. A model of the first listing with kopf's own classes
(``benchmarks/kopf_readiness.py``) takes 0.38 s at 500 objects, 1.75 s at 1,000 and 8.6 s at 2,000 with kopf's
methods, and 0.009, 0.019 and 0.049 s with these.

Here a toggle made or dropped wakes the waiters only when it changes the set's state, the only thing they wait
for (``ToggleSet.wait_for``); a toggle turned on or off still wakes them all (``Toggle.turn_to``, unchanged).
What any waiter sees is the same, only the wake-ups that could not release it are gone. The state is cheap to
compute here: ``all`` stops at the first toggle that is off, and the indexing toggles are all off until dropped.

This reaches into kopf's private modules, so the kopf versions it is known to fit are pinned (pyproject.toml)
and ``apply`` refuses a ToggleSet that does not look as expected rather than patch it blindly.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable

from kopf._cogs.aiokits import aiotoggles


async def make_toggle(self: aiotoggles.ToggleSet, __val: bool = False, *, name: str | None = None) -> aiotoggles.Toggle:
    toggle = aiotoggles.Toggle(__val, name=name, condition=self._condition)
    async with self._condition:
        was = self.is_on()
        self._toggles.add(toggle)
        if self.is_on() != was:
            self._condition.notify_all()
    return toggle


async def drop_toggle(self: aiotoggles.ToggleSet, toggle: aiotoggles.Toggle) -> None:
    async with self._condition:
        was = self.is_on()
        self._toggles.discard(toggle)
        if self.is_on() != was:
            self._condition.notify_all()


async def drop_toggles(self: aiotoggles.ToggleSet, toggles: Iterable[aiotoggles.Toggle]) -> None:
    async with self._condition:
        was = self.is_on()
        self._toggles.difference_update(toggles)
        if self.is_on() != was:
            self._condition.notify_all()


PATCHED = {"make_toggle": make_toggle, "drop_toggle": drop_toggle, "drop_toggles": drop_toggles}
STOCK = {name: getattr(aiotoggles.ToggleSet, name, None) for name in PATCHED}
"""kopf's own methods, as they were before ``apply`` (for the benchmark's side-by-side comparison)."""


def apply() -> None:
    """Puts the methods above in place of kopf's own (idempotent)."""
    toggle_set = aiotoggles.ToggleSet
    for name, method in PATCHED.items():
        current = getattr(toggle_set, name, None)
        if current is method:
            continue
        if current is None or not inspect.iscoroutinefunction(current):
            raise RuntimeError(f"kopf's ToggleSet.{name} is not what modelrollout.kopf_readiness expects")
        setattr(toggle_set, name, method)
    probe = toggle_set(all)
    if not all(hasattr(probe, attribute) for attribute in ("_condition", "_toggles", "is_on")):
        raise RuntimeError("kopf's ToggleSet is not what modelrollout.kopf_readiness expects")
