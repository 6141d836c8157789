"""The router's data plane: a raw ASGI app that forwards inference to blue or green by weight.

Kept free of a web framework on purpose: it is on every request's path (see benchmarks/router.py).
"""

from __future__ import annotations

import asyncio
import posixpath
import random
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from model_server.auth import feedback_refusal
from model_server.router import split
from model_server.router.guard import Guard
from model_server.router.metrics import RouterMetrics
from model_server.router.upstream import Response, Upstream, UpstreamError

log = structlog.get_logger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_JSON = [(b"content-type", b"application/json")]

NOT_FORWARDED = re.compile(r"^/v2/faults(/|$)")
"""Model-server paths the router refuses (403) on both data planes: fault injection is for an SRE on the
model server's own port, with its token, never for whoever reaches the router."""
NOT_FORWARDED_ANSWER = b'{"error":"/v2/faults is not served through the router"}'


def not_forwarded(path: str) -> bool:
    """Whether a (percent-decoded) request path names a path the router refuses, however it is spelled:
    repeated slashes and dot segments are resolved first, as nginx does before it matches a location, and
    a mirrored copy's ``/_mirror`` prefix is looked through."""
    if "faults" not in path:  # every request passes here: most leave at once
        return False
    normal = posixpath.normpath("/" + re.sub("/+", "/", path).lstrip("/"))
    return NOT_FORWARDED.match(normal.removeprefix("/_mirror")) is not None  # a mirrored copy goes on too


def predictions(body: bytes) -> list[Any] | None:
    """The first output's data of an OIP v2 response (or the choices' text of an OpenAI one)."""
    try:
        answer = orjson.loads(body)
        if "outputs" in answer:
            return list(answer["outputs"][0]["data"])
        return [choice.get("text") or choice.get("message") for choice in answer.get("choices", [])]
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError):
        return None


class RouterState:
    """The weights in force; the only state the data plane reads. Starts at 100% blue.

    With the nginx data plane it mirrors what nginx serves: it is changed only after nginx confirmed the
    new config, so /router/state and ``modelrouter_applied_weight`` never run ahead of the data plane.
    """

    def __init__(self, metrics: RouterMetrics, *, green_weight: int = 0, mirror_percent: int = 0) -> None:
        self.metrics = metrics
        self.green_weight = green_weight
        self.mirror_percent = mirror_percent
        self.revision: int | None = None
        """The ``status.weights.revision`` these weights are for (None: not from a ModelRollout)."""
        self.known = False
        """True once weights came from the ModelRollout (or were given on the command line)."""
        metrics.set_weight(green_weight)

    def mark_known(self) -> None:
        """The weights in force count as known (Ready) although none was applied since they were set."""
        self.known = True

    def apply(self, green_weight: int, *, mirror_percent: int | None = None, revision: int | None = None) -> None:
        """Set the weights in force (call it once the data plane serves them)."""
        self.green_weight = max(0, min(100, green_weight))
        if mirror_percent is not None:
            self.mirror_percent = max(0, min(100, mirror_percent))
        self.revision = revision
        self.known = True
        self.metrics.set_weight(self.green_weight)


class Router:
    def __init__(
        self,
        *,
        state: RouterState,
        blue: Upstream,
        green: Upstream,
        sticky_header: str | None = None,
        guard: Guard | None = None,
        id_capacity: int = 100_000,
        feedback_token: str | None = None,
        feedback_auth: bool = False,
        feedback_limit: RateLimit | None = None,
        on_startup: Callable[[], Awaitable[None]] | None = None,
        on_shutdown: Callable[[], None] | None = None,
    ) -> None:
        self.state = state
        self.metrics = state.metrics
        self.upstreams = {split.BLUE: blue, split.GREEN: green}
        self.sticky_header = sticky_header.lower().encode() if sticky_header else None
        self.guard = guard
        """Told each answer to a user request (not mirrored copies); None: no guard."""
        self.served_by: OrderedDict[str, str] = OrderedDict()
        """Inference id -> colour that answered it, so that feedback reaches the right model server."""
        self.id_capacity = id_capacity
        self.feedback_token = feedback_token
        """Feedback must carry it as ``Authorization: Bearer`` (None: open unless ``feedback_auth``); it goes
        on to the model server."""
        self.feedback_auth = feedback_auth
        """A token is required: without one configured feedback is refused (503), never open."""
        self.feedback_limit = feedback_limit
        """Feedback calls beyond it are answered 429 (None: no limit)."""
        self._background: set[asyncio.Task[None]] = set()
        self._random = random.random
        self._on_startup = on_startup
        self._on_shutdown = on_shutdown

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        if path == "/metrics":
            await _respond(
                send, 200, generate_latest(self.metrics.registry), [(b"content-type", CONTENT_TYPE_LATEST.encode())]
            )
        elif path == "/router/state":
            await _respond(
                send,
                200,
                orjson.dumps(
                    {
                        "greenWeight": self.state.green_weight,
                        "mirrorPercent": self.state.mirror_percent,
                        "revision": self.state.revision,
                        "known": self.state.known,
                    }
                ),
                _JSON,
            )
        elif path in ("/healthz", "/v2/health/live"):
            await _respond(send, 200, b'{"live":true}', _JSON)
        elif path == "/readyz":
            # Ready only once it serves the weights its rollout asks for: a router that restarts during a
            # promotion must not send users to blue's older model before it has read the status.
            if self.state.known:
                await _respond(send, 200, b'{"ready":true}', _JSON)
            else:
                await _respond(send, 503, b'{"ready":false,"reason":"weights not applied yet"}', _JSON)
        elif not_forwarded(path):
            await _respond(send, 403, NOT_FORWARDED_ANSWER, _JSON)
        elif path.endswith("/feedback"):
            await self._feedback(scope, receive, send)
        elif path.startswith("/_mirror/"):
            await self._mirrored(scope, receive, send)
        else:
            await self._route(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if self._on_startup is not None:
                    await self._on_startup()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._on_shutdown is not None:
                    self._on_shutdown()
                for upstream in self.upstreams.values():
                    await upstream.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        begun = time.perf_counter()
        body = await _read_body(receive, send)
        if body is None:
            return
        headers = dict(scope["headers"])
        sticky = headers.get(self.sticky_header) if self.sticky_header else None
        colour = split.choose(
            self.state.green_weight, sticky_key=sticky.decode("latin-1") if sticky else None, draw=self._random()
        )
        target = _target(scope)
        content_type = headers.get(b"content-type")
        try:
            upstream_begun = time.perf_counter()
            response = await self.upstreams[colour].request(scope["method"].encode(), target, body, content_type)
            upstream_seconds = time.perf_counter() - upstream_begun
        except UpstreamError as error:
            self.metrics.upstream_error(colour)
            if self.guard is not None:
                self.guard.outcome(colour, failed=True)
            log.warning("upstream failed", colour=colour, error=str(error))
            await _respond(send, 502, orjson.dumps({"error": f"{colour} model server unavailable: {error}"}), _JSON)
            return
        self.metrics.routed(colour)
        if self.guard is not None:
            self.guard.outcome(colour, failed=response.status >= 500)
        if response.status == 200 and scope["path"].endswith("/infer"):
            self._remember(response.body, colour)
            if colour == split.BLUE and self.state.mirror_percent and self._random() * 100 < self.state.mirror_percent:
                self._spawn(self._mirror(scope["method"].encode(), target, body, content_type, response))
        await _respond(send, response.status, response.body, response.headers)
        self.metrics.observe_overhead(time.perf_counter() - begun - upstream_seconds)

    def _remember(self, body: bytes, colour: str) -> None:
        # The id sits near the start of an OIP v2 answer; a full parse is not needed.
        start = body.find(b'"id":"')
        if start < 0:
            return
        end = body.find(b'"', start + 6)
        self.served_by[body[start + 6 : end].decode("utf-8", "replace")] = colour
        while len(self.served_by) > self.id_capacity:
            self.served_by.popitem(last=False)

    async def _mirror(
        self, method: bytes, target: bytes, body: bytes, content_type: bytes | None, blue_answer: Response
    ) -> None:
        """Send a copy to green, compare its prediction with blue's, discard green's answer."""
        try:
            green_answer = await self.upstreams[split.GREEN].request(method, target, body, content_type)
        except UpstreamError:
            # Not an upstream error: green's share of user requests is what the errors check divides by,
            # and no user waited for this copy.
            self.metrics.mirror_failed()
            return
        blue_prediction, green_prediction = predictions(blue_answer.body), predictions(green_answer.body)
        if blue_prediction is None or green_answer.status != 200:
            return
        self.metrics.compared(disagreed=blue_prediction != green_prediction)

    async def _mirrored(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A copy nginx mirrored (data plane ``nginx``): ask blue and green, compare, answer nothing."""
        body = await _read_body(receive, send)
        if body is None:
            return
        target = _target(scope)[len(b"/_mirror") :]
        headers = dict(scope["headers"])
        await _respond(send, 204, b"", [])
        try:
            blue_answer = await self.upstreams[split.BLUE].request(b"POST", target, body, headers.get(b"content-type"))
        except UpstreamError:
            self.metrics.upstream_error(split.BLUE)
            return
        self._spawn(self._mirror(b"POST", target, body, headers.get(b"content-type"), blue_answer))

    async def _feedback(self, scope: Scope, receive: Receive, send: Send) -> None:
        authorization: bytes = dict(scope["headers"]).get(b"authorization", b"")
        refusal = feedback_refusal(
            required=self.feedback_auth, token=self.feedback_token, authorization=authorization.decode("latin-1")
        )
        if refusal is not None:
            status, message = refusal
            self.metrics.feedback_refusal("unauthorized" if status == 401 else "no_token")
            challenge = [(b"www-authenticate", b"Bearer")] if status == 401 else []
            await _respond(send, status, orjson.dumps({"error": message}), [*_JSON, *challenge])
            return
        if self.feedback_limit is not None and not self.feedback_limit.allow():
            self.metrics.feedback_refusal("rate_limited")
            await _respond(send, 429, _RATE_LIMITED, [*_JSON, (b"retry-after", b"1")])
            return
        body = await _read_body(receive, send)
        if body is None:
            return
        try:
            request_id = str(orjson.loads(body).get("id"))
        except (orjson.JSONDecodeError, AttributeError):
            await _respond(send, 400, b'{"error":"feedback must be a JSON object with an id"}', _JSON)
            return
        known = self.served_by.get(request_id)
        order = [known] if known else [split.BLUE, split.GREEN]
        target = _target(scope)
        response: Response | None = None
        for colour in order:
            try:
                response = await self.upstreams[colour].request(
                    b"POST", target, body, b"application/json", authorization=authorization
                )
            except UpstreamError:
                self.metrics.upstream_error(colour)
                continue
            if response.status != 404:
                break
        if response is None:
            await _respond(send, 502, b'{"error":"no model server could take the feedback"}', _JSON)
            return
        await _respond(send, response.status, response.body, response.headers)

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


_RATE_LIMITED = b'{"error":"too much feedback: slow down (see Retry-After)"}'


class RateLimit:
    """A token bucket: ``per_second`` calls a second on average, bursts of up to ``burst``."""

    def __init__(self, per_second: float, *, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_second = per_second
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._at = clock()

    def allow(self) -> bool:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.per_second)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


def _target(scope: Scope) -> bytes:
    raw: bytes = scope.get("raw_path") or scope["path"].encode()
    query: bytes = scope.get("query_string", b"")
    return raw + (b"?" + query if query else b"")


MAX_BODY_BYTES = 16 * 1024 * 1024
"""Larger request bodies are answered 413 (as nginx's ``client_max_body_size 16m`` in the nginx data plane)."""
_TOO_LARGE = b'{"error":"request body larger than 16 MiB"}'


async def _read_body(receive: Receive, send: Send) -> bytes | None:
    """The request's body; None when it is larger than MAX_BODY_BYTES, after answering 413."""
    chunks, size = [], 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            await _respond(send, 413, _TOO_LARGE, _JSON)
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def _respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
