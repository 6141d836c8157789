"""REST endpoints, OIP v2 (/v2) and OpenAI-style (/v1): thin handlers over the data plane, JSON through orjson.

Errors take each protocol's shape: OIP v2's ``{"error": message}``, OpenAI's ``{"error": {"message", "type",
"param", "code"}}``. Streamed OpenAI answers are server-sent events, ``data: {chunk}`` each, then
``data: [DONE]``; an error after the first chunk comes as one more event with the error body.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import orjson
import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from model_server import __version__
from model_server.auth import feedback_refusal
from model_server.metrics import RequestOutcome
from model_server.protocol import openai_api
from model_server.protocol.dataplane import Answer, DataPlane, Problem, Stream

log = structlog.get_logger(__name__)

JSON = "application/json"
EVENT_STREAM = "text/event-stream"
Handler = Callable[[Request], Awaitable[Response]]
CLIENT_CLOSED_REQUEST = 499
"""nginx's status for a client that left before its answer was complete: not the server's error."""


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status, media_type=JSON)


def _problem(problem: Problem) -> Response:
    return _json({"error": problem.message}, problem.status)


def _openai_problem(problem: Problem) -> Response:
    return _json(_openai_error(problem), problem.status)


def _openai_error(problem: Problem) -> dict[str, Any]:
    return openai_api.error(problem.status, problem.message, code=problem.code, param=problem.param)


def _event(body: Any) -> bytes:
    return b"data: " + orjson.dumps(body) + b"\n\n"


class _EventStream(StreamingResponse):
    """The server-sent events of a streamed answer. The request's metrics end with it: counted once the
    last event has gone; an error event counts as its error; a client that left before the end counts as
    499, its own doing rather than the server's."""

    def __init__(self, stream: Stream, outcome: RequestOutcome, metrics_done: contextlib.ExitStack) -> None:
        self._stream = stream
        self._outcome = outcome
        self._metrics_done = metrics_done
        self._ended = False
        super().__init__(self._events(), media_type=EVENT_STREAM, headers={"Cache-Control": "no-cache"})

    async def _events(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._stream.chunks:
                yield _event(chunk)
            yield b"data: [DONE]\n\n"
        except Problem as problem:
            self._outcome.status, self._outcome.timed_out = problem.status, problem.timed_out
            yield _event(_openai_error(problem))
        except Exception as error:
            log.exception("streaming failed")
            self._outcome.status = 500
            yield _event(openai_api.error(500, f"streaming failed: {type(error).__name__}: {error}"))
        self._ended = True  # reached only once the last event has been sent

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._stream.stop()
            if not self._ended and self._outcome.status < 400:
                self._outcome.status = CLIENT_CLOSED_REQUEST
            self._metrics_done.close()


async def _body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise Problem(413, f"request body of {declared} bytes is over the limit of {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Problem(413, f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def build_app(
    plane: DataPlane,
    *,
    max_body_bytes: int,
    lifespan: Callable[[Starlette], AbstractAsyncContextManager[None]] | None,
    feedback_token: str | None = None,
    feedback_auth: bool = False,
) -> Starlette:
    """The model server's HTTP API. With ``feedback_token`` (or ``feedback_auth``) feedback must carry the
    token (``Authorization: Bearer``): labels decide the accuracy gate, so only those holding the rollout's
    Secret may send them (see auth.feedback_refusal)."""
    metrics = plane.metrics

    async def live(request: Request) -> Response:
        return _json({"live": True})

    async def ready(request: Request) -> Response:
        return _json({"ready": plane.ready}, 200 if plane.ready else 503)

    async def server_metadata(request: Request) -> Response:
        return _json({"name": "modelrollout-model-server", "version": __version__, "extensions": ["feedback"]})

    async def model_metadata(request: Request) -> Response:
        try:
            return _json(plane.model_metadata(request.path_params["model"]))
        except Problem as problem:
            return _problem(problem)

    async def model_ready(request: Request) -> Response:
        name = request.path_params["model"]
        if name != plane.model_name:
            return _json({"error": f"model {name!r} is not served here"}, 404)
        return _json({"name": name, "ready": plane.ready}, 200 if plane.ready else 503)

    async def infer(request: Request) -> Response:
        with metrics.request("infer") as outcome:
            try:
                body = await _body(request, max_body_bytes)
                header = request.headers.get("inference-header-content-length")
                if header is not None and not header.isdigit():
                    raise Problem(400, f"Inference-Header-Content-Length must be a number, got {header!r}")
                answer = await plane.infer(
                    request.path_params["model"],
                    body,
                    version=request.path_params.get("version"),
                    header_length=int(header) if header is not None else None,
                )
            except Problem as problem:
                outcome.status, outcome.timed_out = problem.status, problem.timed_out
                return _problem(problem)
            return _json(answer)

    async def feedback(request: Request) -> Response:
        with metrics.request("feedback") as outcome:
            refusal = feedback_refusal(
                required=feedback_auth, token=feedback_token, authorization=request.headers.get("authorization")
            )
            if refusal is not None:
                outcome.status, message = refusal
                if outcome.status == 401:
                    return _unauthorized(message)
                return _json({"error": message}, outcome.status)
            try:
                body = await _body(request, max_body_bytes)
                return _json(plane.feedback(request.path_params["model"], body))
            except Problem as problem:
                outcome.status = problem.status
                return _problem(problem)

    def generation(endpoint: str, call: Callable[[bytes], Awaitable[Answer]]) -> Handler:
        async def handler(request: Request) -> Response:
            with contextlib.ExitStack() as finish:
                outcome = finish.enter_context(metrics.request(endpoint))
                try:
                    answer = await call(await _body(request, max_body_bytes))
                except Problem as problem:
                    outcome.status, outcome.timed_out = problem.status, problem.timed_out
                    return _openai_problem(problem)
                if isinstance(answer, Stream):
                    # timed and counted until its last event: the metrics go with the stream
                    return _EventStream(answer, outcome, finish.pop_all())
                return _json(answer)

        return handler

    async def openai_models(request: Request) -> Response:
        return _json(plane.models())

    async def openai_model(request: Request) -> Response:
        try:
            return _json(plane.model(request.path_params["model"]))
        except Problem as problem:
            return _openai_problem(problem)

    async def faults(request: Request) -> Response:
        if not plane.faults.enabled:
            return _json({"error": "fault injection is off: start with MODELSERVER_FAULTS_ENABLED=true"}, 403)
        if not plane.faults.token:
            return _json({"error": "/v2/faults is closed: start with MODELSERVER_FAULTS_TOKEN (from a Secret)"}, 403)
        if not plane.faults.admits(request.headers.get("authorization")):
            return _unauthorized("/v2/faults needs Authorization: Bearer <MODELSERVER_FAULTS_TOKEN>")
        if request.method == "POST":
            try:
                body = orjson.loads(await _body(request, 4096) or b"{}")
                if not isinstance(body, dict):
                    raise ValueError("the body must be a JSON object")
                plane.faults.update(
                    latency_seconds=body.get("latency_seconds"),
                    error_rate=body.get("error_rate"),
                    wrong_rate=body.get("wrong_rate"),
                )
            except (orjson.JSONDecodeError, ValueError, TypeError) as error:
                return _json({"error": f"invalid faults: {error}"}, 400)
            except Problem as problem:
                return _problem(problem)
        return _json(plane.faults.as_dict())

    async def prometheus_metrics(request: Request) -> Response:
        metrics.scraped.set()
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    routes = [
        Route("/v2/health/live", live),
        Route("/v2/health/ready", ready),
        Route("/v2", server_metadata),
        Route("/v2/models/{model}", model_metadata),
        Route("/v2/models/{model}/ready", model_ready),
        Route("/v2/models/{model}/infer", infer, methods=["POST"]),
        Route("/v2/models/{model}/versions/{version}/infer", infer, methods=["POST"]),
        Route("/v2/models/{model}/feedback", feedback, methods=["POST"]),
        Route("/v1/completions", generation("completions", plane.complete), methods=["POST"]),
        Route("/v1/chat/completions", generation("chat", plane.chat), methods=["POST"]),
        Route("/v1/models", openai_models),
        Route("/v1/models/{model:path}", openai_model),
        Route("/v2/faults", faults, methods=["GET", "POST"]),
        Route("/metrics", prometheus_metrics),
    ]
    return Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: _http_exception})


def _unauthorized(message: str) -> Response:
    return Response(
        orjson.dumps({"error": message}), status_code=401, media_type=JSON, headers={"www-authenticate": "Bearer"}
    )


async def _http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (no such route, a wrong method) in the shape of the protocol the path belongs to:
    OpenAI's under /v1/, OIP v2's under /v2 (whose clients read ``error`` from any failed answer)."""
    assert isinstance(exc, HTTPException)
    path = request.url.path
    message = f"{request.method} {path}: {exc.detail}"
    if path.startswith("/v1/"):
        return _json_with_headers(openai_api.error(exc.status_code, message), exc)
    if path == "/v2" or path.startswith("/v2/"):
        return _json_with_headers({"error": message}, exc)
    return PlainTextResponse(exc.detail, status_code=exc.status_code, headers=exc.headers)


def _json_with_headers(body: dict[str, Any], exc: HTTPException) -> Response:
    return Response(orjson.dumps(body), status_code=exc.status_code, media_type=JSON, headers=exc.headers)
