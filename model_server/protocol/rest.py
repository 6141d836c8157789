"""OIP v2 REST endpoints: thin handlers over the data plane, JSON through orjson."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from model_server import __version__
from model_server.protocol.dataplane import DataPlane, Problem

JSON = "application/json"


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status, media_type=JSON)


def _problem(problem: Problem) -> Response:
    return _json({"error": problem.message}, problem.status)


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
    plane: DataPlane, *, max_body_bytes: int, lifespan: Callable[[Starlette], AbstractAsyncContextManager[None]] | None
) -> Starlette:
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
            try:
                body = await _body(request, max_body_bytes)
                return _json(plane.feedback(request.path_params["model"], body))
            except Problem as problem:
                outcome.status = problem.status
                return _problem(problem)

    def generation(endpoint: str, call: Any) -> Any:
        async def handler(request: Request) -> Response:
            with metrics.request(endpoint) as outcome:
                try:
                    return _json(await call(await _body(request, max_body_bytes)))
                except Problem as problem:
                    outcome.status, outcome.timed_out = problem.status, problem.timed_out
                    return _problem(problem)

        return handler

    async def faults(request: Request) -> Response:
        if not plane.faults.enabled:
            return _json({"error": "fault injection is off: start with MODELSERVER_FAULTS_ENABLED=true"}, 403)
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
        Route("/v2/faults", faults, methods=["GET", "POST"]),
        Route("/metrics", prometheus_metrics),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
