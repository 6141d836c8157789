"""python -m model_server.router --blue-url URL --green-url URL [--rollout NAME --namespace NS] ...

In a cluster the backends are the Services ``<rollout>-blue`` and ``<rollout>-green`` and the weights come
from the ModelRollout; locally, give explicit URLs, and a kubeconfig to follow a rollout, or a fixed
``--weight``. Every option is also a MODELROUTER_* environment variable.

Following a rollout, the router reports ``"<revision>/<green>"`` in its report, the ConfigMap
``<rollout>-router-report``, only after its data plane serves those weights (see router.watch), and keeps
what it serves in ``--state-file`` to serve it again after a restart (see router.persisted);
``--nginx-binary`` names the nginx to drive (tests point it at a wrapper that fails reloads on demand).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import os
import socket
import sys
from pathlib import Path
from typing import Any

import structlog
import uvicorn

from model_server import logs
from model_server.router import guard, persisted
from model_server.router.metrics import RouterMetrics
from model_server.router.nginx import NginxDataPlane
from model_server.router.proxy import RateLimit, Router, RouterState
from model_server.router.upstream import Upstream
from model_server.router.watch import RolloutWatcher, Serving, Wanted, wanted_of
from modelrollout.routing.guard import GuardTrip

log = structlog.get_logger("model_router")


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"MODELROUTER_{name}", default)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m model_server.router", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rollout", default=_env("ROLLOUT", ""))
    parser.add_argument("--namespace", default=_env("NAMESPACE", "default"))
    parser.add_argument("--blue-url", default=_env("BLUE_URL"))
    parser.add_argument("--green-url", default=_env("GREEN_URL"))
    parser.add_argument("--kubeconfig", default=_env("KUBECONFIG"), help="follow the rollout with this kubeconfig")
    parser.add_argument("--in-cluster", action="store_true", default=_env("IN_CLUSTER") == "true")
    parser.add_argument(
        "--replicas",
        type=int,
        default=int(_env("REPLICAS", "1") or 1),
        help="how many routers the rollout runs (one of several never turns Ready from its state file alone)",
    )
    parser.add_argument(
        "--replica",
        default=_env("REPLICA", ""),
        help="this router's name among its rollout's routers (in a cluster its Pod's): the entry it writes in the"
        " report; empty for a router that runs alone",
    )
    parser.add_argument("--weight", type=int, default=None, help="a fixed green weight (no rollout to follow)")
    parser.add_argument("--mirror-percent", type=int, default=0)
    parser.add_argument("--sticky-header", default=_env("STICKY_HEADER"))
    parser.add_argument(
        "--data-plane",
        choices=["python", "nginx"],
        default=_env("DATA_PLANE", "python"),
        help="who forwards requests: this process, or nginx driven by it (faster)",
    )
    parser.add_argument(
        "--nginx-binary",
        default=_env("NGINX_BINARY"),
        help="the nginx to run with --data-plane nginx (default: nginx from the PATH, or /usr/sbin/nginx)",
    )
    parser.add_argument(
        "--feedback-per-second",
        type=float,
        default=float(_env("FEEDBACK_PER_SECOND", "1000") or 1000),
        help="feedback calls a second before 429 (bursts of twice that; 0: no limit). The feedback token, if"
        " any, is read from MODELROUTER_FEEDBACK_TOKEN only (never a flag: it would show in ps);"
        " MODELROUTER_FEEDBACK_AUTH=true refuses feedback (503) while no token is set",
    )
    parser.add_argument(
        "--state-file",
        type=Path,
        default=_env("STATE_FILE"),
        help="following a rollout: keep what is served here, and serve it again after a restart until the API"
        " server answers (router.persisted; in a cluster on the Pod's emptyDir)",
    )
    parser.add_argument("--host", default=_env("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(_env("PORT", "8080") or 8080))
    parser.add_argument("--log-format", default=_env("LOG_FORMAT", "auto"), choices=["auto", "json", "console"])
    args = parser.parse_args(argv)
    if args.rollout and not args.blue_url:
        args.blue_url = f"http://{args.rollout}-blue.{args.namespace}.svc:8080"
    if args.rollout and not args.green_url:
        args.green_url = f"http://{args.rollout}-green.{args.namespace}.svc:8080"
    if not args.blue_url or not args.green_url:
        parser.error("give --rollout (in a cluster) or both --blue-url and --green-url")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logs.configure(args.log_format, rollout=args.rollout, component="router")
    metrics = RouterMetrics(rollout=args.rollout)
    state = RouterState(metrics, mirror_percent=args.mirror_percent)
    if args.weight is not None:
        state.apply(args.weight)
    blue, green = Upstream(args.blue_url), Upstream(args.green_url)
    listen_port = args.port
    plane: NginxDataPlane | None = None
    loop_holder: list[asyncio.AbstractEventLoop] = []

    watcher: RolloutWatcher | None = None
    serialised = asyncio.Lock()

    async def enforce(wanted: Wanted) -> Serving:
        """Make the data plane serve ``wanted`` (on the event loop, one change at a time), or 0% green while
        the guard's trip holds it: decided here, under the lock, so that weights applied just after a trip
        never put green back. Returns what is served; the state (what /router/state and the metrics show)
        changes only once the data plane serves it."""
        async with serialised:
            held = watcher is not None and watcher.follower.holds(wanted)
            green = 0 if held else wanted.green
            if plane is not None:
                await plane.apply(green, wanted.mirror)
            state.apply(green, mirror_percent=wanted.mirror, revision=wanted.revision)
            sentry.arm(
                guard.armed(
                    revision=wanted.revision,
                    green=green,
                    phase=wanted.phase,
                    green_revision=wanted.green_revision,
                    settings=wanted.guard,
                )
            )
            return Serving(green=green, mirror=wanted.mirror)

    def on_trip(trip: GuardTrip) -> None:
        """The guard tripped (on the event loop): unless the rollout has moved past the canary meanwhile,
        green gets 0% now, then the follower reports it."""
        if watcher is None or not watcher.follower.tripped(trip):
            log.info("guard trip dropped: the rollout no longer arms the guard", revision=trip.revision)
            return
        metrics.guard_tripped()
        log.warning("guard tripped: green gets 0%", **trip.__dict__)
        wanted = watcher.follower.wanted
        if wanted is not None:
            task = asyncio.ensure_future(enforce(wanted))
            pending.add(task)
            task.add_done_callback(pending.discard)

    pending: set[asyncio.Future[Serving]] = set()
    sentry = guard.Guard(on_trip=on_trip)

    if args.data_plane == "nginx":
        listen_port = free_port()  # the router process answers nginx on loopback; nginx takes the public port
        while listen_port == args.port:  # a port just released (the caller's pick) may come back
            listen_port = free_port()
        plane = NginxDataPlane(
            listen=f"{args.host}:{args.port}",
            blue=f"{blue.host}:{blue.port}",
            green=f"{green.host}:{green.port}",
            control=f"127.0.0.1:{listen_port}",
            sticky_header=args.sticky_header,
            metrics=metrics,
            binary=args.nginx_binary,
            guard=sentry,
        )

    def apply(wanted: Wanted) -> Serving:
        """Called from the watcher's thread: returns once the data plane serves ``wanted`` (or 0% green, held
        by the guard), raises if it does not."""
        if not loop_holder:
            raise RuntimeError("the data plane has not started yet")
        future = asyncio.run_coroutine_threadsafe(enforce(wanted), loop_holder[0])
        try:
            return future.result(timeout=15)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    remembered: persisted.Remembered | None = None
    if args.rollout and (args.kubeconfig or args.in_cluster) and args.weight is None:
        watcher = RolloutWatcher(
            namespace=args.namespace,
            name=args.rollout,
            kubeconfig=args.kubeconfig,
            apply=apply,
            state_file=args.state_file,
            replica=args.replica,
        )
        if args.state_file is not None and args.replicas > 1:
            # One of several replicas serves nothing from its state file and is not Ready until it has read its
            # rollout: the operator may have confirmed newer weights from the others while it was down, and
            # they serve meanwhile.
            log.info("one of several router replicas: not Ready until the rollout is read", replicas=args.replicas)
        elif args.state_file is not None:
            remembered = persisted.load(args.state_file, namespace=args.namespace, name=args.rollout)
            served = None if remembered is None else persisted.served(remembered, args.replica)
            if remembered is not None and served is not None:
                # served from the first request on, before the API server is asked (it may not answer)
                revision, green_weight = served
                mirror = mirror_of(remembered.rollout)
                state.apply(green_weight, mirror_percent=mirror, revision=revision)
                # Ready only once the API server has answered (and its weights are served) or could not be
                # read: a router restarted while it answers serves what the rollout asks now, never older
                # weights, to a Service that has not routed to it yet.
                state.known = False
                watcher.on_unreachable = state.mark_known
                log.info("serving the remembered weights", revision=revision, green_weight=green_weight)

    async def startup() -> None:
        loop_holder.append(asyncio.get_running_loop())
        if plane is not None and watcher is not None:
            plane.on_restart = watcher.follower.forget_serving
        if plane is not None:
            await plane.start(state.green_weight, state.mirror_percent)
        if watcher is not None:
            watcher.start(remembered)  # after the data plane runs, so that the first weights go straight to it

    def shutdown() -> None:
        if watcher is not None:
            watcher.stop()
        if plane is not None:
            plane.stop()

    router = Router(
        state=state,
        blue=blue,
        green=green,
        sticky_header=args.sticky_header,
        guard=sentry,
        feedback_token=_env("FEEDBACK_TOKEN"),
        feedback_auth=_env("FEEDBACK_AUTH") == "true",
        feedback_limit=(
            RateLimit(args.feedback_per_second, burst=2 * args.feedback_per_second)
            if args.feedback_per_second > 0
            else None
        ),
        on_startup=startup,
        on_shutdown=shutdown,
    )

    log.info(
        "routing",
        blue=args.blue_url,
        green=args.green_url,
        port=args.port,
        green_weight=state.green_weight,
        data_plane=args.data_plane,
    )
    control_host = "127.0.0.1" if plane is not None else args.host
    uvicorn.run(
        router,
        host=control_host,
        port=listen_port,
        log_level="warning",
        access_log=False,
        http="httptools",
        loop="uvloop",
        lifespan="on",
    )
    return 0


def mirror_of(rollout: dict[str, Any]) -> int:
    wanted = wanted_of(rollout)
    return 0 if wanted is None else wanted.mirror


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


if __name__ == "__main__":
    sys.exit(main())
