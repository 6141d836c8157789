"""kopf's wait for its indexes (modelrollout.kopf_readiness): the same waits released, without the wake-ups that
could not release any (every toggle made or dropped woke every waiter: quadratic in the objects watched)."""

from __future__ import annotations

import asyncio

from kopf._cogs.aiokits import aiotoggles

from modelrollout import handlers, kopf_readiness


class CountingCondition(asyncio.Condition):
    def __init__(self) -> None:
        super().__init__()
        self.notified = 0

    def notify_all(self) -> None:
        self.notified += 1
        super().notify_all()


def counted(toggles: aiotoggles.ToggleSet) -> CountingCondition:
    condition = CountingCondition()
    toggles._condition = condition
    return condition


def test_the_operator_runs_with_the_linear_wait() -> None:
    assert handlers.kopf_readiness is kopf_readiness
    for name, method in kopf_readiness.PATCHED.items():
        assert getattr(aiotoggles.ToggleSet, name) is method
    kopf_readiness.apply()  # idempotent
    assert aiotoggles.ToggleSet.drop_toggle is kopf_readiness.drop_toggle


def test_waiters_are_released_when_the_last_toggle_goes_and_woken_only_then() -> None:
    async def scenario() -> None:
        indexed = aiotoggles.ToggleSet(all)
        condition = counted(indexed)
        resource = await indexed.make_toggle(name="listing")
        assert condition.notified == 1  # on -> off
        toggles = [await indexed.make_toggle(name=str(n)) for n in range(100)]
        waiters = [asyncio.ensure_future(indexed.wait_for(True)) for _ in range(100)]
        for toggle in toggles:
            await indexed.drop_toggle(toggle)
        await asyncio.sleep(0)
        assert not any(waiter.done() for waiter in waiters)  # the listing's own toggle is still there
        assert condition.notified == 1  # no toggle made or dropped changed the state
        await indexed.drop_toggles([resource])
        await asyncio.wait_for(asyncio.gather(*waiters), timeout=5)
        assert condition.notified == 2 and indexed.is_on()

    asyncio.run(scenario())


def test_a_toggle_made_off_in_an_empty_set_releases_who_waits_for_off_and_turning_a_toggle_still_wakes() -> None:
    async def scenario() -> None:
        paused = aiotoggles.ToggleSet(any)
        waiting_on = asyncio.ensure_future(paused.wait_for(True))
        await asyncio.sleep(0)
        toggle = await paused.make_toggle(False, name="peer")
        await asyncio.sleep(0)
        assert not waiting_on.done()  # any([False]) is off, as any([]) was
        await toggle.turn_to(True)  # a toggle's own change still wakes the set's waiters
        await asyncio.wait_for(waiting_on, timeout=5)
        waiting_off = asyncio.ensure_future(paused.wait_for(False))
        await paused.drop_toggle(toggle)
        await asyncio.wait_for(waiting_off, timeout=5)

    asyncio.run(scenario())
