"""nginx as the router's data plane, driven by the router process.

nginx (Debian's package) does the weighted split (``split_clients``, sticky on a header when asked) with
keep-alive upstreams. The router process keeps everything that needs to look inside requests or answers:
it renders the config and reloads nginx on a weight change (confirmed through a config-version location),
takes feedback calls (routed to the colour that knows the id), compares mirrored requests, and counts
requests, upstream errors and added latency from nginx's access log, which nginx sends over a local
syslog socket. ``/healthz`` goes through nginx to the router process, so that the router is ready only once
both answer (nginx runs before the router process listens).

nginx is supervised: when it exits unasked (killed, crashed), what is left of it (workers still holding the
port) is ended and it is started again with the config it served, the last one ``nginx -t`` accepted. Until it
answers again the router answers nothing, ``/readyz`` and ``/healthz`` included (they pass through nginx), so
the Pod is not Ready meanwhile, and a liveness probe restarts a container whose nginx cannot come back.

A weight change counts as applied only when all of it worked: the new config written, accepted by
``nginx -t``, nginx sent SIGHUP, and nginx's own ``/router/config-version`` location answering the new
config's version. Any failure raises, and the router reports nothing for it (see router.watch).

The nginx binary is ``nginx`` from the PATH (or /usr/sbin/nginx); ``--nginx-binary`` /
``MODELROUTER_NGINX_BINARY`` names another one. Tests use that to inject reload failures: a wrapper script
that fails ``-t`` while a marker file exists and otherwise execs the real nginx (see tests/e2e/test_routing.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import structlog

from model_server.router.guard import Guard
from model_server.router.metrics import RouterMetrics
from model_server.router.proxy import NOT_FORWARDED, NOT_FORWARDED_ANSWER

log = structlog.get_logger(__name__)

LOG_TAG = "modelrouter"


@dataclass(frozen=True)
class NginxConfig:
    listen: str
    blue: str
    """host:port of the blue model server."""
    green: str
    control: str
    """host:port of the router process (feedback, mirror, metrics, state)."""
    green_weight: int
    mirror_percent: int
    sticky_header: str | None
    version: int
    directory: Path


def _split(variable: str, key: str, percent: int, chosen: str, otherwise: str) -> str:
    if percent <= 0:
        return f'split_clients "{key}" ${variable} {{ * {otherwise}; }}'
    if percent >= 100:
        return f'split_clients "{key}" ${variable} {{ * {chosen}; }}'
    return f'split_clients "{key}" ${variable} {{ {percent}% {chosen}; * {otherwise}; }}'


def render(config: NginxConfig) -> str:
    """nginx.conf for these weights (a pure function)."""
    d = config.directory
    if config.sticky_header:
        header = "http_" + config.sticky_header.lower().replace("-", "_")
        key_map = f'map ${header} $split_key {{ "" $request_id; default ${header}; }}'
    else:
        key_map = "map $request_id $split_key { default $request_id; }"
    mirror = ""
    mirror_location = ""
    if config.mirror_percent > 0:
        mirror = "mirror /_mirror; mirror_request_body on;"
        mirror_location = (
            "location = /_mirror { internal; if ($mirror_this != 1) { return 204; }"
            " proxy_pass http://control/_mirror$request_uri; proxy_http_version 1.1;"
            ' proxy_set_header Connection ""; }'
        )
    refused = NOT_FORWARDED_ANSWER.decode()
    return f"""
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  client_max_body_size 16m;
  log_format {LOG_TAG} '$colour $status $upstream_status $request_time $upstream_response_time';
  upstream blue {{ server {config.blue}; keepalive 64; }}
  upstream green {{ server {config.green}; keepalive 64; }}
  upstream control {{ server {config.control}; keepalive 16; }}
  {key_map}
  {_split("colour", "$split_key", config.green_weight, "green", "blue")}
  {_split("mirror_pick", "${request_id}m", config.mirror_percent, "1", "0")}
  map "$colour:$mirror_pick" $mirror_this {{ "blue:1" 1; default 0; }}
  server {{
    listen {config.listen};
    location = /healthz {{ proxy_pass http://control; }}
    location = /readyz {{ proxy_pass http://control; }}
    location = /router/config-version {{ default_type text/plain; return 200 '{config.version}'; }}
    location = /router/state {{ proxy_pass http://control; }}
    location = /metrics {{ proxy_pass http://control; }}
    location ~ "{NOT_FORWARDED.pattern}" {{ default_type application/json; return 403 '{refused}'; }}
    location ~ /feedback$ {{ proxy_pass http://control; proxy_http_version 1.1; proxy_set_header Connection ""; }}
    {mirror_location}
    location / {{
      access_log syslog:server=unix:{d}/access.sock,nohostname,tag={LOG_TAG} {LOG_TAG};
      {mirror}
      proxy_pass http://$colour;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_next_upstream off;
    }}
  }}
}}
"""


RESTART_FIRST_SECONDS = 0.5
RESTART_MAX_SECONDS = 5.0


def _end_group(pid: int) -> None:
    """End what is left of an nginx started in its own process group (``pid`` leads it)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def nginx_binary(configured: str | None = None) -> str | None:
    """The nginx to run: ``configured`` when given, else nginx from the PATH or /usr/sbin/nginx."""
    if configured:
        return configured
    return shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


class AccessLog(asyncio.DatagramProtocol):
    """Counts what nginx routed, from its access log lines (one syslog datagram per request), and tells the
    guard each answer (mirrored copies are not logged here: nginx sends them to the router process)."""

    def __init__(self, metrics: RouterMetrics, guard: Guard | None = None) -> None:
        self.metrics = metrics
        self.guard = guard

    def datagram_received(self, data: bytes, addr: object) -> None:
        # "<190>Nov 22 14:50:29 modelrouter: green 200 200 0.002 0.001"
        fields = data.rsplit(b": ", 1)[-1].split()
        if len(fields) != 5:
            return
        colour = fields[0].decode()
        if colour not in ("blue", "green"):
            return
        status, upstream_status = fields[1], fields[2]
        if self.guard is not None:
            self.guard.outcome(colour, failed=status.startswith(b"5") or upstream_status == b"-")
        if status in (b"502", b"504") or upstream_status == b"-":
            self.metrics.upstream_error(colour)
            return
        self.metrics.routed(colour)
        try:
            total, upstream = float(fields[3]), float(fields[4].split(b",")[-1])
        except ValueError:
            return
        self.metrics.observe_overhead(max(0.0, total - upstream))


class NginxDataPlane:
    """One nginx (master and one worker) whose config follows the router's weights."""

    def __init__(
        self,
        *,
        listen: str,
        blue: str,
        green: str,
        control: str,
        sticky_header: str | None,
        metrics: RouterMetrics,
        binary: str | None = None,
        guard: Guard | None = None,
    ) -> None:
        binary = nginx_binary(binary)
        if binary is None:
            raise RuntimeError("the nginx data plane needs nginx: install Debian's nginx package")
        self.binary = binary
        self.directory = Path(tempfile.mkdtemp(prefix="modelrouter-nginx-"))
        self.listen, self.blue, self.green, self.control = listen, blue, green, control
        self.sticky_header = sticky_header
        self.metrics = metrics
        self.guard = guard
        self.applied: tuple[int, int] | None = None
        """(green, mirror) of the config nginx confirmed; None while unknown (starting, or a failed apply)."""
        self.version = 0
        """The version of the config in nginx.conf (the one the next reload loads)."""
        self._process: subprocess.Popen[bytes] | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._on_disk: tuple[int, int] | None = None
        """(green, mirror) of nginx.conf: what nginx serves once it (re)loads it."""
        self._lock = asyncio.Lock()
        """One change at a time: a weight change or a restart of nginx."""
        self._stopping = False
        self._supervisor: asyncio.Future[None] | None = None
        self._exited = asyncio.Event()
        """Set as soon as the running nginx has exited (a new one gets a new event)."""
        self.on_restart: Callable[[], None] | None = None
        """Called (on the event loop) after nginx was started again."""

    def _write(self, green_weight: int, mirror_percent: int) -> None:
        """Render, check with ``nginx -t``, and only then replace nginx.conf (raises when rejected)."""
        version = self.version + 1
        conf = render(
            NginxConfig(
                listen=self.listen,
                blue=self.blue,
                green=self.green,
                control=self.control,
                green_weight=green_weight,
                mirror_percent=mirror_percent,
                sticky_header=self.sticky_header,
                version=version,
                directory=self.directory,
            )
        )
        partial = self.directory / "nginx.conf.tmp"
        partial.write_text(conf)
        check = subprocess.run(
            [self.binary, "-t", "-q", "-c", str(partial), "-p", str(self.directory)],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if check.returncode != 0:
            raise RuntimeError(f"nginx rejected the config: {check.stderr.strip()}")
        partial.replace(self.directory / "nginx.conf")
        self.version = version
        self._on_disk = (green_weight, mirror_percent)

    async def start(self, green_weight: int, mirror_percent: int) -> None:
        loop = asyncio.get_running_loop()
        socket_path = self.directory / "access.sock"
        receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        receiver.bind(str(socket_path))
        # nginx's workers may run as another user (www-data when started as root): let them write.
        self.directory.chmod(0o755)
        socket_path.chmod(0o666)
        transport, _ = await loop.create_datagram_endpoint(lambda: AccessLog(self.metrics, self.guard), sock=receiver)
        self._transport = transport
        self._write(green_weight, mirror_percent)
        self._process = self._spawn()
        await self._confirm()
        self.applied = (green_weight, mirror_percent)
        self._supervisor = asyncio.ensure_future(self._supervise())

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [self.binary, "-c", str(self.directory / "nginx.conf"), "-p", str(self.directory)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: what is left of it can be ended together
        )

    async def _supervise(self) -> None:
        """Start nginx again whenever it exits unasked, with the config it served (see the module's doc). Its
        exit is flagged at once (``_exited``), so that a reload or a confirmation in progress gives up rather
        than wait out its timeout, and the router is told (``on_restart``), so that it applies what it wants
        again: the config on disk may be one whose reload was never confirmed."""
        backoff = RESTART_FIRST_SECONDS
        while not self._stopping:
            process = self._process
            if process is None:
                return
            code = await asyncio.to_thread(process.wait)
            self._exited.set()
            async with self._lock:
                if self._stopping:
                    return
                self.metrics.nginx_restarted()
                log.warning("nginx exited; starting it again", exit_code=code, config_version=self.version)
                _end_group(process.pid)  # workers of a killed master still hold the port
                self.applied = None
                self._exited = asyncio.Event()
                try:
                    self._process = self._spawn()
                    await self._confirm()
                except Exception as error:  # noqa: BLE001 - tried again, with a backoff, until it answers
                    log.error("nginx did not start again", error=f"{type(error).__name__}: {error}")
                    if self._process is not None and self._process.poll() is None:
                        self._process.kill()
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, RESTART_MAX_SECONDS)
                    continue
                self.applied = self._on_disk
                backoff = RESTART_FIRST_SECONDS
                log.info("nginx started again", config_version=self.version, serving=self.applied)
            if self.on_restart is not None:
                self.on_restart()

    async def apply(self, green_weight: int, mirror_percent: int) -> None:
        """New weights: a new config, a graceful reload, and a wait until the new config answers.
        Returns only once nginx serves them; raises otherwise (nginx keeps serving what it served).
        Weights nginx confirmed last time need no reload (a guard trip and the report after it)."""
        async with self._lock:
            if self._process is None or self._exited.is_set():
                raise RuntimeError("nginx is not running")
            if self.applied == (green_weight, mirror_percent):
                return
            self.applied = None
            await asyncio.to_thread(self._write, green_weight, mirror_percent)
            if self._exited.is_set():
                raise RuntimeError("nginx exited before its reload")
            try:
                os.kill(self._process.pid, signal.SIGHUP)
            except ProcessLookupError as error:
                raise RuntimeError("nginx exited before its reload") from error
            await self._confirm()
            self.applied = (green_weight, mirror_percent)

    async def _confirm(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=1) as client:
            while time.monotonic() < deadline:
                if self._exited.is_set():
                    raise RuntimeError(f"nginx exited before it loaded config version {self.version}")
                try:
                    answer = await client.get(f"http://{self.listen}/router/config-version")
                    if answer.text == str(self.version):
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.01)
        raise RuntimeError(f"nginx did not load config version {self.version} within {timeout}s")

    def stop(self) -> None:
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
        if self._process is not None:
            self._process.send_signal(signal.SIGQUIT)  # graceful: finish the requests in flight
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            _end_group(self._process.pid)
            self._process = None
        if self._transport is not None:
            self._transport.close()
        shutil.rmtree(self.directory, ignore_errors=True)
