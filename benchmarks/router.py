"""Router benchmark: the builtin router beside nginx (Debian) with the same weighted upstream, same load.

Load comes from wrk, a separate process, on loopback. Figures:
- added latency: p50/p99 at one connection through the router minus the same straight to a model server;
- throughput with the real model servers behind both proxies (both limited by the model servers);
- throughput with a static stub behind both proxies (nginx answering a canned inference response), which
  measures the proxies themselves: key ``throughput_ratio_vs_nginx``.
Both proxies run one process (nginx ``worker_processes 1``) on this 2-core machine. Every proxy is started and
warmed first, then measured in rounds with the order alternating (the direct baseline included: first in even
rounds, last in odd ones); figures are medians over rounds of per-round differences and ratios, with min and
max.

    python -m benchmarks.router [--rounds 5] [--seconds 3] [--connections 32]
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from modelrollout.devcluster import process
from modelrollout.devcluster.modelservers import ModelServer, demo_models_dir

RESULTS = Path(__file__).parent / "results" / "router.json"
NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi; uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;
  upstream blue  {{ server {blue};  keepalive 64; }}
  upstream green {{ server {green}; keepalive 64; }}
  split_clients "${{request_id}}" $colour {{ {weight}% green; * blue; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://$colour;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
{extra}
}}
"""
STUB_SERVER = """
  server {{
    listen 127.0.0.1:{port};
    location / {{ default_type application/json; return 200 '{body}'; }}
  }}
"""


def wrk(url: str, *, body: str, connections: int, seconds: float, workdir: Path) -> dict[str, float]:
    script = workdir / "post.lua"
    script.write_text(f"wrk.method = 'POST'\nwrk.body = [[{body}]]\nwrk.headers['Content-Type'] = 'application/json'\n")
    result = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{round(seconds)}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=True,
    )
    out = result.stdout
    units = {"us": 0.001, "ms": 1.0, "s": 1000.0}

    def percentile(p: str) -> float:
        match = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
        assert match, out
        return float(match.group(1)) * units[match.group(2)]

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    assert rps, out
    return {
        "rps": float(rps.group(1)),
        "p50_ms": percentile("50"),
        "p99_ms": percentile("99"),
        "non_2xx": float(errors.group(1)) if errors else 0.0,
    }


@contextmanager
def nginx(*, port: int, blue: str, green: str, weight: int, extra: str = "") -> Iterator[None]:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    workdir = Path(tempfile.mkdtemp(prefix="bench-nginx-"))
    conf = workdir / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=workdir, blue=blue, green=green, weight=weight, port=port, extra=extra))
    proc = process.start("nginx", [binary, "-c", str(conf), "-p", str(workdir)], log_dir=workdir)
    try:
        process.wait_until(lambda: _listening(port), timeout=10, what="nginx", alive=lambda: proc.poll() is None)
        yield
    finally:
        process.stop(proc.pid)
        proc.poll()
        shutil.rmtree(workdir, ignore_errors=True)


@contextmanager
def router(*, port: int, blue: str, green: str, weight: int, data_plane: str) -> Iterator[None]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-router-"))
    proc = process.start(
        "router",
        [
            sys.executable,
            "-m",
            "model_server.router",
            "--blue-url",
            f"http://{blue}",
            "--green-url",
            f"http://{green}",
            "--weight",
            str(weight),
            "--port",
            str(port),
            "--log-format",
            "json",
            "--data-plane",
            data_plane,
        ],
        log_dir=workdir,
    )
    try:
        process.wait_until(lambda: _listening(port), timeout=20, what="router", alive=lambda: proc.poll() is None)
        yield
    finally:
        process.stop(proc.pid)
        proc.poll()


def _listening(port: int) -> bool:
    try:
        httpx.get(f"http://{process.LOOPBACK}:{port}/", timeout=1)
        return True
    except httpx.HTTPError:
        return False


PROXIES = ("nginx", "router_nginx", "router_python")
"""Plain nginx, and the router with each of its data planes (nginx, the in-cluster default; python)."""


def spread(values: list[float], digits: int = 3) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=3, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv if argv is not None else [])
    for tool in ("wrk", "nginx"):
        if not (shutil.which(tool) or Path(f"/usr/sbin/{tool}").exists()):
            raise SystemExit(f"{tool} is needed: `make bench` installs Debian's nginx and wrk")
    models = demo_models_dir()
    stream = np.load(models / "digits-stream.npz")
    body = json.dumps(
        {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": stream["inputs"][0].tolist()}]}
    )
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    path = "/v2/models/digits/infer"
    runs: list[dict[str, Any]] = []
    with (
        ModelServer(models / "digits-fp32.onnx", colour="blue") as blue,
        ModelServer(models / "digits-fp32.onnx", version="v2", colour="green") as green,
        ExitStack() as proxies,
    ):
        canned = httpx.post(f"{blue.url}{path}", content=body).text
        stub_port = process.free_port()
        stub = f"127.0.0.1:{stub_port}"
        ports = {(proxy, upstream): process.free_port() for proxy in PROXIES for upstream in ("models", "stub")}
        upstreams = {"models": (blue.address, green.address), "stub": (stub, stub)}
        for (proxy, upstream), port in ports.items():
            to_blue, to_green = upstreams[upstream]
            if proxy == "nginx":
                extra = STUB_SERVER.format(port=stub_port, body=canned) if upstream == "models" else ""
                proxies.enter_context(nginx(port=port, blue=to_blue, green=to_green, weight=50, extra=extra))
            else:
                plane = proxy.removeprefix("router_")
                proxies.enter_context(router(port=port, blue=to_blue, green=to_green, weight=50, data_plane=plane))
        urls = {key: f"http://127.0.0.1:{port}{path}" for key, port in ports.items()}

        def measure(url: str, *, connections: int, seconds: float) -> dict[str, float]:
            return wrk(url, body=body, connections=connections, seconds=seconds, workdir=workdir)

        for url in [f"{blue.url}{path}", *urls.values()]:  # every side warm before the first round
            measure(url, connections=args.connections, seconds=1)
        for index in range(args.rounds):
            order = PROXIES if index % 2 == 0 else PROXIES[::-1]
            figures: dict[str, dict[str, float]] = {}
            # one connection: the model server straight, and through each proxy, the order alternating too
            single = {"direct": f"{blue.url}{path}", **{proxy: urls[proxy, "models"] for proxy in PROXIES}}
            for side in single if index % 2 == 0 else reversed(single):
                figures[f"{side}_c1"] = measure(single[side], connections=1, seconds=args.seconds)
            for upstream in ("models", "stub"):
                for proxy in order:
                    figures[f"{proxy}_{upstream}"] = measure(
                        urls[proxy, upstream], connections=args.connections, seconds=args.seconds
                    )
            print(f"round {index + 1}: " + json.dumps({k: v["rps"] for k, v in figures.items()}), flush=True)
            runs.append(figures)

    def keys(proxy: str) -> dict[str, Any]:
        def per_round(value: Callable[[dict[str, dict[str, float]]], float]) -> dict[str, float]:
            return spread([value(figures) for figures in runs])

        return {
            "added_p50_ms": per_round(lambda f: f[f"{proxy}_c1"]["p50_ms"] - f["direct_c1"]["p50_ms"]),
            "added_p99_ms": per_round(lambda f: f[f"{proxy}_c1"]["p99_ms"] - f["direct_c1"]["p99_ms"]),
            "throughput_ratio_vs_nginx": per_round(lambda f: f[f"{proxy}_stub"]["rps"] / f["nginx_stub"]["rps"]),
            "throughput_ratio_vs_nginx_with_model_servers": per_round(
                lambda f: f[f"{proxy}_models"]["rps"] / f["nginx_models"]["rps"]
            ),
        }

    router_nginx, router_python = keys("router_nginx"), keys("router_python")
    report = {
        "command": "python -m benchmarks.router " + " ".join(argv or []),
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}, "
        "2 cores shared by load generator, proxies and model servers",
        "setup": {
            "rounds": args.rounds,
            "seconds_per_run": args.seconds,
            "connections": args.connections,
            "green_weight": 50,
            "load": "wrk -t1, POST one 64-pixel digit (OIP v2 JSON)",
            "nginx": "worker_processes 1, keepalive",
            "method": "all proxies started and warmed first; each round measures every proxy with identical "
            "load, the proxies' order (and, at one connection, the direct baseline's place among them) "
            "alternating between rounds; each figure is the median over rounds of the per-round difference or "
            "ratio, with min and max",
            "data_plane": "top-level keys: the router with its nginx data plane (the in-cluster default); "
            "python_data_plane: the router forwarding in its own process",
        },
        **router_nginx,
        "nginx_added_p50_ms": keys("nginx")["added_p50_ms"],
        "python_data_plane": router_python,
        "goals": {"added_p50_ms.median": "<= 1.0", "throughput_ratio_vs_nginx.median": ">= 0.33"},
        "goals_met": router_nginx["added_p50_ms"]["median"] <= 1.0
        and router_nginx["throughput_ratio_vs_nginx"]["median"] >= 0.33,
        "runs": runs,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k not in ("runs", "setup")}, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
