"""A real Prometheus server (Debian's ``prometheus`` package) on a free loopback port.

It scrapes the targets it is given every second. Targets live in a file_sd file that Prometheus
watches, so tests add targets while it runs without a reload.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import structlog
import yaml

from modelrollout.devcluster import process

log = structlog.get_logger(__name__)

JOB = "modelrollout"


class PrometheusNotInstalled(RuntimeError):
    """No prometheus binary: `make deps` installs Debian's package."""


def find_binary() -> str:
    found = os.environ.get("PROMETHEUS_BINARY") or shutil.which("prometheus")
    if not found:
        raise PrometheusNotInstalled(
            "prometheus not found on PATH: run `make deps` (installs Debian's prometheus package) "
            "or set PROMETHEUS_BINARY"
        )
    return found


def config(*, targets_file: Path, scrape_interval: str) -> dict[str, Any]:
    """prometheus.yml: one job whose targets come from ``targets_file``."""
    return {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "scrape_configs": [
            {
                "job_name": JOB,
                "scrape_interval": scrape_interval,
                "scrape_timeout": scrape_interval,
                "file_sd_configs": [{"files": [str(targets_file)], "refresh_interval": "1s"}],
            }
        ],
    }


@dataclass
class PrometheusServer:
    """One Prometheus process; ``with PrometheusServer() as prom: prom.add_target(...)``."""

    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="modelrollout-prometheus-")))
    scrape_interval: str = "1s"
    port: int = 0
    _process: subprocess.Popen[bytes] | None = None
    _targets: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{process.LOOPBACK}:{self.port}"

    @property
    def targets_file(self) -> Path:
        return self.directory / "targets.json"

    def __enter__(self) -> PrometheusServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        binary = find_binary()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._write_targets()
        config_file = self.directory / "prometheus.yml"
        config_file.write_text(
            yaml.safe_dump(config(targets_file=self.targets_file, scrape_interval=self.scrape_interval))
        )
        self.port = self.port or process.free_port()
        self._process = process.start(
            "prometheus",
            [
                binary,
                f"--config.file={config_file}",
                f"--storage.tsdb.path={self.directory / 'data'}",
                f"--web.listen-address={process.LOOPBACK}:{self.port}",
                "--storage.tsdb.retention.time=1d",
                "--log.level=warn",
            ],
            log_dir=self.directory / "logs",
        )
        proc = self._process
        process.wait_until(
            lambda: httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200,
            timeout=60,
            what="prometheus",
            alive=lambda: proc.poll() is None,
        )
        log.info("prometheus ready", url=self.url)

    def stop(self) -> None:
        if self._process is not None:
            process.stop(self._process.pid)
            self._process.poll()
            self._process = None
        shutil.rmtree(self.directory, ignore_errors=True)

    def add_target(self, address: str, labels: dict[str, str] | None = None) -> None:
        """Scrape ``host:port`` (its /metrics) from now on, with extra target ``labels``."""
        self._targets[address] = labels or {}
        self._write_targets()

    def remove_target(self, address: str) -> None:
        self._targets.pop(address, None)
        self._write_targets()

    def _write_targets(self) -> None:
        if not self.directory.exists():  # stopped (a test may stop Prometheus on purpose): nothing to tell it
            return
        groups = [{"targets": [address], "labels": labels} for address, labels in self._targets.items()]
        partial = self.targets_file.with_suffix(".tmp")
        partial.write_text(json.dumps(groups))
        partial.replace(self.targets_file)  # atomic: Prometheus never reads half a file

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The instant-vector result of ``promql`` (a list of {metric, value})."""
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=10)
        response.raise_for_status()
        body = response.json()
        if body.get("status") != "success":
            raise RuntimeError(f"PromQL {promql!r} failed: {body}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def wait_for_target(self, address: str, *, timeout: float = 30.0) -> float:
        """Wait until a scrape of ``address`` is queryable; returns the seconds it took."""
        begun = time.monotonic()
        process.wait_until(
            lambda: any(float(r["value"][1]) == 1.0 for r in self.query(f'up{{instance="{address}"}}')),
            timeout=timeout,
            what=f"first scrape of {address}",
            interval=0.25,
        )
        return time.monotonic() - begun

    def scrapes(self, address: str) -> int:
        """How many scrapes of ``address`` Prometheus has stored (in the last hour)."""
        found = self.query(f'count_over_time(up{{instance="{address}"}}[1h])')
        return int(float(found[0]["value"][1])) if found else 0

    def wait_for_scrapes(self, *addresses: str, count: int = 2, timeout: float = 30.0) -> None:
        """Wait until each of ``addresses`` has been scraped ``count`` more times from now: what a target
        exported before this call is then queryable, including an ``increase`` over it."""
        targets = {address: self.scrapes(address) + count for address in addresses}
        process.wait_until(
            lambda: all(self.scrapes(address) >= wanted for address, wanted in targets.items()),
            timeout=timeout,
            what=f"{count} more scrapes of {', '.join(addresses)}",
            interval=0.2,
        )
