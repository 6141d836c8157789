"""python -m model_server --model PATH [--name NAME --version V --rollout R --colour C --port P ...]

Every option is also a MODELSERVER_* environment variable (see model_server.settings).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import structlog
import uvicorn
from starlette.applications import Starlette

from model_server import logs
from model_server.batching import BatchingPredictor, DirectPredictor, Predictor
from model_server.faults import Faults
from model_server.feedback import PredictionStore
from model_server.golden import GoldenSet, GoldenSetError
from model_server.metrics import ServerMetrics
from model_server.protocol import rest
from model_server.protocol.dataplane import DataPlane
from model_server.runtime.base import Runtime
from model_server.runtime.gguf import GgufRuntime
from model_server.runtime.onnx import OnnxRuntime
from model_server.settings import ServerSettings

log = structlog.get_logger("model_server")


def make_runtime(settings: ServerSettings) -> Runtime:
    runtime = settings.runtime
    if runtime == "auto":
        runtime = "gguf" if settings.model_path.suffix == ".gguf" else "onnx"
    if runtime == "gguf":
        return GgufRuntime(
            settings.model_path,
            name=settings.model_name,
            sha256=settings.model_sha256,
            threads=settings.threads,
            prompt_cache_bytes=settings.prompt_cache_mib * 2**20,
        )
    return OnnxRuntime(
        settings.model_path, name=settings.model_name, sha256=settings.model_sha256, threads=settings.threads
    )


def settle_garbage_collector() -> None:
    """Keep the collector's pauses out of the latency tail.

    The objects loaded at start (libraries, the app, the model's wrappers) are frozen out of every later
    collection. The young generation is collected after 7,000 allocations instead of 700: under load the
    requests in flight hold a few thousand objects between them, and at 700 the collector ran many times a
    second, promoting those short-lived objects into the old generation, whose full collections (20-50 ms
    each, every few hundred milliseconds) then stalled every request in flight.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(7000, 10, 10)


def build(settings: ServerSettings) -> tuple[Starlette, DataPlane]:
    runtime = make_runtime(settings)
    predictor: Predictor = (
        BatchingPredictor(
            runtime, max_batch_size=settings.max_batch_size, max_wait_seconds=settings.max_batch_wait_ms / 1000
        )
        if settings.max_batch_size > 1
        else DirectPredictor(runtime)
    )
    plane = DataPlane(
        runtime=runtime,
        predictor=predictor,
        metrics=ServerMetrics(
            rollout=settings.rollout, colour=settings.colour, model=settings.model_name, version=settings.model_version
        ),
        store=PredictionStore(
            capacity=settings.feedback_capacity,
            ttl=settings.feedback_ttl_seconds,
            max_bytes=settings.feedback_max_bytes,
        ),
        faults=Faults(
            enabled=settings.faults_enabled,
            token=settings.faults_token.get_secret_value() if settings.faults_token else None,
            latency_seconds=settings.fault_latency_seconds,
            error_rate=settings.fault_error_rate,
            wrong_rate=settings.fault_wrong_rate,
        ),
        model_name=settings.model_name,
        model_version=settings.model_version,
        request_timeout=settings.request_timeout_seconds,
        prediction_output=settings.prediction_output,
    )

    async def housekeeping(golden: GoldenSet | None) -> None:
        interval = settings.golden_interval_seconds
        while True:
            await asyncio.sleep(min(60.0, interval) if interval > 0 else 60.0)
            plane.store.expire()
            if golden is not None and interval > 0 and plane.ready:
                accuracy = await plane.score_golden(golden, count=False)
                log.info("golden set re-scored", accuracy=round(accuracy, 4))

    async def score_golden_then_housekeep() -> None:
        golden = None
        if plane.ready and settings.golden_set is not None:
            try:
                golden = GoldenSet.load(settings.golden_set)
            except GoldenSetError as error:
                log.error("golden set not used", error=str(error))
        if golden is not None:
            # Counted after Prometheus first scraped the zero counters, so that increase() sees them.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(plane.metrics.scraped.wait(), settings.golden_wait_for_scrape_seconds)
            accuracy = await plane.score_golden(golden, count=True)
            log.info("golden set scored", items=len(golden.labels), accuracy=round(accuracy, 4))
        await housekeeping(golden)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await asyncio.to_thread(plane.load)
        settle_garbage_collector()
        if plane.ready:
            log.info("serving", model=settings.model_name, version=settings.model_version, port=settings.port)
        task = asyncio.create_task(score_golden_then_housekeep())
        try:
            yield
        finally:
            task.cancel()
            await predictor.close()

    feedback_token = settings.feedback_token.get_secret_value() if settings.feedback_token else None
    app = rest.build_app(
        plane,
        max_body_bytes=settings.max_body_bytes,
        lifespan=lifespan,
        feedback_token=feedback_token,
        feedback_auth=settings.feedback_auth,
    )
    return app, plane


def parse_args(argv: list[str]) -> ServerSettings:
    parser = argparse.ArgumentParser(
        prog="python -m model_server", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, dest="model_path")
    parser.add_argument("--name", dest="model_name")
    parser.add_argument("--version", dest="model_version")
    parser.add_argument("--sha256", dest="model_sha256")
    parser.add_argument("--runtime", choices=["auto", "onnx", "gguf"])
    parser.add_argument("--rollout")
    parser.add_argument("--colour", choices=["blue", "green"])
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--golden-set", type=Path, dest="golden_set")
    parser.add_argument("--max-batch-size", type=int, dest="max_batch_size")
    parser.add_argument("--max-batch-wait-ms", type=float, dest="max_batch_wait_ms")
    parser.add_argument("--faults-enabled", action="store_const", const=True, dest="faults_enabled")
    parser.add_argument("--log-format", choices=["auto", "json", "console"], dest="log_format")
    given = {k: v for k, v in vars(parser.parse_args(argv)).items() if v is not None}
    return ServerSettings(**given)


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(sys.argv[1:] if argv is None else argv)
    logs.configure(settings.log_format, rollout=settings.rollout, colour=settings.colour)
    app, _ = build(settings)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        http="httptools",
        loop="uvloop",
        lifespan="on",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
