"""ONNX model server benchmarks, side by side in one run.

1. Against KServe's Python model server (PyPI ``kserve``, in a virtual environment of its own under the
   cache folder), both serving the digits FP32 model through onnxruntime; load from wrk (a separate
   process) at several concurrencies. Key ``throughput_ratio_vs_kserve`` at the highest concurrency.
2. A compute-heavy model (ResNet-50, random weights, ``model_server.heavy_model``) through our server
   with adaptive batching (8), driven by a separate load process sending one image per request with the
   binary tensor extension, against raw onnxruntime in-process at batch size 8.
   Key ``heavy_model_ratio_vs_raw_ort`` (images per second).

    python -m benchmarks.model_server_onnx [--seconds 8]
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort

from benchmarks.router import wrk
from modelrollout.devcluster import binaries, process
from modelrollout.devcluster.modelservers import ModelServer, demo_models_dir

RESULTS = Path(__file__).parent / "results" / "model_server_onnx.json"
CONCURRENCIES = (1, 8, 32)
HEAVY_BATCH = 8
JSON = {"Content-Type": "application/json"}
LOAD_SCRIPT = """
import sys, time, threading, json, httpx, numpy as np
url, seconds, clients = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
image = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32).tobytes()
header = json.dumps({"inputs": [{"name": "input", "shape": [1, 3, 224, 224], "datatype": "FP32",
                                 "parameters": {"binary_data_size": len(image)}}]}).encode()
latencies, failures = [], []
deadline = time.monotonic() + seconds
def run():
    with httpx.Client(timeout=60) as client:
        while time.monotonic() < deadline:
            begun = time.monotonic()
            r = client.post(url, content=header + image, headers={"Inference-Header-Content-Length": str(len(header)),
                                                                   "Content-Type": "application/octet-stream"})
            (latencies if r.status_code == 200 else failures).append(time.monotonic() - begun)
threads = [threading.Thread(target=run) for _ in range(clients)]
begun = time.monotonic()
[t.start() for t in threads]; [t.join() for t in threads]
elapsed = time.monotonic() - begun
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


def against_kserve(models: Path, seconds: int) -> dict[str, Any]:
    python = kserve_python()
    body = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [1, 64],
                    "datatype": "FP32",
                    "data": np.load(models / "digits-stream.npz")["inputs"][0].tolist(),
                }
            ]
        }
    )
    workdir = Path(tempfile.mkdtemp(prefix="bench-kserve-"))
    port = process.free_port()
    kserve = process.start(
        "kserve",
        [
            str(python),
            str(Path(__file__).parent / "_kserve_server.py"),
            str(models / "digits-fp32.onnx"),
            "digits",
            str(port),
        ],
        log_dir=workdir,
    )
    runs: dict[str, Any] = {}
    try:
        url = f"http://127.0.0.1:{port}/v2/models/digits/infer"
        process.wait_until(
            lambda: httpx.post(url, content=body, timeout=2, headers=JSON).status_code == 200,
            timeout=60,
            what="kserve",
            alive=lambda: kserve.poll() is None,
        )
        with ModelServer(models / "digits-fp32.onnx", colour="blue") as ours:
            for concurrency in CONCURRENCIES:
                runs[f"ours_c{concurrency}"] = wrk(
                    f"{ours.url}/v2/models/digits/infer",
                    body=body,
                    connections=concurrency,
                    seconds=seconds,
                    workdir=workdir,
                )
                runs[f"kserve_c{concurrency}"] = wrk(
                    url, body=body, connections=concurrency, seconds=seconds, workdir=workdir
                )
    finally:
        process.stop(kserve.pid)
        kserve.poll()
    top = CONCURRENCIES[-1]
    return {
        "kserve_version": kserve_version(python),
        "throughput_ratio_vs_kserve": round(runs[f"ours_c{top}"]["rps"] / runs[f"kserve_c{top}"]["rps"], 3),
        "p99_ms_at_top_concurrency": {
            "ours": runs[f"ours_c{top}"]["p99_ms"],
            "kserve": runs[f"kserve_c{top}"]["p99_ms"],
        },
        "ratio_by_concurrency": {
            c: round(runs[f"ours_c{c}"]["rps"] / runs[f"kserve_c{c}"]["rps"], 3) for c in CONCURRENCIES
        },
        "runs": runs,
    }


def heavy(seconds: int) -> dict[str, Any]:
    from model_server import heavy_model

    path = binaries.cache_dir().parent.parent / "models" / "resnet50.onnx"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        heavy_model.main(["--out", str(path)])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch = np.random.default_rng(0).standard_normal((HEAVY_BATCH, 3, 224, 224)).astype(np.float32)
    session.run(None, {"input": batch})
    images, begun = 0, time.monotonic()
    while time.monotonic() - begun < seconds:
        session.run(None, {"input": batch})
        images += HEAVY_BATCH
    raw = images / (time.monotonic() - begun)
    del session
    env = {
        "MODELSERVER_MAX_BATCH_SIZE": str(HEAVY_BATCH),
        "MODELSERVER_MAX_BATCH_WAIT_MS": "20",
        "MODELSERVER_MAX_BODY_BYTES": str(64 * 1024 * 1024),
        "MODELSERVER_REQUEST_TIMEOUT_SECONDS": "60",
    }
    with ModelServer(path, name="resnet50", env=env) as ours:
        url = f"{ours.url}/v2/models/resnet50/infer"
        warm = subprocess.run(
            [sys.executable, "-c", LOAD_SCRIPT, url, "3", str(HEAVY_BATCH)], capture_output=True, text=True, check=True
        )
        assert warm.stdout
        load = subprocess.run(
            [sys.executable, "-c", LOAD_SCRIPT, url, str(seconds), str(2 * HEAVY_BATCH)],
            capture_output=True,
            text=True,
            check=True,
        )
    served = json.loads(load.stdout)
    return {
        "heavy_model": "ResNet-50, random weights, FP32, 224x224",
        "batch_size": HEAVY_BATCH,
        "raw_ort_images_per_s": round(raw, 2),
        "ours": served,
        "heavy_model_ratio_vs_raw_ort": round(served["images_per_s"] / raw, 3),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=8)
    args = parser.parse_args(argv if argv is not None else [])
    models = demo_models_dir()
    kserve = against_kserve(models, args.seconds)
    heavy_result = heavy(max(args.seconds, 15))
    report = {
        "command": "python -m benchmarks.model_server_onnx " + " ".join(argv or []),
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}, "
        f"onnxruntime {ort.__version__}, 2 cores shared by load generator and server",
        "goals": {"throughput_ratio_vs_kserve": ">= 2.0 at a p99 no worse", "heavy_model_ratio_vs_raw_ort": ">= 0.9"},
        **{k: v for k, v in kserve.items() if k != "runs"},
        **heavy_result,
        "kserve_runs": kserve["runs"],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k not in ("kserve_runs",)}, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
