"""Command line for the local control plane.

python -m modelrollout.devcluster build   # find or build the binaries (cached outside the repo)
python -m modelrollout.devcluster up      # start it in the background; prints `export KUBECONFIG=...`
python -m modelrollout.devcluster env     # print `export KUBECONFIG=...` for the running one
python -m modelrollout.devcluster status  # which processes are running
python -m modelrollout.devcluster down    # stop every process by PID and remove its folder
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from modelrollout.devcluster import binaries, cluster, process


def default_directory() -> Path:
    configured = os.environ.get("MODELROLLOUT_DEVCLUSTER_DIR")
    return Path(configured) if configured else binaries.cache_dir().parent.parent / "devcluster"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m modelrollout.devcluster",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=["build", "up", "down", "env", "status"])
    parser.add_argument("--dir", type=Path, default=default_directory(), help="where the cluster keeps its state")
    parser.add_argument("--nodes", type=int, default=2, help="number of kwok fake nodes")
    args = parser.parse_args(argv)
    directory: Path = args.dir

    if args.command == "build":
        for name, path in binaries.ensure_all().items():
            print(f"{name}\t{path}")
        return 0
    if args.command == "up":
        if (directory / cluster.STATE_FILE).exists():
            print(f"a cluster is already up in {directory}: run `down` first", file=sys.stderr)
            return 1
        state = cluster.LocalCluster(directory, nodes=args.nodes).start()
        print(f"export KUBECONFIG={state.kubeconfig}")
        return 0
    if not (directory / cluster.STATE_FILE).exists():
        print(f"no cluster is up in {directory}", file=sys.stderr)
        return 0 if args.command == "down" else 1
    state = cluster.ClusterState.load(directory)
    if args.command == "env":
        print(f"export KUBECONFIG={state.kubeconfig}")
    elif args.command == "status":
        for name, pid in state.pids.items():
            print(f"{name}\tpid {pid}\t{'running' if process.is_running(pid) else 'stopped'}")
    else:
        cluster.LocalCluster(directory).stop()
        print(f"stopped the cluster in {directory}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
