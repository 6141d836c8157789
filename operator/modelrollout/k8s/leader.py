"""Leader election on a coordination.k8s.io Lease, so that the chart can run several operator replicas.

Only the holder of the Lease reconciles. An operator started with ``MODELROLLOUT_LEADER_ELECTION=true`` waits
in kopf's startup (before any watch or daemon starts) until it holds the Lease, then renews it from a thread of
its own. When it cannot renew within the renew deadline (the API server unreachable, the Lease taken) it exits
at once, without a reconcile more: its Pod restarts as a standby. So two replicas never reconcile at once, as
long as the leader exits before the Lease it failed to renew can be taken (renew deadline < lease duration).

A standby takes the Lease once its holder has not renewed it for the lease duration, measured on the
standby's own clock from when it last saw the record change (as client-go does: no clock is compared with
another machine's). A leader that stops cleanly hands the Lease back at once.

The decisions are pure (``takeover_allowed``); ``Elector`` does the reading and writing.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelrollout.k8s import api

log = structlog.get_logger(__name__)

EXIT_LEADERSHIP_LOST = 3


@dataclass(frozen=True)
class Timing:
    lease_seconds: float = 15.0
    """How long a Lease not renewed keeps its holder (client-go's default)."""

    @property
    def renew_deadline_seconds(self) -> float:
        """A leader that could not renew for this long exits: well before a standby may take over."""
        return self.lease_seconds * 2 / 3

    @property
    def retry_seconds(self) -> float:
        """Between two attempts to take or renew the Lease."""
        return self.lease_seconds / 7.5


@dataclass(frozen=True)
class Seen:
    """A Lease as a candidate last saw it change, and when (its own monotonic clock)."""

    holder: str
    renewed: str
    duration_seconds: float
    seen_at: float


def takeover_allowed(seen: Seen | None, *, me: str, now: float) -> bool:
    """Whether ``me`` may write itself into the Lease now (a pure function): there is none, nobody holds it,
    it is already ours, or its holder has not renewed it for a whole lease duration as we count it."""
    if seen is None or not seen.holder or seen.holder == me:
        return True
    return now - seen.seen_at > seen.duration_seconds


def observe(previous: Seen | None, *, holder: str, renewed: str, duration_seconds: float, now: float) -> Seen:
    """The Lease record as read now; ``seen_at`` moves only when the record changed (a pure function)."""
    if previous is not None and (previous.holder, previous.renewed) == (holder, renewed):
        return previous
    return Seen(holder=holder, renewed=renewed, duration_seconds=duration_seconds, seen_at=now)


def _micro_time(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def default_identity() -> str:
    """The Pod's name (host and pid outside a Pod), made unique: two processes that share a Pod name (an
    ``exec`` into the Pod, a harness that inherits ``POD_NAME``) are never taken for one."""
    return f"{os.environ.get('POD_NAME') or f'{socket.gethostname()}-{os.getpid()}'}_{uuid.uuid4().hex[:8]}"


class Elector:
    """Takes and keeps the Lease ``namespace/name`` for ``identity``."""

    def __init__(
        self,
        *,
        name: str,
        namespace: str,
        identity: str,
        timing: Timing = Timing(),
        on_lost: Callable[[str], None] | None = None,
    ) -> None:
        self.name, self.namespace, self.identity, self.timing = name, namespace, identity, timing
        self._on_lost = on_lost or _exit
        self._seen: Seen | None = None
        self._stop = threading.Event()
        self.leading = False
        self._version = ""
        self._acquired = ""
        self._transitions = 0
        self._renewed_at = 0.0
        self._beat_at = time.monotonic()
        self._api = _coordination_without_retries()

    def beat(self) -> None:
        """The event loop runs (``heartbeat``): a leader whose loop has not run for the renew deadline (blocked
        by a call that never returns) stops renewing, and so exits and hands over, rather than hold the Lease
        while it reconciles nothing."""
        self._beat_at = time.monotonic()

    async def heartbeat(self) -> None:
        """Beats every retry interval for as long as the event loop runs it."""
        while True:
            self.beat()
            await asyncio.sleep(self.timing.retry_seconds)

    def _stalled(self) -> bool:
        return time.monotonic() - self._beat_at > self.timing.renew_deadline_seconds

    async def acquire(self) -> None:
        """Returns once this process holds the Lease (cancellable while it waits)."""
        waiting_logged = False
        while True:
            if await asyncio.to_thread(self._try_acquire):
                self.leading = True
                self.beat()  # the wait may have been long: the loop ran all along
                lease = f"{self.namespace}/{self.name}"
                log.info("leader election: holding the lease", lease=lease, identity=self.identity)
                threading.Thread(target=self._renew_until_lost, name="lease-renewal", daemon=True).start()
                return
            if not waiting_logged:
                holder = self._seen.holder if self._seen else "?"
                log.info("leader election: standing by", lease=f"{self.namespace}/{self.name}", holder=holder)
                waiting_logged = True
            await asyncio.sleep(self.timing.retry_seconds)

    def release(self) -> None:
        """Hands the Lease back (a clean stop), so that a standby takes over without waiting it out."""
        self._stop.set()
        if not self.leading:
            return
        self.leading = False
        try:
            lease = self._api.read_namespaced_lease(self.name, self.namespace, _request_timeout=self._timeout())
            if lease.spec.holder_identity == self.identity:
                body = self._body(lease.metadata.resource_version, holder="", transitions=_transitions(lease))
                body["spec"]["leaseDurationSeconds"] = 1
                self._api.replace_namespaced_lease(self.name, self.namespace, body, _request_timeout=self._timeout())
        except Exception as error:  # noqa: BLE001 - the standby waits the lease out instead
            log.warning("leader election: lease not handed back", error=str(error))

    def _timeout(self) -> float:
        """Every request is bounded by one retry interval, and the client never retries it by itself."""
        return self.timing.retry_seconds

    def _try_acquire(self) -> bool:
        """One attempt: True when this process now holds the Lease. Any failure is logged and is a no."""
        try:
            return self._take()
        except ApiException as error:
            if error.status != 409:  # a conflict: another candidate was first, or the holder renewed
                log.warning("leader election: lease not taken", error=f"{error.status} {error.reason}")
        except Exception as error:  # noqa: BLE001 - unreachable API server: keep waiting
            log.warning("leader election: lease not taken", error=str(error))
        return False

    def _take(self) -> bool:
        begun = time.monotonic()
        try:
            lease = self._api.read_namespaced_lease(self.name, self.namespace, _request_timeout=self._timeout())
        except ApiException as error:
            if error.status != 404:
                raise
            body = self._body(None, holder=self.identity, transitions=0)
            created = self._api.create_namespaced_lease(self.namespace, body, _request_timeout=self._timeout())
            self._held(created, body, begun)
            return True
        spec = lease.spec
        read_at = time.monotonic()  # a renewal may have landed while the read was in flight: count from now
        self._seen = observe(
            self._seen,
            holder=spec.holder_identity or "",
            renewed=str(spec.renew_time),
            duration_seconds=float(spec.lease_duration_seconds or self.timing.lease_seconds),
            now=read_at,
        )
        if not takeover_allowed(self._seen, me=self.identity, now=read_at):
            return False
        transitions = _transitions(lease) + (0 if spec.holder_identity == self.identity else 1)
        body = self._body(lease.metadata.resource_version, holder=self.identity, transitions=transitions)
        begun = time.monotonic()
        written = self._api.replace_namespaced_lease(self.name, self.namespace, body, _request_timeout=self._timeout())
        self._held(written, body, begun)
        return True

    def _held(self, written: Any, body: dict[str, Any], begun: float) -> None:
        self._version = written.metadata.resource_version
        self._acquired = body["spec"]["acquireTime"]
        self._transitions = body["spec"]["leaseTransitions"]
        self._renewed_at = begun  # counted from before the request: never later than the API server's write

    def fresh(self) -> bool:
        """Whether this replica may act now: it holds the Lease and renewed it within the renew deadline (a
        reconcile checks this before it starts and before each write, so that a process frozen past its Lease
        never acts on waking up, before its renewal thread has noticed)."""
        return self.leading and time.monotonic() - self._renewed_at <= self.timing.renew_deadline_seconds

    def _renew_until_lost(self) -> None:
        """Renews every retry interval, each request bounded by that interval and never retried by the client,
        the deadline checked before and after each: a leader that cannot renew exits within renew deadline +
        one interval of its last renewal, before a standby may take over (lease duration). Anything
        unexpected ends in an exit too: this thread never dies leaving a process that believes it leads."""
        try:
            while not self._stop.wait(self.timing.retry_seconds):
                if self._overdue():
                    return
                if self._stalled():
                    log.error(
                        "leader election: the event loop has not run for the renew deadline; not renewing",
                        seconds=round(time.monotonic() - self._beat_at, 1),
                    )
                    continue
                try:
                    self._renew()
                except ApiException as error:
                    if error.status == 404:
                        self._lost("the lease was deleted")
                        return
                    if error.status == 409 and not self._overdue() and self._held_by_another():
                        return
                    log.warning("leader election: lease not renewed", error=f"{error.status} {error.reason}")
                except Exception as error:  # noqa: BLE001 - counted against the renew deadline
                    log.warning("leader election: lease not renewed", error=str(error))
                if self._overdue():
                    return
        except BaseException as error:  # noqa: BLE001 - see the docstring
            self._lost(f"lease renewal failed: {type(error).__name__}: {error}")

    def _overdue(self) -> bool:
        if time.monotonic() - self._renewed_at <= self.timing.renew_deadline_seconds:
            return False
        self._lost(f"not renewed for {self.timing.renew_deadline_seconds:g}s")
        return True

    def _renew(self) -> None:
        begun = time.monotonic()
        body = self._body(self._version, holder=self.identity, transitions=self._transitions)
        body["spec"]["acquireTime"] = self._acquired
        renewed = self._api.replace_namespaced_lease(self.name, self.namespace, body, _request_timeout=self._timeout())
        self._version = renewed.metadata.resource_version
        self._renewed_at = begun

    def _held_by_another(self) -> bool:
        """After a conflict: True (and exits) when another replica holds the Lease; otherwise takes the new
        resourceVersion (a renewal that timed out but was written) and lets the next round renew."""
        try:
            lease = self._api.read_namespaced_lease(self.name, self.namespace, _request_timeout=self._timeout())
        except Exception as error:  # noqa: BLE001 - counted against the renew deadline
            log.warning("leader election: lease unreadable after a conflict", error=str(error))
            return False
        holder = lease.spec.holder_identity or ""
        if holder != self.identity:
            self._lost(f"the lease is held by {holder or 'nobody'}")
            return True
        self._version = lease.metadata.resource_version
        return False

    def _lost(self, why: str) -> None:
        if self._stop.is_set():
            return
        self.leading = False
        log.error("leader election: leadership lost; exiting so that no other replica is ever doubled", why=why)
        self._on_lost(why)

    def _body(self, resource_version: str | None, *, holder: str, transitions: int) -> dict[str, Any]:
        now = _micro_time(datetime.datetime.now(datetime.UTC))
        metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if resource_version is not None:
            metadata["resourceVersion"] = resource_version  # replace only what was read: 409 otherwise
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": {
                "holderIdentity": holder,
                "leaseDurationSeconds": max(1, math.ceil(self.timing.lease_seconds)),
                "renewTime": now,
                "acquireTime": now,
                "leaseTransitions": transitions,
            },
        }


def _coordination_without_retries() -> Any:
    """The Lease API on a client of its own that never retries a request (urllib3 would, up to 3 times, and
    stretch a request bounded by the retry interval to four times it)."""
    shared = api.api_client()
    configuration = copy.copy(shared.configuration)
    configuration.retries = 0
    return client.CoordinationV1Api(client.ApiClient(configuration))


def _transitions(lease: Any) -> int:
    return int(lease.spec.lease_transitions or 0)


def _exit(why: str) -> None:
    os._exit(EXIT_LEADERSHIP_LOST)
