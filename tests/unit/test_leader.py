"""Leader election's decisions (modelrollout.k8s.leader): when a candidate may take the Lease."""

from __future__ import annotations

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
