"""analysis.prometheus.bearerTokenSecret: the operator reads the token from a real Secret and sends it, and
rollouts that reach Prometheus with different credentials never share a provider."""

from __future__ import annotations

import base64
import datetime
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from modelrollout import controller
from modelrollout.analysis import run
from modelrollout.analysis.evaluate import Verdict
from modelrollout.api.spec import ModelRolloutSpec
from modelrollout.devcluster import kubectl, process
from modelrollout.devcluster.prometheus import PrometheusServer
from modelrollout.k8s import api

pytestmark = pytest.mark.e2e

TOKEN = "s3cret-token"


def spec_for(url: str, secret: str) -> ModelRolloutSpec:
    return ModelRolloutSpec.model_validate(
        {
            "blue": {"model": {"uri": "file:///b.onnx", "version": "v1"}},
            "green": {"model": {"uri": "file:///g.onnx", "version": "v2"}},
            "analysis": {"prometheus": {"url": url, "bearerTokenSecret": {"name": secret, "key": "token"}}},
        }
    )


@pytest.fixture
def guarded_prometheus(prometheus_server: PrometheusServer) -> Iterator[str]:
    """The real Prometheus behind a proxy that answers 401 unless the request carries the bearer token."""
    upstream = prometheus_server.url

    class Guard(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                self.send_response(401)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"status":"error","errorType":"unauthorized","error":"bearer token required"}')
                return
            answer = httpx.get(upstream + self.path, timeout=5)
            self.send_response(answer.status_code)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(answer.content)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((process.LOOPBACK, process.free_port()), Guard)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://{process.LOOPBACK}:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def secret(kubeconfig: Path, name: str, token: str) -> None:
    manifest = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": "default"},
        "data": {"token": base64.b64encode(token.encode()).decode()},
    }
    kubectl.run("apply", "-f", "-", kubeconfig=kubeconfig, stdin=json.dumps(manifest))


async def verdicts(spec: ModelRolloutSpec) -> set[Verdict]:
    outcome = await run.analyse(
        controller.provider_for(spec, "default"),
        spec,
        namespace="default",
        rollout="nobody",
        now=datetime.datetime.now(datetime.UTC),
        canary_age_seconds=30,
    )
    return {r.verdict for r in outcome.results}


async def test_the_token_from_the_secret_reaches_prometheus(kubeconfig: Path, guarded_prometheus: str) -> None:
    api.configure(str(kubeconfig))
    secret(kubeconfig, "prom-right", TOKEN)
    secret(kubeconfig, "prom-wrong", "not-the-token")
    right, wrong = spec_for(guarded_prometheus, "prom-right"), spec_for(guarded_prometheus, "prom-wrong")
    # With the right token the queries are answered (no data for an unknown rollout: not an error).
    assert Verdict.ERROR not in await verdicts(right)
    # Same URL, another token: another provider, and Prometheus refuses it.
    assert controller.provider_for(right, "default") is not controller.provider_for(wrong, "default")
    assert await verdicts(wrong) == {Verdict.ERROR}


def test_a_secret_without_the_key_is_named_in_the_error(kubeconfig: Path) -> None:
    api.configure(str(kubeconfig))
    secret(kubeconfig, "prom-other-key", TOKEN)
    spec = ModelRolloutSpec.model_validate(
        {
            "blue": {"model": {"uri": "file:///b.onnx", "version": "v1"}},
            "green": {"model": {"uri": "file:///g.onnx", "version": "v2"}},
            "analysis": {"prometheus": {"bearerTokenSecret": {"name": "prom-other-key", "key": "password"}}},
        }
    )
    with pytest.raises(ValueError, match="prom-other-key has no key 'password'"):
        controller.provider_for(spec, "default")
