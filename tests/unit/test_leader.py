"""Leader election's decisions (modelrollout.k8s.leader): when a candidate may take the Lease."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest

from modelrollout.k8s import leader
from modelrollout.k8s.leader import Seen, Timing, observe, takeover_allowed


def seen(holder: str, renewed: str = "t1", at: float = 100.0, duration: float = 15.0) -> Seen:
    return Seen(holder=holder, renewed=renewed, duration_seconds=duration, seen_at=at)


def test_a_missing_free_or_own_lease_may_be_taken_at_once() -> None:
    assert takeover_allowed(None, me="b", now=0)
    assert takeover_allowed(seen(""), me="b", now=100)
    assert takeover_allowed(seen("b"), me="b", now=100)


def test_a_held_lease_is_taken_only_after_a_whole_duration_without_change() -> None:
    assert not takeover_allowed(seen("a"), me="b", now=100)
    assert not takeover_allowed(seen("a"), me="b", now=115)  # exactly the duration: not yet
    assert takeover_allowed(seen("a"), me="b", now=115.01)


def test_the_clock_starts_when_the_record_last_changed_on_our_side() -> None:
    """Only our own monotonic clock counts (no clock is compared with the holder's): a renewal seen resets
    it, the same record read again does not."""
    first = observe(None, holder="a", renewed="t1", duration_seconds=15, now=100)
    again = observe(first, holder="a", renewed="t1", duration_seconds=15, now=110)
    assert again.seen_at == 100 and not takeover_allowed(again, me="b", now=114)
    assert takeover_allowed(again, me="b", now=116)
    renewed = observe(again, holder="a", renewed="t2", duration_seconds=15, now=116)
    assert renewed.seen_at == 116 and not takeover_allowed(renewed, me="b", now=130)
    taken = observe(renewed, holder="c", renewed="t2", duration_seconds=15, now=120)
    assert taken.seen_at == 120 and taken.holder == "c"


def test_a_leader_gives_up_well_before_a_standby_may_take_over() -> None:
    for lease in (3.0, 15.0, 60.0):
        timing = Timing(lease_seconds=lease)
        assert timing.renew_deadline_seconds + 2 * timing.retry_seconds < lease


class Leases:
    """The Lease API as the renewal thread uses it: every renewal is written (no API server here: this is the
    thread's own logic; tests/e2e/test_leader_election.py runs it against a real one)."""

    def __init__(self) -> None:
        self.renewals = 0

    def replace_namespaced_lease(self, name: str, namespace: str, body: Any, **_: Any) -> Any:
        self.renewals += 1
        return SimpleNamespace(metadata=SimpleNamespace(resource_version=str(self.renewals)))


def test_a_leader_whose_event_loop_stalls_stops_renewing_and_exits(monkeypatch: pytest.MonkeyPatch) -> None:
    """A blocked or deadlocked event loop reconciles nothing: holding the Lease then would keep the standby out
    for good. Its renewals stop, and it exits as any leader that cannot renew."""
    lost: list[str] = []
    leases = Leases()
    monkeypatch.setattr(leader, "_coordination_without_retries", lambda: leases)
    elector = leader.Elector(
        name="l", namespace="ns", identity="me", timing=leader.Timing(lease_seconds=0.6), on_lost=lost.append
    )
    elector.leading, elector._renewed_at = True, time.monotonic()
    renewal = threading.Thread(target=elector._renew_until_lost, daemon=True)
    renewal.start()
    beating_until = time.monotonic() + 1.0
    while time.monotonic() < beating_until:  # the loop beats: renewed on time, never lost
        elector.beat()
        time.sleep(0.02)
    assert leases.renewals >= 3 and not lost
    renewal.join(timeout=5)  # the beats stop: no renewal, and the leader exits within the renew deadline
    assert not renewal.is_alive() and lost and "not renewed" in lost[0]
