"""ONNX model server benchmarks, side by side in interleaved rounds (the method in benchmarks/_rounds.py).

1. Against KServe's Python model server (PyPI ``kserve``, in a virtual environment of its own under the
   cache folder), both serving the digits FP32 model through onnxruntime and answering with the same
   outputs (checked before timing). Both servers run at once and are warmed; then every round drives
   each in turn (the order flips every round) with wrk (a separate process) at each concurrency, posting
   the same OIP v2 JSON body. Per round and concurrency: the throughput ratio (ours / KServe) and the
   p99 ratio (ours / KServe). Keys, at the highest concurrency, medians over rounds:
   ``throughput_ratio_vs_kserve`` and ``p99_ratio_vs_kserve``, with ``*_spread`` (min, max).
   With ``--workers 1 2`` each worker count is a pair of its own: both servers get the same count.
2. A compute-heavy model (ResNet-50, random weights, ``model_server.heavy_model``): our server with
   adaptive batching (8) against raw onnxruntime in this process, on the same 8 images in the same
   batches. Raw onnxruntime runs the 8-image batch ``--heavy-batches`` times; against the server, two
   groups of 8 clients in a separate process (client i of a group sends image i, one image per request,
   binary tensor extension; the groups take turns, see ``heavy``) send as many images, so the batcher
   makes the same 8-image batches. Both sides warm, turns interleaved like the pairs. Key
   ``heavy_model_ratio_vs_raw_ort`` (images per second, the median of the per-round ratios).

    python -m benchmarks.model_server_onnx [--seconds 5] [--rounds 5] [--workers 1] [--heavy-batches 12]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort

from benchmarks import _rounds
from benchmarks.router import wrk
from modelrollout.devcluster import binaries, process
from modelrollout.devcluster.modelservers import ModelServer, demo_models_dir

RESULTS = Path(__file__).parent / "results" / "model_server_onnx.json"
CONCURRENCIES = (1, 8, 32)
HEAVY_BATCH = 8
WARM_SECONDS = 2
JSON = {"Content-Type": "application/json"}
GOALS = {
    "throughput_ratio_vs_kserve": (">=", 3.0),
    "p99_ratio_vs_kserve": ("<=", 1.0),
    "heavy_model_ratio_vs_raw_ort": (">=", 0.9),
}
"""Each judged on the median over rounds; the KServe ones at the highest concurrency."""

LOAD_SCRIPT = """
import sys, time, threading, json, httpx, numpy as np
url, images_file, requests, stagger, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
images = np.load(images_file)
latencies, failures, answers = [], [], {}
groups = 2
start = threading.Barrier(groups * len(images) + 1)
def run(client):
    group, index = divmod(client, len(images))
    image = images[index : index + 1].tobytes()
    header = json.dumps({"inputs": [{"name": "input", "shape": [1, 3, 224, 224], "datatype": "FP32",
                                     "parameters": {"binary_data_size": len(image)}}]}).encode()
    headers = {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"}
    with httpx.Client(timeout=120) as client:
        start.wait()
        time.sleep(group * stagger)
        for _ in range(requests):
            begun = time.perf_counter()
            r = client.post(url, content=header + image, headers=headers)
            (latencies if r.status_code == 200 else failures).append(time.perf_counter() - begun)
        answers[index] = r.json()["outputs"][0]["data"] if r.status_code == 200 else None
threads = [threading.Thread(target=run, args=(c,)) for c in range(groups * len(images))]
[t.start() for t in threads]
start.wait()
begun = time.perf_counter()
[t.join() for t in threads]
elapsed = time.perf_counter() - begun
np.save(out, np.array([answers[i] for i in range(len(images))], dtype=np.float32))
p50, p99 = (1000 * float(np.percentile(latencies, q)) for q in (50, 99))
print(json.dumps({"images_per_s": len(latencies) / elapsed, "failures": len(failures), "p50_ms": p50, "p99_ms": p99}))
"""


def kserve_python() -> Path:
    venv = binaries.cache_dir().parent.parent / "kserve-venv"
    python = venv / "bin" / "python"
    if not python.exists() or subprocess.run([str(python), "-c", "import kserve"], capture_output=True).returncode:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "kserve", "onnxruntime"], check=True)
    return python


def kserve_version(python: Path) -> str:
    script = "import importlib.metadata as m; print(m.version('kserve'))"
    return subprocess.run([str(python), "-c", script], capture_output=True, text=True).stdout.strip()


@contextlib.contextmanager
def kserve_server(python: Path, model: Path, *, workers: int, body: str, workdir: Path) -> Iterator[str]:
    """KServe serving ``model`` as "digits"; yields its infer URL once it answers."""
    port = process.free_port()
    script = str(Path(__file__).parent / "_kserve_server.py")
    server = process.start(
        f"kserve-{workers}", [str(python), script, str(model), "digits", str(port), str(workers)], log_dir=workdir
    )
    url = f"http://127.0.0.1:{port}/v2/models/digits/infer"
    try:
        process.wait_until(
            lambda: httpx.post(url, content=body, timeout=2, headers=JSON).status_code == 200,
            timeout=120,
            what="kserve",
            alive=lambda: server.poll() is None,
        )
        yield url
    finally:
        process.stop(server.pid)
        server.poll()


def same_answers(urls: dict[str, str], body: str) -> None:
    """Both servers answer the request with the same outputs (names, shapes, datatypes, values)."""
    answers = {}
    for name, url in urls.items():
        response = httpx.post(url, content=body, headers=JSON, timeout=10)
        response.raise_for_status()
        answers[name] = {o["name"]: o for o in response.json()["outputs"]}
    ours, theirs = answers["ours"], answers["kserve"]
    if set(ours) != set(theirs):
        raise SystemExit(f"the servers answer different outputs: ours {sorted(ours)}, KServe {sorted(theirs)}")
    for name, output in ours.items():
        other = theirs[name]
        if (output["shape"], output["datatype"]) != (other["shape"], other["datatype"]) or not np.allclose(
            output["data"], other["data"], rtol=1e-5
        ):
            raise SystemExit(f"output {name!r} differs: ours {output}, KServe {other}")


def kserve_pair(python: Path, models: Path, *, workers: int, seconds: int, rounds: int) -> dict[str, Any]:
    """Our server and KServe, ``workers`` processes each, in interleaved rounds at every concurrency."""
    digit = np.load(models / "digits-stream.npz")["inputs"][0].tolist()
    body = json.dumps({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": digit}]})
    workdir = Path(tempfile.mkdtemp(prefix="bench-kserve-"))
    model = models / "digits-fp32.onnx"
    runs: list[dict[int, dict[str, dict[str, float]]]] = []
    with (
        kserve_server(python, model, workers=workers, body=body, workdir=workdir) as kserve_url,
        ModelServer(model, colour="blue", env={"MODELSERVER_WORKERS": str(workers)}) as ours,
    ):
        urls = {"ours": f"{ours.url}/v2/models/digits/infer", "kserve": kserve_url}
        same_answers(urls, body)
        for name in urls:  # warm: every worker process, connection pool and code path, before any timing
            for concurrency in CONCURRENCIES:
                wrk(urls[name], body=body, connections=concurrency, seconds=WARM_SECONDS, workdir=workdir)
        for index in range(rounds):
            measured: dict[int, dict[str, dict[str, float]]] = {c: {} for c in CONCURRENCIES}
            for concurrency in CONCURRENCIES:
                for name in _rounds.order(list(urls), index):
                    run = wrk(urls[name], body=body, connections=concurrency, seconds=seconds, workdir=workdir)
                    if run["non_2xx"]:
                        raise SystemExit(f"{name} answered {run['non_2xx']:.0f} non-2xx responses: {run}")
                    measured[concurrency][name] = run
            runs.append(measured)
            print(json.dumps({"workers": workers, "round": index, "runs": measured}), flush=True)
    by_concurrency = {}
    for concurrency in CONCURRENCIES:
        per_round = [r[concurrency] for r in runs]
        by_concurrency[str(concurrency)] = {
            "throughput_ratio": _rounds.spread([r["ours"]["rps"] / r["kserve"]["rps"] for r in per_round]),
            "p99_ratio": _rounds.spread([r["ours"]["p99_ms"] / r["kserve"]["p99_ms"] for r in per_round]),
            **{
                f"{name}_{figure}": _rounds.spread([r[name][figure] for r in per_round], 2)
                for name in ("ours", "kserve")
                for figure in ("rps", "p50_ms", "p99_ms")
            },
        }
    return {"workers": workers, "by_concurrency": by_concurrency, "rounds": runs}


def heavy_model_path() -> Path:
    from model_server import heavy_model

    path = binaries.cache_dir().parent.parent / "models" / "resnet50.onnx"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        heavy_model.main(["--out", str(path)])
    return path


def heavy(*, rounds: int, batches: int) -> dict[str, Any]:
    """Images per second through our server with adaptive batching and through raw onnxruntime, on the
    same batches of the same 8 images.

    Against the server, two groups of 8 clients (client i of a group sends image i, waiting for each
    answer before it sends again); the second group starts half a batch's time after the first. While the
    batcher runs one group's 8 images, the other group's 8 requests queue, so every model call is one
    group: the same 8 images raw onnxruntime runs, and the server keeps its model busy as raw onnxruntime
    does, as a loaded server would."""
    path = heavy_model_path()
    workdir = Path(tempfile.mkdtemp(prefix="bench-heavy-"))
    images = np.random.default_rng(0).standard_normal((HEAVY_BATCH, 3, 224, 224)).astype(np.float32)
    np.save(workdir / "images.npy", images)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"input": images})[0]
    env = {
        "MODELSERVER_MAX_BATCH_SIZE": str(HEAVY_BATCH),
        # a batch runs once its 8 images are in; the wait only covers a client that is late to send again
        "MODELSERVER_MAX_BATCH_WAIT_MS": "200",
        "MODELSERVER_MAX_BODY_BYTES": str(64 * 1024 * 1024),
        "MODELSERVER_REQUEST_TIMEOUT_SECONDS": "120",
    }

    def raw(count: int) -> float:
        begun = time.perf_counter()
        for _ in range(count):
            session.run(None, {"input": images})
        return count * HEAVY_BATCH / (time.perf_counter() - begun)

    def served(url: str, count: int) -> dict[str, float]:
        out = workdir / "answers.npy"
        per_client = str(max(1, count // 2))  # two groups: each sends half the batches
        command = [
            sys.executable,
            "-c",
            LOAD_SCRIPT,
            url,
            str(workdir / "images.npy"),
            per_client,
            str(stagger),
            str(out),
        ]
        load = subprocess.run(
            command,
            capture_output=True,
            text=True,
            check=True,
        )
        result: dict[str, float] = json.loads(load.stdout)
        if result["failures"] or not np.allclose(np.load(out), expected, rtol=1e-3, atol=1e-3):
            raise SystemExit(f"the server's answers differ from raw onnxruntime's or failed: {result}")
        return result

    runs: list[dict[str, Any]] = []
    with ModelServer(path, name="resnet50", env=env) as ours:
        url = f"{ours.url}/v2/models/resnet50/infer"
        stagger = 0.5 * HEAVY_BATCH / raw(2)
        served(url, 2)
        for index in range(rounds):
            measured: dict[str, Any] = {}
            for side in _rounds.order(["raw_ort", "ours"], index):
                measured[side] = raw(2 * max(1, batches // 2)) if side == "raw_ort" else served(url, batches)
            runs.append(measured)
            print(json.dumps({"heavy_round": index, **measured}), flush=True)
    ratios = [r["ours"]["images_per_s"] / r["raw_ort"] for r in runs]
    return {
        "heavy_model": "ResNet-50, random weights, FP32, 224x224",
        "batch_size": HEAVY_BATCH,
        "batches_per_side_per_round": 2 * max(1, batches // 2),
        "heavy_model_ratio_vs_raw_ort": _rounds.spread(ratios)["median"],
        "heavy_model_ratio_vs_raw_ort_spread": _rounds.spread(ratios),
        "raw_ort_images_per_s": _rounds.spread([r["raw_ort"] for r in runs], 2),
        "ours_images_per_s": _rounds.spread([r["ours"]["images_per_s"] for r in runs], 2),
        "ours_latency_p99_ms": _rounds.spread([r["ours"]["p99_ms"] for r in runs], 1),
        "heavy_rounds": runs,
    }


def goals_met(values: dict[str, float]) -> dict[str, bool]:
    return {
        key: (values[key] >= bound if sense == ">=" else values[key] <= bound) for key, (sense, bound) in GOALS.items()
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=5, help="seconds of wrk per server, concurrency and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, nargs="+", default=[1], help="a KServe pair per worker count")
    parser.add_argument("--heavy-batches", type=int, default=12, help="8-image batches per side and round (even)")
    args = parser.parse_args(argv if argv is not None else [])
    rounds = _rounds.check_rounds(args.rounds)
    models = demo_models_dir()
    python = kserve_python()
    pairs = {
        str(workers): kserve_pair(python, models, workers=workers, seconds=args.seconds, rounds=rounds)
        for workers in args.workers
    }
    heavy_result = heavy(rounds=rounds, batches=args.heavy_batches)
    top = str(CONCURRENCIES[-1])
    headline = pairs[str(args.workers[0])]["by_concurrency"][top]
    values = {
        "throughput_ratio_vs_kserve": headline["throughput_ratio"]["median"],
        "p99_ratio_vs_kserve": headline["p99_ratio"]["median"],
        "heavy_model_ratio_vs_raw_ort": heavy_result["heavy_model_ratio_vs_raw_ort"],
    }
    report = {
        "command": " ".join(["python -m benchmarks.model_server_onnx", *(argv or [])]).strip(),
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}, "
        f"onnxruntime {ort.__version__}, 2 cores shared by load generator and servers",
        "kserve_version": kserve_version(python),
        "rounds": rounds,
        "seconds_per_run": args.seconds,
        "concurrencies": list(CONCURRENCIES),
        "goals": {key: f"{sense} {bound} (median over rounds)" for key, (sense, bound) in GOALS.items()},
        "goals_met": goals_met(values),
        "headline_workers": args.workers[0],
        "throughput_ratio_vs_kserve": values["throughput_ratio_vs_kserve"],
        "throughput_ratio_vs_kserve_spread": headline["throughput_ratio"],
        "p99_ratio_vs_kserve": values["p99_ratio_vs_kserve"],
        "p99_ratio_vs_kserve_spread": headline["p99_ratio"],
        "kserve_pairs": {workers: {k: v for k, v in pair.items() if k != "rounds"} for workers, pair in pairs.items()},
        **{k: v for k, v in heavy_result.items() if k != "heavy_rounds"},
        "kserve_rounds": {workers: pair["rounds"] for workers, pair in pairs.items()},
        "heavy_rounds": heavy_result["heavy_rounds"],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k not in ("kserve_rounds", "heavy_rounds")}, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
